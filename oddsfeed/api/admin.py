"""The admin HTTP app: /metrics and /openapi.json, served on their own bind (loopback by
default), never on the client-facing port."""

from __future__ import annotations

from aiohttp import web

from ..webkit import metrics
from .openapi import ROUTES, openapi_document
from .plumbing import errors_mw, hide_server_banner

__all__ = ["add_admin_routes", "build_admin_app"]


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
