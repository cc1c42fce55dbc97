"""The HTTP API (protocol.md sections 3-5) on aiohttp: routes, auth, problem+json errors,
idempotency, audit log, CORS, metrics, OpenAPI and the demo page. It only translates HTTP
to store calls and core values."""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ValidationError

from ..auth import ANONYMOUS, READ, VALIDATE, WRITE, Authenticator, AuthError, Principal
from ..bearer import bearer_token
from ..clock import now_ms
from ..core.book import Changed, Created, Rejected
from ..core.errors import InvalidInput, StoreError
from ..core.model import ID_RE, Market, MarketUpdate
from ..services.risk import RiskQueue
from ..services.validation import validate_slip
from ..settings import Settings
from ..store import OutOfOrder, Precondition, Store, StoreOutcome, outcome_name
from ..webkit import Problem
from . import risk as risk_routes
from . import schemas
from .body import parse_json
from .etag import etag
from .idempotency import idempotent
from .listener import SERVER
from .openapi import ROUTES
from .validation_metrics import VALIDATION_METRICS

STATIC_DIR = Path(__file__).parent / "static"
_STATIC_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,100}$")  # no paths, no dot-files
audit = structlog.get_logger("oddsfeed.audit")
log = structlog.get_logger("oddsfeed.api")

REQUESTS = Counter("oddsfeed_http_requests_total", "HTTP requests", ["route", "method", "status"])
LATENCY = Histogram("oddsfeed_http_request_seconds", "HTTP request latency", ["route"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 65))

# Label children looked up once: .labels() costs more than the increment (profiled).
@functools.cache
def _requests(route: str, method: str, status: int) -> Any:
    return REQUESTS.labels(route, method, str(status))


@functools.cache
def _latency(route: str) -> Any:
    return LATENCY.labels(route)


K_STORE: web.AppKey[Store] = web.AppKey("store", Store)
K_SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
K_AUTH: web.AppKey[Authenticator] = web.AppKey("auth", Authenticator)
K_READY: web.AppKey[Callable[[], bool]] = web.AppKey("ready", Callable)  # type: ignore[arg-type]
K_DEMO: web.AppKey[str] = web.AppKey("demo_token", str)
K_WS_PORT: web.AppKey[int] = web.AppKey("ws_port", int)
K_VALIDATING: web.AppKey[list[int]] = web.AppKey("validating", list)  # [in progress]


def _bad_body(exc: ValidationError, prefix: str = "") -> Problem:
    errors = []
    for e in exc.errors():
        path = ".".join(str(p) for p in e["loc"])
        msg = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        errors.append({"path": f"{prefix}{path}" if path else prefix.rstrip("."), "message": msg})
    return Problem(400, "invalid request body", "the request body is invalid", errors=errors)


def _invalid(exc: InvalidInput, prefix: str = "") -> Problem:
    path = f"{prefix}{exc.path}" if exc.path else prefix.rstrip(".")
    return Problem(400, "invalid request body", str(exc),
                   errors=[{"path": path, "message": exc.message}])


# ---- middlewares ---------------------------------------------------------------------------

async def hide_server_banner(request: web.Request, response: web.StreamResponse) -> None:
    """An ``on_response_prepare`` hook: the Server header names no library or version."""
    response.headers["Server"] = SERVER


async def _idempotent(request: web.Request, principal: Principal, body: bytes,
                      run: Callable[[], Awaitable[tuple[int, Any]]]) -> web.Response:
    return await idempotent(request, principal, body, run, store=request.app[K_STORE],
                            ttl_s=request.app[K_SETTINGS].api.idempotency_ttl_s)


