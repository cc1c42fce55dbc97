"""The admin HTTP app: /metrics and /openapi.json, served on their own bind (loopback by
default), never on the client-facing port."""

from __future__ import annotations

import os

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client import multiprocess as prom_multiprocess

from .app import errors_mw, hide_server_banner
from .openapi import ROUTES, openapi_document

__all__ = ["add_admin_routes", "build_admin_app"]


async def metrics(request: web.Request) -> web.Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        data = generate_latest(registry)
    else:
        data = generate_latest(REGISTRY)
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


HANDLERS = {"metrics": metrics, "openapi": openapi}


def add_admin_routes(app: web.Application) -> None:
    """Register /metrics and /openapi.json on ``app`` (before it runs)."""
    for route in ROUTES:
        if route.admin:
            app.router.add_route(route.method, route.path, HANDLERS[route.handler])


def build_admin_app() -> web.Application:
    """The aiohttp application of the admin port; the caller runs it (``web.AppRunner``) on
    ``server.admin_host``:``server.admin_port``."""
    app = web.Application(middlewares=[errors_mw])
    app.on_response_prepare.append(hide_server_banner)
    add_admin_routes(app)
    return app
