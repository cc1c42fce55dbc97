"""The push adapter: providers POST batches of normalised JSON (scope odds:write)."""

from __future__ import annotations

import json

from aiohttp import web

from oddsfeed.auth import WRITE, Authenticator, AuthError
from oddsfeed.errors import ProviderDataError

from .normalised import normalize_message
from .runner import FeedRunner

MAX_BATCH = 1000


def build_push_app(runner: FeedRunner, auth: Authenticator, *,
                   max_body_bytes: int = 1 << 20) -> web.Application:
    """``POST /v1/push`` with ``{"messages": [...]}`` -> ``{"results": [{ok, error?}]}``."""

    async def push(request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        try:
            if not header.lower().startswith("bearer "):
                raise AuthError("a bearer token is required")
            principal = auth.verify(header[7:].strip())
        except AuthError as exc:
            return web.json_response({"title": "unauthorized", "status": 401,
                                      "detail": str(exc)}, status=401,
                                     content_type="application/problem+json")
        if not principal.can(WRITE):
            return web.json_response({"title": "forbidden", "status": 403,
                                      "detail": "the token lacks scope odds:write"},
                                     status=403, content_type="application/problem+json")
        if request.content_type != "application/json":
            return web.json_response({"title": "unsupported media type", "status": 415},
                                     status=415, content_type="application/problem+json")
        try:
            body = json.loads(await request.read())
            messages = body["messages"]
            if not isinstance(messages, list) or len(messages) > MAX_BATCH:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return web.json_response({"title": "invalid request body", "status": 400,
                                      "detail": f"send {{messages: [...]}} (at most {MAX_BATCH})"},
                                     status=400, content_type="application/problem+json")
        results = []
        for msg in messages:
            try:
                update = normalize_message(msg, provider=runner.source)
            except ProviderDataError as exc:
                runner.bad(exc, msg)
                results.append({"ok": False, "error": str(exc)})
                continue
            outcome = await runner.submit(update)
            name = type(outcome).__name__.lower() if outcome is not None else "bad"
            ok = name in ("created", "changed", "noop", "outoforder")
            results.append({"ok": ok, "outcome": name})
        return web.json_response({"results": results})

    app = web.Application(client_max_size=max_body_bytes)
    app.router.add_post("/v1/push", push)
    return app