def _route_name(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


@web.middleware
async def errors_mw(request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
    started = time.perf_counter()
    route = _route_name(request)
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


def _cors_headers(request: web.Request) -> dict[str, str]:
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
    headers = _cors_headers(request)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return web.Response(status=204, headers=headers)
    resp = await handler(request)
    resp.headers.update(headers)
    return resp


def principal_of(request: web.Request, scope: str | None) -> Principal:
    """The caller, checked for ``scope``; raises a 401 or 403 problem."""
    auth = request.app[K_AUTH]
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


async def _json_body(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise Problem(415, "unsupported media type", "send Content-Type: application/json")
    try:
        async with asyncio.timeout(request.app[K_SETTINGS].api.body_timeout_s):
            raw = await request.read()
    except TimeoutError:
        raise Problem(408, "request timeout", "the request body did not arrive in time") from None
    try:
        return parse_json(raw)
    except InvalidInput as exc:
        errors = [{"path": exc.path, "message": exc.message}] if exc.path else None
        raise Problem(400, "invalid json", f"the request body is not valid json: {exc}",
                      errors=errors) from None


def _model(model: type[BaseModel], data: Any, prefix: str = "") -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _bad_body(exc, prefix) from None


def _market_id(request: web.Request) -> str:
    mid = request.match_info["id"]
    if not ID_RE.match(mid):
        raise Problem(400, "invalid market id", "market ids are 1-128 chars of A-Za-z0-9._:-",
                      errors=[{"path": "id", "message": "invalid id"}])
    return mid


def _market_response(market: Market, status: int = 200) -> web.Response:
    return web.json_response(market.to_wire(), status=status,
                             headers={"ETag": etag(market.epoch, market.version)})


# ---- reads -----------------------------------------------------------------------------------

async def list_markets(request: web.Request) -> web.Response:
    principal_of(request, READ)
    q = request.query
    unknown = set(q) - {"event", "sport", "status", "limit", "cursor"}
    if unknown:
        raise Problem(400, "invalid query", "unknown query parameter",
                      errors=[{"path": k, "message": "unknown query parameter"} for k in unknown])
    status = q.get("status")
    if status is not None and status not in ("open", "suspended", "closed", "settled"):
        raise Problem(400, "invalid query", "bad status",
                      errors=[{"path": "status", "message": "unknown status"}])
    max_page = request.app[K_SETTINGS].api.max_page_size
    raw_limit = q.get("limit", str(max_page))
    if not re.fullmatch(r"[0-9]{1,9}", raw_limit, re.ASCII) or not 1 <= int(raw_limit) <= max_page:
        raise Problem(400, "invalid query", f"limit must be 1-{max_page}",
                      errors=[{"path": "limit", "message": f"an integer 1-{max_page}"}])
    cursor = q.get("cursor") or None
    if cursor is not None and not ID_RE.match(cursor):
        raise Problem(400, "invalid query", "cursor is not a value next_cursor gave",
                      errors=[{"path": "cursor", "message": "invalid cursor"}])
    limit = int(raw_limit)
    markets = await request.app[K_STORE].list_markets(
        event=q.get("event") or None, sport=q.get("sport") or None, status=status,
        after=cursor, limit=limit + 1)
    body: dict[str, Any] = {"markets": [m.to_wire(with_selections=False)
                                        for m in markets[:limit]]}
    if len(markets) > limit:
        body["next_cursor"] = markets[limit - 1].id  # the next page starts after it
    return web.json_response(body)


async def get_market(request: web.Request) -> web.Response:
    principal_of(request, READ)
    market = await request.app[K_STORE].get(_market_id(request))
    if market is None:
        raise Problem(404, "market not found", f"market {request.match_info['id']} does not exist")
    return _market_response(market)


# ---- writes ----------------------------------------------------------------------------------

def _selections(raw: Mapping[str, BaseModel] | None) -> dict[str, dict[str, Any]]:
    return {sid: schemas.given(sel) for sid, sel in (raw or {}).items()}


def _update_from_patch(mid: str, body: schemas.MarketPatch, source: str, now_ms: int,
                       prefix: str = "") -> MarketUpdate:
    # An explicit null is passed on: the model refuses it with the field's path.
    fields = schemas.given(body, ("selections", "ts", "market"))
    try:
        return MarketUpdate(market=mid, fields=fields, selections=_selections(body.selections),
                            ts=body.ts if body.ts is not None else now_ms, source=source)
    except InvalidInput as exc:
        raise _invalid(exc, prefix) from None


async def _apply(request: web.Request, update: MarketUpdate, principal: Principal, *,
                 expect: tuple[str, int] | None = None, created_status: int = 201
                 ) -> tuple[int, dict[str, Any]]:
    outcome = await request.app[K_STORE].apply(update, expect=expect)
    return _result(update, outcome, principal, created_status)


def _result(update: MarketUpdate, outcome: StoreOutcome, principal: Principal,
            created_status: int = 201) -> tuple[int, dict[str, Any]]:
    """The HTTP status and market of a store outcome (audited), or a Problem."""
    if isinstance(outcome, Precondition):
        raise Problem(412, "precondition failed", "the market moved since If-Match",
                      current=outcome.current.to_wire() if outcome.current else None)
    if isinstance(outcome, Rejected):
        status = {"unknown_market": 404, "settled": 409, "conflict": 409}.get(outcome.reason, 400)
        errors = [{"path": outcome.path, "message": outcome.message}] if status == 400 else None
        raise Problem(status, outcome.reason.replace("_", " "), outcome.message, errors=errors)
    if isinstance(outcome, OutOfOrder):  # desks send no seq; kept for completeness
        raise Problem(409, "out of order", "an update from this source is newer")
    market = outcome.market
    changed: dict[str, Any] | None = None
    old_version: int | None = market.version  # a no-op keeps it
    if isinstance(outcome, Created):
        old_version = None
    elif isinstance(outcome, Changed):
        old_version = outcome.delta.base
        changed = {k: v for k, v in outcome.delta.to_wire().items()
                   if k not in ("op", "m", "e", "v", "base", "ts")}
    audit.info("market.write", who=principal.sub, source=update.source, market=market.id,
               epoch=market.epoch, old_version=old_version, new_version=market.version,
               outcome=outcome_name(outcome), changed=changed)
    status = created_status if isinstance(outcome, Created) else 200
    return status, market.to_wire()


_IF_MATCH = re.compile(r'^(?:W/)?"?([^"]+):([0-9]{1,16})"?$', re.ASCII)


def _if_match(request: web.Request) -> tuple[str, int] | None:
    """The (epoch, version) of an ``If-Match`` header, None without one; a 400 problem when
    it is not ``"<epoch>:<version>"`` with an ASCII version of at most 2^53."""
    raw = request.headers.get("If-Match")
    if raw is None:
        return None
    found = _IF_MATCH.match(raw.strip())
    if found is None or int(found[2]) > schemas.MAX_INT:
        raise Problem(400, "invalid If-Match", 'use If-Match: "<epoch>:<version>"',
                      errors=[{"path": "If-Match", "message": "malformed"}])
    return found[1], int(found[2])


async def _write_market(request: web.Request, principal: Principal,
                        update: MarketUpdate) -> web.Response:
    """A desk's PUT or PATCH: applied under its If-Match, once per Idempotency-Key."""
    expect = _if_match(request)
    return await _idempotent(request, principal, await request.read(),
                             lambda: _apply(request, update, principal, expect=expect))


async def put_market(request: web.Request) -> web.Response:
    principal = principal_of(request, WRITE)
    mid = _market_id(request)
    data = await _json_body(request)
    body = _model(schemas.MarketPut, data)
    fields = schemas.given(body, ("selections", "ts"))
    now = now_ms()
    try:
        update = MarketUpdate(market=mid, fields=fields, selections=_selections(body.selections),
                              replace=True, create=True, ts=body.ts if body.ts is not None else now,
                              source=f"desk:{principal.sub}")
    except InvalidInput as exc:
        raise _invalid(exc) from None
    return await _write_market(request, principal, update)


async def patch_market(request: web.Request) -> web.Response:
    principal = principal_of(request, WRITE)
    mid = _market_id(request)
    data = await _json_body(request)
    body = _model(schemas.MarketPatch, data)
    update = _update_from_patch(mid, body, f"desk:{principal.sub}", now_ms())
    return await _write_market(request, principal, update)


async def delete_market(request: web.Request) -> web.Response:
    principal = principal_of(request, WRITE)
    mid = _market_id(request)
    expect = _if_match(request)

    async def run() -> tuple[int, Any]:
        outcome = await request.app[K_STORE].delete(mid, expect=expect)
        if isinstance(outcome, Precondition):
            raise Problem(412, "precondition failed", "the market moved since If-Match",
                          current=outcome.current.to_wire() if outcome.current else None)
        if not outcome:
            raise Problem(404, "market not found", f"market {mid} does not exist")
        audit.info("market.delete", who=principal.sub, market=mid)
        return 204, None

    return await _idempotent(request, principal, b"", run)


async def post_odds(request: web.Request) -> web.Response:
    principal = principal_of(request, WRITE)
    data = await _json_body(request)
    batch = _model(schemas.OddsBatch, data)
    now = now_ms()

    async def run() -> tuple[int, Any]:
        results: list[dict[str, Any]] = []
        valid: list[tuple[dict[str, Any], MarketUpdate]] = []
        for i, raw in enumerate(batch.updates):
            # Echo the item's market only when it is a string: the result's schema says
            # `market: string | null`, whatever a bad item carried.
            mid = raw.get("market") if isinstance(raw, dict) else None
            entry: dict[str, Any] = {"market": mid if isinstance(mid, str) else None,
                                     "ok": False}
            results.append(entry)
            try:
                item = _model(schemas.OddsItem, raw, f"updates.{i}.")
                if not ID_RE.match(item.market):
                    raise Problem(400, "invalid market id", "invalid market id",
                                  errors=[{"path": f"updates.{i}.market", "message": "invalid id"}])
                valid.append((entry, _update_from_patch(
                    item.market, item, f"desk:{principal.sub}", now, f"updates.{i}.")))
            except Problem as p:
                entry["error"] = p.body
        # every valid item in one pipelined round trip, in the batch's order
        outcomes = await request.app[K_STORE].apply_many([u for _, u in valid])
        for (entry, update), outcome in zip(valid, outcomes):
            try:
                _, market = _result(update, outcome, principal)
                entry.update(ok=True, version=market["version"])
            except Problem as p:
                entry["error"] = p.body
        return 200, {"results": results}

    return await _idempotent(request, principal, await request.read(), run)


# ---- bet slips ------------------------------------------------------------------------------

async def validate_bets(request: web.Request) -> web.Response:
    principal = principal_of(request, VALIDATE)
    slip = _model(schemas.SlipIn, await _json_body(request))
    legs = tuple(leg.leg() for leg in slip.legs)
    # An in-play slip holds its request for the bet delay: bound how many run at once.
    validating = request.app[K_VALIDATING]
    limit = request.app[K_SETTINGS].api.max_validations
    if validating[0] >= limit:
        raise Problem(503, "too many validations",
                      f"{limit} bet-slip validations are in progress; retry", retry_after=1)
    validating[0] += 1
    try:
        body = await validate_slip(request.app[K_STORE], legs, slip.accept,
                                   metrics=VALIDATION_METRICS)
        risk_routes.offer(request, principal, legs, body)  # queued, off the answer's path
        return web.json_response(body)
    finally:
        validating[0] -= 1


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
    "validate_bets": validate_bets, "healthz": healthz, "readyz": readyz,
    "demo_token": demo_token, "index": index, "static": static, **risk_routes.HANDLERS,
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
    for route in ROUTES:
        if route.admin or (route.handler == "demo_token" and not demo_token):
            continue  # admin routes: build_admin_app; no demo: 404 like any unknown path
        app.router.add_route(route.method, route.path, HANDLERS[route.handler])
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
