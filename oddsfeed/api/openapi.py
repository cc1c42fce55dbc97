"""The route table of the HTTP API and its OpenAPI 3.1 document (kept true by a test that
compares it with the registered routes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from .. import __version__
from . import schemas


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: str
    summary: str
    scope: str | None = None
    body: type[BaseModel] | None = None
    responses: dict[str, str] = field(default_factory=dict)


_W = {"400": "invalid body (problem+json with errors[])", "401": "missing or bad token",
      "403": "token lacks the scope", "413": "body too large", "415": "not application/json"}

ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/markets", "list_markets", "List market summaries (no selections), "
          "filtered by event, sport and status", "odds:read",
          responses={"200": "{markets: [summary]}"}),
    Route("GET", "/v1/markets/{id}", "get_market", "One market", "odds:read",
          responses={"200": "the market (ETag: \"epoch:version\")", "404": "unknown market"}),
    Route("PUT", "/v1/markets/{id}", "put_market", "Create or replace a market", "odds:write",
          schemas.MarketPut, {"200": "replaced", "201": "created", "409": "event/sport differs "
                              "or settled", "412": "If-Match failed", **_W}),
    Route("PATCH", "/v1/markets/{id}", "patch_market", "Change some fields of a market",
          "odds:write", schemas.MarketPatch,
          {"200": "the market", "404": "unknown market", "409": "settled",
           "412": "If-Match failed (current market in `current`)", **_W}),
    Route("DELETE", "/v1/markets/{id}", "delete_market", "Delete a market; subscribers get gone",
          "odds:write", responses={"204": "deleted", "404": "unknown market"}),
    Route("POST", "/v1/odds", "post_odds", "Batch of PATCH-shaped updates, one result each",
          "odds:write", schemas.OddsBatch, {"200": "{results: [{market, ok, version?, error?}]}",
                                            **_W}),
    Route("POST", "/v1/bets/validate", "validate_bets", "Validate a bet slip (section 4)",
          "bets:validate", schemas.SlipIn, {"200": "{ok, legs: [...]}", **_W}),
    Route("GET", "/healthz", "healthz", "Process alive", responses={"200": "ok"}),
    Route("GET", "/readyz", "readyz", "Ready while the store answers",
          responses={"200": "ready", "503": "store unreachable"}),
    Route("GET", "/metrics", "metrics", "Prometheus metrics", responses={"200": "text format"}),
    Route("GET", "/openapi.json", "openapi", "This document", responses={"200": "OpenAPI 3.1"}),
    Route("GET", "/v1/demo/token", "demo_token", "A demo token (only under `oddsfeed run`)",
          responses={"200": "{token}", "404": "not in demo mode"}),
    Route("GET", "/", "index", "The live demo page", responses={"200": "text/html"}),
    Route("GET", "/static/{name}", "static", "Demo page assets",
          responses={"200": "a file", "404": "no such file"}),
)


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
                    "path": {"type": "string"}, "message": {"type": "string"}}}}}},
        },
    }
    for r in ROUTES:
        op: dict[str, Any] = {"summary": r.summary, "operationId": r.handler, "responses": {}}
        if "{id}" in r.path or "{name}" in r.path:
            name = "id" if "{id}" in r.path else "name"
            op["parameters"] = [{"name": name, "in": "path", "required": True,
                                 "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"
                                            if name == "id" else "^[A-Za-z0-9._-]+$"}}]
        if r.handler == "list_markets":
            op["parameters"] = [{"name": n, "in": "query", "required": False,
                                 "schema": {"type": "string"}}
                                for n in ("event", "sport", "status")]
        if r.method in ("PUT", "PATCH", "DELETE", "POST") and r.scope == "odds:write":
            op.setdefault("parameters", []).append(
                {"name": "Idempotency-Key", "in": "header", "required": False,
                 "schema": {"type": "string", "maxLength": 200}})
            if r.method in ("PUT", "PATCH"):
                op["parameters"].append({"name": "If-Match", "in": "header", "required": False,
                                         "schema": {"type": "string"}})
        if r.body is not None:
            schema = r.body.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in schema.pop("$defs", {}).items():
                components["schemas"][name] = sub
            components["schemas"][r.body.__name__] = schema
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{r.body.__name__}"}}}}
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
                resp["content"] = {"application/json": {"schema": {}}}
            op["responses"][status] = resp
        op["responses"].setdefault("503", {"description": "store unavailable"})
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {"openapi": "3.1.0",
            "info": {"title": "oddsfeed", "version": __version__,
                     "description": "Live-odds push server: HTTP API (docs/protocol.md)."},
            "paths": paths, "components": components}
