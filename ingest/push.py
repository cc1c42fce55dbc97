"""The push adapter: an authenticated endpoint where providers POST batches of our normalised
JSON (bearer JWT with scope ``odds:write``). Must not write to the store except through the
runner.

``POST /v1/push`` with ``{"messages": [<message>, ...]}`` (see :mod:`ingest.normalised`)
answers ``200 {"results": [{"ok": bool, "outcome"?: str, "error"?: str}, ...]}``, one result
per message in order; a bad message is skipped and the rest of the batch still applies.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from oddsfeed.auth import WRITE, Authenticator, AuthError
from oddsfeed.errors import ProviderDataError
from oddsfeed.model import MarketUpdate

from .normalised import Mapping, normalize_message
from .runner import FeedRunner

MAX_BATCH = 1000
_ACCEPTED = ("created", "changed", "noop", "outoforder")


def _problem(status: int, title: str, detail: str) -> web.Response:
    return web.json_response({"title": title, "status": status, "detail": detail},
                             status=status, content_type="application/problem+json")


def build_push_app(runner: FeedRunner, auth: Authenticator, *,
                   max_body_bytes: int = 1 << 20, mapping: Mapping | None = None,
                   recorder: Callable[[str, Any], None] | None = None) -> web.Application:
    """The aiohttp app of the push endpoint, writing through ``runner``."""

    async def push(request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        try:
            if not header.lower().startswith("bearer "):
                raise AuthError("a bearer token is required")
            principal = auth.verify(header[7:].strip())
        except AuthError as exc:
            resp = _problem(401, "unauthorized", str(exc))
            resp.headers["WWW-Authenticate"] = 'Bearer realm="oddsfeed"'
            return resp
        if not principal.can(WRITE):
            return _problem(403, "forbidden", "the token lacks scope odds:write")
        if request.content_type != "application/json":
            return _problem(415, "unsupported media type", "send application/json")
        try:
            body = json.loads(await request.read())
            messages = body["messages"]
            if not isinstance(messages, list) or len(messages) > MAX_BATCH:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return _problem(400, "invalid request body",
                            f"send {{\"messages\": [...]}} with at most {MAX_BATCH} messages")
        except web.HTTPRequestEntityTooLarge:
            return _problem(413, "payload too large", f"at most {max_body_bytes} bytes")
        results: list[dict[str, Any]] = [{}] * len(messages)
        updates: list[MarketUpdate] = []
        at: list[int] = []  # the message index of each update
        for i, msg in enumerate(messages):
            if recorder is not None:
                recorder("push", msg)
            try:
                updates.append(normalize_message(msg, provider=runner.source,
                                                 mapping=mapping))
                at.append(i)
            except ProviderDataError as exc:
                runner.bad(exc, msg)
                results[i] = {"ok": False, "error": str(exc)}
        # one pipelined round trip for the batch (usually), with the same outcomes as
        # submitting the updates one by one
        for i, outcome in zip(at, await runner.submit_many(updates), strict=True):
            name = type(outcome).__name__.lower() if outcome is not None else "recorded"
            result: dict[str, Any] = {"ok": name in _ACCEPTED or outcome is None,
                                      "outcome": name}
            if hasattr(outcome, "reason"):
                result["error"] = f"{outcome.reason}: {outcome.message}"
            results[i] = result
        return web.json_response({"results": results})

    app = web.Application(client_max_size=max_body_bytes)
    app.router.add_post("/v1/push", push)
    return app
