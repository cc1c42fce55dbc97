"""Price locks and the desk's market view (protocol.md, extension section 6):
``POST /v1/markets/{id}/lock|unlock`` and ``GET /v1/desk/markets[/{id}]``.

The app module registers the handlers of :data:`HANDLERS` by their route names.
"""

from __future__ import annotations

import re
from typing import Any

import structlog
from aiohttp import web

from ..auth import READ, WRITE
from ..clock import now_ms
from ..core.book import Changed, NoOp, Rejected
from ..core.model import ID_RE
from ..store import DeskMarket, Precondition, desk_markets, outcome_name, set_locks
from ..webkit import Problem
from . import schemas
from .desk import DEFAULT_LIMIT, Handler, _path_id
from .markets import _if_match
from .plumbing import K_SETTINGS, K_STORE, idempotent_response, json_body, model_of, principal_of

audit = structlog.get_logger("oddsfeed.audit")


def _locks_of(view: DeskMarket) -> dict[str, Any]:
    return {"market": view.locked_market, "selections": list(view.locked)}


async def _lock(request: web.Request, on: bool) -> web.Response:
    principal = principal_of(request, WRITE)
    mid = _path_id(request, "id")
    expect = _if_match(request)
    selections: list[str] | None = None
    if request.body_exists:
        body = model_of(schemas.LockIn, await json_body(request))
        selections = body.selections
    store = request.app[K_STORE]

    async def run() -> tuple[int, Any]:
        outcome = await set_locks(store, mid, on=on, selections=selections,
                                  source=f"desk:{principal.sub}", ts=now_ms(), expect=expect)
        if isinstance(outcome, Precondition):
            raise Problem(412, "precondition failed", "the market moved since If-Match",
                          current=outcome.current.to_wire() if outcome.current else None)
        if isinstance(outcome, Rejected):
            status = {"unknown_market": 404, "settled": 409}.get(outcome.reason, 400)
            errors = ([{"path": outcome.path, "message": outcome.message}]
                      if status == 400 else None)
            raise Problem(status, outcome.reason.replace("_", " "), outcome.message,
                          errors=errors)
        if not isinstance(outcome, Changed | NoOp):
            raise Problem(409, outcome_name(outcome), f"market {mid} was not changed")
        locks = outcome.delta.ext.get("locks") if isinstance(outcome, Changed) else None
        if locks is None:  # unchanged: the locks as they are
            view = (await desk_markets(store, [mid]))[mid]
            if view is None:
                raise Problem(404, "market not found", f"market {mid} does not exist")
            locks = _locks_of(view)
        audit.info("market.lock" if on else "market.unlock", who=principal.sub, market=mid,
                   selections=selections, version=outcome.market.version,
                   outcome=outcome_name(outcome))
        return 200, {"market": mid, "version": outcome.market.version,
                     "locks": {"market": bool(locks["market"]),
                               "selections": list(locks["selections"])}}

    return await idempotent_response(request, principal, await request.read(), run)


async def lock_market(request: web.Request) -> web.Response:
    return await _lock(request, True)


async def unlock_market(request: web.Request) -> web.Response:
    return await _lock(request, False)


async def desk_market(request: web.Request) -> web.Response:
    principal_of(request, READ)
    mid = _path_id(request, "id")
    if request.query:
        raise Problem(400, "invalid query", "unknown query parameter",
                      errors=[{"path": k, "message": "unknown query parameter"}
                              for k in sorted(request.query)])
    view = (await desk_markets(request.app[K_STORE], [mid]))[mid]
    if view is None:
        raise Problem(404, "market not found", f"market {mid} does not exist")
    return web.json_response(view.to_wire(now_ms()))


async def desk_market_list(request: web.Request) -> web.Response:
    principal_of(request, READ)
    q = request.query
    unknown = sorted(set(q) - {"event", "limit"})
    if unknown:
        raise Problem(400, "invalid query", "unknown query parameter",
                      errors=[{"path": k, "message": "unknown query parameter"}
                              for k in unknown])
    top = request.app[K_SETTINGS].api.max_page_size
    limit = min(DEFAULT_LIMIT, top)
    raw = q.get("limit")
    if raw is not None:
        if not re.fullmatch(r"[0-9]{1,9}", raw, re.ASCII) or not 1 <= int(raw) <= top:
            raise Problem(400, "invalid query", f"limit must be an integer 1-{top}",
                          errors=[{"path": "limit", "message": f"an integer 1-{top}"}])
        limit = int(raw)
    event = q.get("event")
    store = request.app[K_STORE]
    if event is not None:
        if not ID_RE.match(event):
            raise Problem(400, "invalid query", "event ids are 1-128 chars of A-Za-z0-9._:-",
                          errors=[{"path": "event", "message": "invalid id"}])
        ids = (await store.event_market_ids(event))[:limit]
    else:
        ids = [m.id for m in await store.list_markets(limit=limit)]
    views = await desk_markets(store, ids)
    now = now_ms()
    return web.json_response({"markets": [v.to_wire(now) for v in views.values()
                                          if v is not None]})


HANDLERS: dict[str, Handler] = {
    "lock_market": lock_market, "unlock_market": unlock_market, "desk_market": desk_market,
    "desk_market_list": desk_market_list,
}
