"""The market routes: reads, PUT/PATCH/DELETE of one market and the batched odds POST."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, cast

import structlog
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import BaseModel

from ..auth import READ, WRITE, Principal
from ..clock import now_ms
from ..core.book import Changed, Created, Rejected
from ..core.errors import InvalidInput
from ..core.model import ID_RE, Market, MarketUpdate
from ..store import Applied, Head, OutOfOrder, Precondition, StoreOutcome, outcome_name
from ..webkit import Problem
from . import schemas
from .etag import etag
from .jsonout import JSON_TYPE, dumps, json_answer
from .plumbing import (
    K_SETTINGS,
    K_STORE,
    idempotent_response,
    invalid,
    json_body,
    model_of,
    principal_of,
)

audit = structlog.get_logger("oddsfeed.audit")


def _market_id(request: web.Request) -> str:
    mid = request.match_info["id"]
    if not ID_RE.match(mid):
        raise Problem(400, "invalid market id", "market ids are 1-128 chars of A-Za-z0-9._:-",
                      errors=[{"path": "id", "message": "invalid id"}])
    return mid


def _market_response(market: Market, status: int = 200) -> web.Response:
    return json_answer(market.to_wire(), status=status,
                             headers={"ETag": etag(market.epoch, market.version)})


# A read's answer (body and headers) for each Market object the store handed out: its
# decode memo hands out the same object again while the market's stored bytes are unchanged.
# Keyed by identity; an entry holds its Market, so the id is not reused while it is kept.
_READ_ANSWERS: dict[int, tuple[Market, bytes, CIMultiDictProxy[str]]] = {}
_READ_ANSWERS_KEPT = 1024


def _read_response(market: Market) -> web.Response:
    kept = _READ_ANSWERS.get(id(market))
    if kept is None or kept[0] is not market:
        headers = CIMultiDictProxy(CIMultiDict({"Content-Type": JSON_TYPE,
                                                "ETag": etag(market.epoch, market.version)}))
        if len(_READ_ANSWERS) >= _READ_ANSWERS_KEPT:
            _READ_ANSWERS.clear()
        kept = _READ_ANSWERS[id(market)] = (market, dumps(market.to_wire()), headers)
    return web.Response(body=kept[1], headers=kept[2])


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
    return json_answer(body)


async def get_market(request: web.Request) -> web.Response:
    principal_of(request, READ)
    market = await request.app[K_STORE].get(_market_id(request))
    if market is None:
        raise Problem(404, "market not found", f"market {request.match_info['id']} does not exist")
    return _read_response(market)


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
        raise invalid(exc, prefix) from None


async def _apply(request: web.Request, update: MarketUpdate, principal: Principal, *,
                 expect: tuple[str, int] | None = None, created_status: int = 201
                 ) -> tuple[int, dict[str, Any]]:
    outcome = await request.app[K_STORE].apply(update, expect=expect)
    status, market = _result(update, outcome, principal, created_status)
    return status, cast(Market, market).to_wire()  # a full reply: the whole market


def _result(update: MarketUpdate, outcome: StoreOutcome, principal: Principal,
            created_status: int = 201) -> tuple[int, Market | Head]:
    """The HTTP status and market (its head, from a short reply) of a store outcome
    (audited), or a Problem."""
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
    else:
        delta = outcome.delta if isinstance(outcome, Changed) else (
            outcome.delta() if isinstance(outcome, Applied) else None)
        if delta is not None:
            old_version = delta.base
            changed = {k: v for k, v in delta.to_wire().items()
                       if k not in ("op", "m", "e", "v", "base", "ts")}
    audit.info("market.write", who=principal.sub, source=update.source, market=market.id,
               epoch=market.epoch, old_version=old_version, new_version=market.version,
               outcome=outcome_name(outcome), changed=changed)
    status = created_status if isinstance(outcome, Created) else 200
    return status, market


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
    return await idempotent_response(request, principal, await request.read(),
                             lambda: _apply(request, update, principal, expect=expect))


async def put_market(request: web.Request) -> web.Response:
    principal = principal_of(request, WRITE)
    mid = _market_id(request)
    data = await json_body(request)
    body = model_of(schemas.MarketPut, data)
    fields = schemas.given(body, ("selections", "ts"))
    now = now_ms()
    try:
        update = MarketUpdate(market=mid, fields=fields, selections=_selections(body.selections),
                              replace=True, create=True, ts=body.ts if body.ts is not None else now,
                              source=f"desk:{principal.sub}")
    except InvalidInput as exc:
        raise invalid(exc) from None
    return await _write_market(request, principal, update)


async def patch_market(request: web.Request) -> web.Response:
    principal = principal_of(request, WRITE)
    mid = _market_id(request)
    data = await json_body(request)
    body = model_of(schemas.MarketPatch, data)
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

    return await idempotent_response(request, principal, b"", run)


async def post_odds(request: web.Request) -> web.Response:
    principal = principal_of(request, WRITE)
    data = await json_body(request)
    batch = model_of(schemas.OddsBatch, data)
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
                item = model_of(schemas.OddsItem, raw, f"updates.{i}.")
                if not ID_RE.match(item.market):
                    raise Problem(400, "invalid market id", "invalid market id",
                                  errors=[{"path": f"updates.{i}.market", "message": "invalid id"}])
                valid.append((entry, _update_from_patch(
                    item.market, item, f"desk:{principal.sub}", now, f"updates.{i}.")))
            except Problem as p:
                entry["error"] = p.body
        # every valid item in one pipelined round trip, in the batch's order
        outcomes = await request.app[K_STORE].apply_many([u for _, u in valid], short=True)
        for (entry, update), outcome in zip(valid, outcomes):
            try:
                _, market = _result(update, outcome, principal)
                entry.update(ok=True, version=market.version)  # no wire map of the market
            except Problem as p:
                entry["error"] = p.body
        return 200, {"results": results}

    return await idempotent_response(request, principal, await request.read(), run)


