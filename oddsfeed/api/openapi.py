"""The route table of the HTTP API and its OpenAPI 3.1 document (kept true by a test that
compares it with the registered routes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from .. import __version__
from . import schemas
from .console import FeedsOut


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: str
    summary: str
    scope: str | None = None
    body: type[BaseModel] | None = None
    responses: dict[str, str] = field(default_factory=dict)
    reply: type[BaseModel] | None = None  # the JSON body of a 200/201
    admin: bool = False  # served on the admin bind (server.admin_port), not the API port


_W = {"400": "invalid body (problem+json with errors[])", "401": "missing or bad token",
      "403": "token lacks the scope", "413": "body too large", "415": "not application/json"}

# The answers of lock and unlock (one lock change each).
_LOCK = {"200": "{market, version, locks: {market, selections}}", "404": "unknown market",
         "409": "settled", "412": "If-Match failed (current market in `current`)",
         "422": "Idempotency-Key reused", **_W}

ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/markets", "list_markets", "List market summaries (no selections), "
          "filtered by event, sport and status", "odds:read",
          responses={"200": "{markets: [summary], next_cursor?}: a page of at most `limit` "
                            "(default and max api.max_page_size) markets; pass next_cursor "
                            "back as `cursor` for the next page",
                     "400": "unknown query parameter, status, limit or cursor"},
          reply=schemas.MarketList),
    Route("GET", "/v1/markets/{id}", "get_market", "One market", "odds:read",
          responses={"200": "the market (ETag: \"epoch:version\")", "400": "invalid id",
                     "404": "unknown market"}, reply=schemas.MarketOut),
    Route("PUT", "/v1/markets/{id}", "put_market", "Create or replace a market", "odds:write",
          schemas.MarketPut, {"200": "replaced", "201": "created", "409": "event/sport differs "
                              "or settled", "412": "If-Match failed",
                              "422": "Idempotency-Key reused with another request", **_W},
          schemas.MarketOut),
    Route("PATCH", "/v1/markets/{id}", "patch_market", "Change some fields of a market",
          "odds:write", schemas.MarketPatch,
          {"200": "the market", "404": "unknown market", "409": "settled",
           "412": "If-Match failed (current market in `current`)",
           "422": "Idempotency-Key reused with another request", **_W}, schemas.MarketOut),
    Route("DELETE", "/v1/markets/{id}", "delete_market", "Delete a market; subscribers get gone",
          "odds:write", responses={"204": "deleted", "400": "invalid id or If-Match",
                                   "404": "unknown market",
                                   "412": "If-Match failed (current market in `current`)"}),
    Route("POST", "/v1/odds", "post_odds", "Batch of PATCH-shaped updates, one result each",
          "odds:write", schemas.OddsBatch, {"200": "{results: [{market, ok, version?, error?}]}",
                                            "422": "Idempotency-Key reused", **_W},
          schemas.BatchResult),
    Route("POST", "/v1/bets/validate", "validate_bets", "Validate a bet slip (section 4)",
          "bets:validate", schemas.SlipIn, {"200": "{ok, legs: [...]}",
                                            "503": "api.max_validations in progress "
                                                   "(Retry-After) or store unavailable", **_W},
          schemas.Validation),
    Route("POST", "/v1/events/{event}/bet-stop", "bet_stop", "Bet stop: suspend every market "
          "of the event (and any created until bet-start) before answering", "odds:write",
          schemas.BetStopIn, {"200": "{event, markets: [{market, version}], status}",
                              "422": "Idempotency-Key reused", **_W}, schemas.BetStopOut),
    Route("POST", "/v1/events/{event}/bet-start", "bet_start", "Bet start: reopen the markets "
          "the bet stop suspended", "odds:write", schemas.BetStopIn,
          {"200": "{event, markets: [{market, version}], status}",
           "422": "Idempotency-Key reused", **_W}, schemas.BetStopOut),
    Route("GET", "/v1/markets/{id}/history", "market_history", "A market's kept versions, "
          "newest first: who changed what, when", "odds:read",
          responses={"200": "{market, entries: [{market, version, ts, op, writer, changes}], "
                            "next_before?}: at most `limit` (default 100, max "
                            "api.max_page_size) entries below version `before`",
                     "400": "invalid id, unknown query parameter, limit or before",
                     "404": "unknown market"}, reply=schemas.HistoryOut),
    Route("GET", "/v1/events/{event}/audit", "event_audit", "The event's most recent "
          "changes across its markets, newest ts first", "odds:read",
          responses={"200": "{event, entries: [...]}: at most `limit` (default 100, max "
                            "api.max_page_size)",
                     "400": "invalid event id, unknown query parameter or limit"},
          reply=schemas.AuditOut),
    Route("POST", "/v1/markets/{id}/lock", "lock_market", "Lock selections of a market (or "
          "the whole market) against feed updates; desk writes still apply", "odds:write",
          schemas.LockIn, _LOCK, schemas.LockOut),
    Route("POST", "/v1/markets/{id}/unlock", "unlock_market", "Release locks of a market "
          "(no body or null selections: every lock of it)", "odds:write", schemas.LockIn,
          _LOCK, schemas.LockOut),
    Route("GET", "/v1/desk/markets/{id}", "desk_market", "The desk's view of a market: locks, "
          "feed updates they refused, the driving feed and every feed of it", "odds:read",
          responses={"200": "{market, event, epoch, version, status, locks, refused, driver, "
                            "sources}", "400": "invalid id or a query parameter",
                     "404": "unknown market"}, reply=schemas.DeskMarketOut),
    Route("GET", "/v1/desk/markets", "desk_market_list", "The desk's view of an event's "
          "markets (or of the first markets by id)", "odds:read",
          responses={"200": "{markets: [...]}: at most `limit` (default 100, max "
                            "api.max_page_size)",
                     "400": "unknown query parameter, invalid event or limit"},
          reply=schemas.DeskMarketList),
    Route("GET", "/v1/risk/accounts", "risk_accounts", "Top accounts by stale-bet risk score "
          "over a window, with their counts", "risk:read",
          responses={"200": "{window_s, at_ms, accounts: [{sub, score, counts}]}",
                     "400": "unknown query parameter, window or limit",
                     "404": "risk signals are off"}),
    Route("GET", "/v1/risk/accounts/{sub}", "risk_account", "One account's risk score and "
          "counts over a window", "risk:read",
          responses={"200": "{window_s, at_ms, sub, score, counts}",
                     "400": "unknown query parameter, window or account",
                     "404": "risk signals are off"}),
    Route("GET", "/v1/desk/feeds", "desk_feeds", "Each ingest source's health as its "
          "runner last published it: last message age, lag, markets suspended for silence",
          "odds:read", responses={"200": "{feeds: [{source, age_ms, lag_ms, markets, "
                                         "suspended_for_silence, stale, priority}]}",
                                  "400": "unknown query parameter"}, reply=FeedsOut),
    Route("GET", "/healthz", "healthz", "Process alive", responses={"200": "ok"}),
    Route("GET", "/readyz", "readyz", "Ready while the store answers",
          responses={"200": "ready", "503": "store unreachable"}),
    Route("GET", "/metrics", "metrics", "Prometheus metrics (admin port only)",
          responses={"200": "text format"}, admin=True),
    Route("GET", "/openapi.json", "openapi", "This document (admin port only)",
          responses={"200": "OpenAPI 3.1"}, admin=True),
    Route("GET", "/v1/demo/token", "demo_token", "A demo token (only under `oddsfeed run`)",
          responses={"200": "{token}", "404": "not in demo mode"}),
    Route("GET", "/", "index", "The live demo page", responses={"200": "text/html"}),
    Route("GET", "/console", "console", "The trader console page (needs an odds:write "
          "token)", responses={"200": "text/html"}),
    Route("GET", "/static/{name}", "static", "Demo page assets",
          responses={"200": "a file", "404": "no such file"}),
)


def _component(components: dict[str, Any], model: type[BaseModel],
               mode: Literal["validation", "serialization"]) -> dict[str, Any]:
    """Register ``model`` (and the models it uses) under components; return its $ref."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
    for name, sub in schema.pop("$defs", {}).items():
        components["schemas"][name] = sub
    components["schemas"][model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document describing every route of :data:`ROUTES`."""
    paths: dict[str, Any] = {}
    components: dict[str, Any] = {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                       "bearerFormat": "JWT"}},
        "schemas": {
            "Problem": {"type": "object", "properties": {
                "type": {"type": "string"}, "title": {"type": "string"},
                "status": {"type": "integer"}, "detail": {"type": "string"},
                "errors": {"type": "array", "items": {"type": "object", "properties": {
                    "path": {"type": "string"}, "message": {"type": "string"}}}},
                "current": {"description": "412 only: the current market"}}},
        },
    }
    for r in ROUTES:
        op: dict[str, Any] = {"summary": r.summary, "operationId": r.handler, "responses": {}}
        if "{event}" in r.path:
            op["parameters"] = [{"name": "event", "in": "path", "required": True,
                                 "schema": {"type": "string", "pattern": schemas.ID_PATTERN}}]
        if "{id}" in r.path or "{name}" in r.path:
            name = "id" if "{id}" in r.path else "name"
            op["parameters"] = [{"name": name, "in": "path", "required": True,
                                 "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"
                                            if name == "id" else "^[A-Za-z0-9._-]+$"}}]
        if r.handler in ("market_history", "event_audit"):
            op["parameters"].extend({"name": n, "in": "query", "required": False,
                                     "schema": {"type": "integer", "minimum": 1}}
                                    for n in ("limit", "before")[:2 if "{id}" in r.path else 1])
        if "{sub}" in r.path:
            op["parameters"] = [{"name": "sub", "in": "path", "required": True,
                                 "schema": {"type": "string", "minLength": 1,
                                            "maxLength": 256}}]
        if r.handler in ("risk_accounts", "risk_account"):
            op.setdefault("parameters", []).append(
                {"name": "window", "in": "query", "required": False,
                 "schema": {"type": "string"}})
        if r.handler == "risk_accounts":
            op["parameters"].append({"name": "limit", "in": "query", "required": False,
                                     "schema": {"type": "integer", "minimum": 1,
                                                "maximum": 1000}})
        if r.handler == "desk_market_list":
            op["parameters"] = [
                {"name": "event", "in": "query", "required": False,
                 "schema": {"type": "string", "pattern": schemas.ID_PATTERN}},
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1}}]
        if r.handler == "list_markets":
            op["parameters"] = [{"name": n, "in": "query", "required": False,
                                 "schema": {"type": "string"}}
                                for n in ("event", "sport", "status", "cursor")]
            op["parameters"].append({"name": "limit", "in": "query", "required": False,
                                     "schema": {"type": "integer", "minimum": 1}})
        if r.method in ("PUT", "PATCH", "DELETE", "POST") and r.scope == "odds:write":
            op.setdefault("parameters", []).append(
                {"name": "Idempotency-Key", "in": "header", "required": False,
                 "schema": {"type": "string", "maxLength": 200}})
            if r.method in ("PUT", "PATCH", "DELETE") or r.body is schemas.LockIn:
                op["parameters"].append({"name": "If-Match", "in": "header", "required": False,
                                         "schema": {"type": "string"}})
        if r.body is not None:
            op["requestBody"] = {"required": r.body not in (schemas.BetStopIn,  # optional body
                                                            schemas.LockIn),
                                 "content": {"application/json": {
                                     "schema": _component(components, r.body, "validation")}}}
        if r.scope:
            op["security"] = [{"bearer": [r.scope]}, {}] if r.scope == "odds:read" else [
                {"bearer": [r.scope]}]
            op["responses"].update({"401": {"description": "missing or bad token"},
                                    "403": {"description": "token lacks the scope"}})
        for status, text in r.responses.items():
            resp: dict[str, Any] = {"description": text}
            if status.startswith(("4", "5")):
                resp["content"] = {"application/problem+json": {
                    "schema": {"$ref": "#/components/schemas/Problem"}}}
            elif status != "204":
                media = ("text/html" if r.handler in ("index", "console") else
                         "text/plain" if r.handler == "metrics" else
                         "application/octet-stream" if r.handler == "static" else
                         "application/json")
                resp["content"] = {media: {"schema": _component(components, r.reply,
                                                                "serialization")
                                           if r.reply else {}}}
            op["responses"][status] = resp
        op["responses"].setdefault("503", {"description": "store unavailable"})
        paths.setdefault(r.path, {})[r.method.lower()] = op
    # POST /v1/odds checks its items one by one; the document shows their shape.
    _component(components, schemas.OddsItem, "validation")
    components["schemas"]["OddsBatch"]["properties"]["updates"]["items"] = {
        "$ref": "#/components/schemas/OddsItem"}
    return {"openapi": "3.1.0",
            "info": {"title": "oddsfeed", "version": __version__,
                     "description": "Live-odds push server: HTTP API (docs/protocol.md)."},
            "paths": paths, "components": components}
