"""The push adapter: an authenticated endpoint where providers POST batches of our normalised
JSON (bearer JWT with scope ``odds:write``). Must not write to the store except through the
runner.

``POST /v1/push`` with ``{"messages": [<message>, ...]}`` (see :mod:`oddsfeed_ingest.normalised`)
answers ``200 {"results": [{"ok": bool, "outcome"?: str, "error"?: str, "last_seq"?: int},
...]}``, one result per message in order; a bad message is skipped and the rest of the batch
still applies. ``ok`` is true only when the store holds the message's state (created,
changed, or noop: already so); an update out of order (its ``seq`` not above ``last_seq``)
or rejected answers ``ok: false`` and is counted under its outcome in
``oddsfeed_ingest_messages_total``.

Isolation: each token subject (``sub``) writes under its own source ``push:<feed>@<sub>``, so
the store orders each pusher's seqs apart: a pusher that sends a huge ``seq`` holds back only
its own later updates of that market (and is told so), never another pusher's. Pushers
sharing one token share one ordering. No bound is put on how far a seq may jump: a first
seq has nothing to be compared with, and seqs are often timestamps of any unit.

A body that is not JSON, or nested too deeply to parse, answers 400; while the store is
unreachable the endpoint answers 503 with Retry-After at once (the runner does not retry),
and any message of that batch may have been applied: sending it again is safe with seqs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from oddsfeed.auth import WRITE, Authenticator, AuthError
from oddsfeed.bearer import bearer_token
from oddsfeed.core.book import OUTCOME_NAMES, Changed, Created, NoOp
from oddsfeed.core.errors import ProviderDataError, StoreError
from oddsfeed.core.model import MarketUpdate
from oddsfeed.store import outcome_name
from oddsfeed.webkit import Problem

from .normalised import FeedMapping, normalize_message, safe_id
from .runner import FeedRunner

MAX_BATCH = 1000
RETRY_AFTER_S = 1
_APPLIED = {OUTCOME_NAMES[kind] for kind in (Created, Changed, NoOp)}


def _problem(status: int, title: str, detail: str, *,
             retry_after: int | None = None) -> web.Response:
    return Problem(status, title, detail, retry_after=retry_after).response()


def _result(update: MarketUpdate, outcome: Any) -> dict[str, Any]:
    """One message's entry in the answer."""
    if outcome is None:  # recording: nothing applied, nothing refused
        return {"ok": True, "outcome": "recorded"}
    name = outcome_name(outcome)
    result: dict[str, Any] = {"ok": name in _APPLIED, "outcome": name}
    if hasattr(outcome, "reason"):
        result["error"] = f"{outcome.reason}: {outcome.message}"
    elif hasattr(outcome, "last_seq"):
        result["last_seq"] = outcome.last_seq
        result["error"] = (f"out of order: seq {update.seq} is not above {outcome.last_seq}, "
                           f"the last seq this pusher had applied to market {update.market}")
    elif hasattr(outcome, "driver"):
        result["error"] = (f"standby: feed {outcome.driver} of a higher priority is live on "
                           f"market {update.market}")
    return result


def build_push_app(runner: FeedRunner, auth: Authenticator, *,
                   max_body_bytes: int = 1 << 20, mapping: FeedMapping | None = None,
                   recorder: Callable[[str, Any], None] | None = None) -> web.Application:
    """The aiohttp app of the push endpoint, writing through ``runner``."""

    async def push(request: web.Request) -> web.Response:
        token = bearer_token(request.headers.get("Authorization", ""))
        try:
            if token is None:
                raise AuthError("a bearer token is required")
            principal = auth.verify(token)
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
        except (ValueError, KeyError, TypeError, RecursionError):
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
        try:
            outcomes = await runner.submit_many(updates, writer=safe_id(principal.sub)[:100])
        except StoreError:
            return _problem(503, "store unavailable",
                            "the store cannot be reached; send the batch again later",
                            retry_after=RETRY_AFTER_S)
        for k, (i, outcome) in enumerate(zip(at, outcomes, strict=True)):
            results[i] = _result(updates[k], outcome)
        return web.json_response({"results": results})

    app = web.Application(client_max_size=max_body_bytes)
    app.router.add_post("/v1/push", push)
    return app
