"""What every route of the HTTP API shares: app keys, request metrics, the middlewares,
the caller's principal and body parsing."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ValidationError

from ..auth import ANONYMOUS, READ, Authenticator, AuthError, Principal
from ..bearer import bearer_token
from ..core.errors import InvalidInput, StoreError
from ..settings import Settings
from ..store import Store
from ..tally import CounterTally, HistogramTally
from ..webkit import Problem
from .body import parse_json
from .idempotency import idempotent
from .listener import SERVER

log = structlog.get_logger("oddsfeed.api")

REQUESTS = Counter("oddsfeed_http_requests_total", "HTTP requests", ["route", "method", "status"])
LATENCY = Histogram("oddsfeed_http_request_seconds", "HTTP request latency", ["route"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 65))

# Per request: an in-process tally of each label child, flushed into it about once a second
# and before every scrape (oddsfeed.tally); the children are looked up once.
@functools.cache
def _requests(route: str, method: str, status: int) -> CounterTally:
    return CounterTally(REQUESTS.labels(route, method, str(status)))


@functools.cache
def _latency(route: str) -> HistogramTally:
    return HistogramTally(LATENCY.labels(route))


K_STORE: web.AppKey[Store] = web.AppKey("store", Store)
K_SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
K_AUTH: web.AppKey[Authenticator] = web.AppKey("auth", Authenticator)
K_READY: web.AppKey[Callable[[], bool]] = web.AppKey("ready", Callable)  # type: ignore[arg-type]
K_DEMO: web.AppKey[str] = web.AppKey("demo_token", str)
K_WS_PORT: web.AppKey[int] = web.AppKey("ws_port", int)
K_VALIDATING: web.AppKey[list[int]] = web.AppKey("validating", list)  # [in progress]


def bad_body(exc: ValidationError, prefix: str = "") -> Problem:
    errors = []
    for e in exc.errors():
        path = ".".join(str(p) for p in e["loc"])
        msg = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        errors.append({"path": f"{prefix}{path}" if path else prefix.rstrip("."), "message": msg})
    return Problem(400, "invalid request body", "the request body is invalid", errors=errors)


def invalid(exc: InvalidInput, prefix: str = "") -> Problem:
    path = f"{prefix}{exc.path}" if exc.path else prefix.rstrip(".")
    return Problem(400, "invalid request body", str(exc),
                   errors=[{"path": path, "message": exc.message}])


# ---- middlewares ---------------------------------------------------------------------------

async def hide_server_banner(request: web.Request, response: web.StreamResponse) -> None:
    """An ``on_response_prepare`` hook: the Server header names no library or version."""
    response.headers["Server"] = SERVER


async def idempotent_response(request: web.Request, principal: Principal, body: bytes,
                      run: Callable[[], Awaitable[tuple[int, Any]]]) -> web.Response:
    return await idempotent(request, principal, body, run, store=request.app[K_STORE],
                            ttl_s=request.app[K_SETTINGS].api.idempotency_ttl_s)


def route_name(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


@web.middleware
async def errors_mw(request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
    started = time.perf_counter()
    route = route_name(request)
    try:
        resp = await handler(request)
    except Problem as p:
        resp = p.response()
    except web.HTTPRequestEntityTooLarge:
        resp = Problem(413, "request body too large",
                       f"at most {request.client_max_size} bytes").response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        resp = Problem(exc.status, exc.reason, exc.text or exc.reason).response()
        for h in ("Allow",):
            if h in exc.headers:
                resp.headers[h] = exc.headers[h]
    except StoreError as exc:
        log.warning("store unavailable", error=str(exc))
        resp = Problem(503, "store unavailable", "the store is unavailable; retry").response()
    except Exception:
        log.exception("request failed", route=route)
        resp = Problem(500, "internal error", "internal error").response()
    _requests(route, request.method, resp.status).inc()
    _latency(route).observe(time.perf_counter() - started)
    return resp


def cors_headers(request: web.Request) -> dict[str, str]:
    origin = request.headers.get("Origin")
    allowed = request.app[K_SETTINGS].api.cors_origins
    if not origin or not allowed or ("*" not in allowed and origin not in allowed):
        return {}
    return {
        "Access-Control-Allow-Origin": "*" if "*" in allowed else origin,
        "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match, Idempotency-Key",
        "Access-Control-Allow-Methods": "GET, PUT, PATCH, DELETE, POST, OPTIONS",
        "Access-Control-Expose-Headers": "ETag",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }


@web.middleware
async def cors_mw(request: web.Request,
                  handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                  ) -> web.StreamResponse:
    if request.method != "OPTIONS" and "Origin" not in request.headers:
        return await handler(request)  # no Origin: no CORS header to add (cors_headers)
    headers = cors_headers(request)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return web.Response(status=204, headers=headers)
    resp = await handler(request)
    resp.headers.update(headers)
    return resp


def principal_of(request: web.Request, scope: str | None) -> Principal:
    """The caller, checked for ``scope``; raises a 401 or 403 problem."""
    return principal_by(request.app[K_AUTH], request, scope)


def principal_by(auth: Authenticator, request: web.Request, scope: str | None) -> Principal:
    """:func:`principal_of` with the app's Authenticator already at hand."""
    header = request.headers.get("Authorization", "")
    principal: Principal | None = None
    if header:
        token = bearer_token(header)
        if token is None:
            raise Problem(401, "unauthorized", "use Authorization: Bearer <token>")
        try:
            principal = auth.verify(token)
        except AuthError as exc:
            raise Problem(401, "unauthorized", str(exc)) from None
    elif auth.anonymous_read and scope in (READ, None):
        principal = ANONYMOUS  # section 5: anonymous reading only; a missing token is 401
    if scope is None:
        return principal or ANONYMOUS
    if principal is None:
        raise Problem(401, "unauthorized", "a bearer token is required")
    if not principal.can(scope):
        raise Problem(403, "forbidden", f"the token lacks scope {scope}")
    return principal


