"""Idempotency-Key handling of the HTTP writes (protocol.md section 3): one record per
key in the store, so a retry on any worker gets the first answer."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..auth import Principal
from ..store import IdempotencyRecord, Store, record_key
from ..webkit import PROBLEM, Problem
from .etag import etag
from .jsonout import json_answer

__all__ = ["IN_FLIGHT_WAIT_S", "idempotent", "json_or_empty"]

IN_FLIGHT_WAIT_S = 10.0  # how long a retry waits for the same key's first run


async def idempotent(request: web.Request, principal: Principal, body: bytes,
                     run: Callable[[], Awaitable[tuple[int, Any]]], *, store: Store,
                     ttl_s: int) -> web.Response:
    """Run a write once per Idempotency-Key (per principal, method and path, for
    ``ttl_s``); a retry, on any worker, gets the first answer."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        status, payload = await run()
        return json_or_empty(status, payload)
    if not 1 <= len(key) <= 200:
        raise Problem(400, "invalid Idempotency-Key", "1-200 characters",
                      errors=[{"path": "Idempotency-Key", "message": "1-200 characters"}])
    scope = f"{principal.sub}\n{request.method}\n{request.path}\n{key}".encode()
    records = IdempotencyRecord(store, record_key(hashlib.sha256(scope).hexdigest()), ttl_s)
    # The same key with another body or precondition is another request: 422.
    digest = hashlib.sha256(request.headers.get("If-Match", "").encode() + b"\n" + body
                            ).hexdigest()
    deadline = time.monotonic() + IN_FLIGHT_WAIT_S
    while not await records.claim(digest):
        rec = await records.get()
        if rec is None:
            continue  # released or expired meanwhile: try to claim it again
        if rec.get("digest") != digest:
            raise Problem(422, "idempotency key reused",
                          "this Idempotency-Key was used with another request")
        if rec["state"] == "done":
            resp = json_or_empty(rec["status"], rec["body"])
            resp.headers["Idempotent-Replayed"] = "true"
            return resp
        if time.monotonic() > deadline:
            raise Problem(409, "request in progress",
                          "a request with this Idempotency-Key is still running")
        await asyncio.sleep(0.02)  # bounded by the deadline above
    try:
        status, payload = await run()
    except Problem as p:
        if p.status >= 500 or p.status == 412:
            await records.release()  # a retry runs again (and a 412 changed nothing)
        else:
            await records.done(digest, p.status, p.body)
        raise
    except BaseException:
        await records.release()
        raise
    await records.done(digest, status, payload)
    return json_or_empty(status, payload)


def json_or_empty(status: int, payload: Any) -> web.Response:
    if status == 204:
        return web.Response(status=204)
    if status >= 400:
        return web.Response(status=status, content_type=PROBLEM, text=json.dumps(payload))
    headers = {}
    if isinstance(payload, dict) and "epoch" in payload and "version" in payload:
        headers["ETag"] = etag(payload["epoch"], payload["version"])
    return json_answer(payload, status=status, headers=headers)
