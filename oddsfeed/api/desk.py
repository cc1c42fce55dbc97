"""The desk's routes (protocol.md, extension section 6): event bet stop and bet start, a
market's price history and an event's audit trail.

The app module registers the handlers of :data:`HANDLERS` by their route names.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from pydantic import ValidationError

from ..auth import READ, WRITE
from ..clock import now_ms
from ..core.model import ID_RE
from ..store import event_audit, market_history, set_bet_stop
from ..webkit import Problem
from . import schemas
from .plumbing import K_SETTINGS, K_STORE, bad_body, idempotent_response, json_body, principal_of

audit = structlog.get_logger("oddsfeed.audit")
DEFAULT_LIMIT = 100  # history and audit entries per page when no limit is given
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _switch(request: web.Request, stopped: bool) -> web.Response:
    principal = principal_of(request, WRITE)
    event = _path_id(request, "event")
    ts = now_ms()
    if request.body_exists:
        try:
            body = schemas.BetStopIn.model_validate(await json_body(request))
        except ValidationError as exc:
            raise bad_body(exc) from None
        if body.ts is not None:
            ts = body.ts

    async def run() -> tuple[int, Any]:
        result = await set_bet_stop(request.app[K_STORE], event, stopped=stopped,
                                    source=f"desk:{principal.sub}", ts=ts)
        audit.info("event.bet_stop" if stopped else "event.bet_start", who=principal.sub,
                   event_id=event, markets=len(result.markets))
        return 200, {"event": event,
                     "markets": [{"market": m, "version": v} for m, v in result.markets],
                     "status": "stopped" if stopped else "started"}

    return await idempotent_response(request, principal, await request.read(), run)

async def bet_stop(request: web.Request) -> web.Response:
    return await _switch(request, True)

async def bet_start(request: web.Request) -> web.Response:
    return await _switch(request, False)

def _query(request: web.Request, allowed: tuple[str, ...]) -> dict[str, int]:
    """The integer query parameters: ``limit`` 1..api.max_page_size (default 100),
    ``before`` a version >= 1; anything else is 400."""
    q = request.query
    unknown = sorted(set(q) - set(allowed))
    if unknown:
        raise Problem(400, "invalid query", "unknown query parameter",
                      errors=[{"path": k, "message": "unknown query parameter"}
                              for k in unknown])
    top = request.app[K_SETTINGS].api.max_page_size
    out = {"limit": min(DEFAULT_LIMIT, top)}
    bounds = {"limit": (1, top), "before": (1, schemas.MAX_INT)}
    for name in allowed:
        raw = q.get(name)
        if raw is None:
            continue
        lo, hi = bounds[name]
        if not re.fullmatch(r"[0-9]{1,16}", raw, re.ASCII) or not lo <= int(raw) <= hi:
            raise Problem(400, "invalid query", f"{name} must be an integer {lo}-{hi}",
                          errors=[{"path": name, "message": f"an integer {lo}-{hi}"}])
        out[name] = int(raw)
    return out

def _path_id(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if not ID_RE.match(value):
        raise Problem(400, f"invalid {name} id", "ids are 1-128 chars of A-Za-z0-9._:-",
                      errors=[{"path": name, "message": "invalid id"}])
    return value

async def market_history_route(request: web.Request) -> web.Response:
    principal_of(request, READ)
    mid = _path_id(request, "id")
    q = _query(request, ("limit", "before"))
    store = request.app[K_STORE]
    entries = await market_history(store, mid, limit=q["limit"], before=q.get("before"))
    if not entries and await store.get(mid) is None:
        raise Problem(404, "market not found", f"market {mid} does not exist")
    body: dict[str, Any] = {"market": mid, "entries": [e.to_wire() for e in entries]}
    if len(entries) == q["limit"] and entries[-1].version > 1:
        body["next_before"] = entries[-1].version
    return web.json_response(body)

async def event_audit_route(request: web.Request) -> web.Response:
    principal_of(request, READ)
    event = _path_id(request, "event")
    q = _query(request, ("limit",))
    entries = await event_audit(request.app[K_STORE], event, limit=q["limit"])
    return web.json_response({"event": event, "entries": [e.to_wire() for e in entries]})


HANDLERS: dict[str, Handler] = {
    "bet_stop": bet_stop, "bet_start": bet_start, "market_history": market_history_route,
    "event_audit": event_audit_route,
}