def _json_type(request: web.Request) -> None:
    # The header as every client sends it needs no parse (aiohttp's parses each request's).
    if (request.headers.get("Content-Type") != "application/json"
            and request.content_type != "application/json"):
        raise Problem(415, "unsupported media type", "send Content-Type: application/json")


LATER: Any = object()  # what whole_json_body answers for a body still on its way


def whole_json_body(request: web.Request) -> Any:
    """The parsed body of a route that reads its body nowhere else (no ``request.read()``
    before or after it), when it arrived whole with the headers: taken from the payload
    stream's buffer at once (no read loop, no coroutine), bounded by ``client_max_size`` and
    refused with the same 413 as ``request.read()``. Any other body: ``LATER``, and the
    caller awaits :func:`json_body`."""
    content = request.content
    if not content.is_eof():
        return LATER
    _json_type(request)
    raw = content.read_nowait()
    limit = request.client_max_size
    if limit and len(raw) > limit:
        raise web.HTTPRequestEntityTooLarge(limit)
    return _parsed(raw)


async def json_body(request: web.Request) -> Any:
    _json_type(request)
    if request.content.is_eof():
        raw = await request.read()  # all of it arrived with the headers: nothing to wait for
    else:
        try:
            async with asyncio.timeout(request.app[K_SETTINGS].api.body_timeout_s):
                raw = await request.read()
        except TimeoutError:
            raise Problem(408, "request timeout",
                          "the request body did not arrive in time") from None
    return _parsed(raw)


def _parsed(raw: bytes) -> Any:
    try:
        return parse_json(raw)
    except InvalidInput as exc:
        errors = [{"path": exc.path, "message": exc.message}] if exc.path else None
        raise Problem(400, "invalid json", f"the request body is not valid json: {exc}",
                      errors=errors) from None


def model_of(model: type[BaseModel], data: Any, prefix: str = "") -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise bad_body(exc, prefix) from None


