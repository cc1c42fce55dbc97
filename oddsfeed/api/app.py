"""The HTTP API (protocol.md sections 3-5) on aiohttp: builds the app from the route table,
and holds the bet-slip, health and demo-page routes. It only translates HTTP to store calls
and core values; the market routes are in ``markets``, what every route shares (auth,
problem+json errors, CORS, metrics, body parsing) in ``plumbing``."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from ..auth import VALIDATE, Authenticator
from ..clock import now_ms
from ..services.risk import RiskQueue
from ..services.validation import validate_slip
from ..settings import Settings
from ..store import Store
from ..tally import flush_all
from ..webkit import Problem
from . import console, desk, locks
from . import risk as risk_routes
from .jsonout import json_answer
from .markets import delete_market, get_market, list_markets, patch_market, post_odds, put_market
from .openapi import ROUTES
from .plumbing import (
    K_AUTH,
    K_DEMO,
    K_READY,
    K_SETTINGS,
    K_STORE,
    K_VALIDATING,
    K_WS_PORT,
    LATER,
    cors_mw,
    errors_mw,
    hide_server_banner,
    json_body,
    principal_by,
    principal_of,
    whole_json_body,
)
from .slip import slip_of
from .validation_metrics import VALIDATION_METRICS

STATIC_DIR = Path(__file__).parent / "static"
_STATIC_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,100}$")  # no paths, no dot-files

# ---- bet slips ------------------------------------------------------------------------------

def validation_route(store: Store, settings: Settings, auth: Authenticator,
                     validating: list[int]) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The ``POST /v1/bets/validate`` handler of one app, its store, settings and
    Authenticator bound once (no app lookups per request); ``validating`` counts the
    validations in progress."""
    limit = settings.api.max_validations

    async def validate_bets(request: web.Request) -> web.Response:
        principal = principal_by(auth, request, VALIDATE)
        data = whole_json_body(request)
        if data is LATER:
            data = await json_body(request)
        legs, accept = slip_of(data)
        # An in-play slip holds its request for the bet delay: bound how many run at once.
        if validating[0] >= limit:
            raise Problem(503, "too many validations",
                          f"{limit} bet-slip validations are in progress; retry",
                          retry_after=1)
        validating[0] += 1
        arrived = now_ms()
        try:
            body = await validate_slip(store, legs, accept, metrics=VALIDATION_METRICS)
            risk_routes.offer(request, principal, legs, body, arrived)  # queued, off the path
            return json_answer(body)
        finally:
            validating[0] -= 1

    return validate_bets


# ---- operations ---------------------------------------------------------------------------

async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    ok = await request.app[K_STORE].ping() and request.app[K_READY]()
    return web.json_response({"status": "ready" if ok else "unavailable"},
                             status=200 if ok else 503)


async def demo_token(request: web.Request) -> web.Response:
    # Registered only when build_app got a demo token (`oddsfeed run` in demo mode).
    return web.json_response({"token": request.app[K_DEMO], "ws_port": request.app.get(K_WS_PORT)})


async def index(request: web.Request) -> web.StreamResponse:
    page = STATIC_DIR / "index.html"
    if not page.is_file():
        return web.Response(text="oddsfeed: see /openapi.json\n")
    return web.FileResponse(page)


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = STATIC_DIR / name
    if not _STATIC_NAME.match(name) or not path.is_file():
        raise Problem(404, "not found", f"no static file {name[:60]}")
    return web.FileResponse(path)


HANDLERS: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {
    "list_markets": list_markets, "get_market": get_market, "put_market": put_market,
    "patch_market": patch_market, "delete_market": delete_market, "post_odds": post_odds,
    "healthz": healthz, "readyz": readyz,
    "demo_token": demo_token, "index": index, "static": static,
    **desk.HANDLERS, **locks.HANDLERS, **risk_routes.HANDLERS, **console.HANDLERS,
}


def build_app(settings: Settings, store: Store, *,
              readiness: Callable[[], bool] | None = None,
              auth: Authenticator | None = None,
              demo_token: str | None = None, ws_port: int | None = None,
              risk: RiskQueue | None = None) -> web.Application:
    """The aiohttp application of the HTTP API; the caller runs it (``web.AppRunner``).

    ``readiness`` is an extra condition for /readyz besides
    the store answering a ping, e.g. the fan-out bus being connected. ``auth`` shares one
    Authenticator with the WebSocket tier (default: one built from ``settings.auth``);
    ``demo_token`` and ``ws_port`` feed the demo page under ``oddsfeed run``; ``risk`` is
    the process's risk recorder (default: one of the app's own when ``settings.risk`` is on).
    """
    app = web.Application(client_max_size=settings.api.max_body_bytes,
                          middlewares=[cors_mw, errors_mw])
    app.on_response_prepare.append(hide_server_banner)

    async def flush_tallies(app: web.Application) -> None:
        flush_all()  # the last second's request counts reach the metrics before exit

    app.on_cleanup.append(flush_tallies)
    app[K_VALIDATING] = [0]
    app[K_STORE] = store
    app[K_SETTINGS] = settings
    app[K_AUTH] = auth or Authenticator(settings.auth)
    app[K_READY] = readiness or (lambda: True)
    if demo_token:
        app[K_DEMO] = demo_token
    if ws_port:
        app[K_WS_PORT] = ws_port
    risk_routes.install(app, settings.risk, store, principal_of, queue=risk)
    handlers = {**HANDLERS, "validate_bets": validation_route(
        store, settings, app[K_AUTH], app[K_VALIDATING])}
    for route in ROUTES:
        if route.admin or (route.handler == "demo_token" and not demo_token):
            continue  # admin routes: build_admin_app; no demo: 404 like any unknown path
        app.router.add_route(route.method, route.path, handlers[route.handler])
    return app


def build_unready_app() -> web.Application:
    """The HTTP app of a worker still waiting for its store: /healthz 200, /readyz 503 and
    every other path 503 with Retry-After, so load balancers and clients know to wait."""

    async def unready(request: web.Request) -> web.Response:
        if request.path == "/healthz":
            return web.json_response({"status": "ok"})
        if request.path == "/readyz":
            return web.json_response({"status": "unavailable"}, status=503)
        return Problem(503, "store unavailable", "the node is waiting for its store; retry",
                       retry_after=1).response()

    app = web.Application()
    app.on_response_prepare.append(hide_server_banner)
    app.router.add_route("*", "/{tail:.*}", unready)
    return app
