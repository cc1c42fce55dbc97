"""The desk's event routes: bet stop and bet start (protocol.md, extension section 6).

The helpers of the API (auth, body, idempotency) arrive as arguments of :func:`handlers`,
so this module does not import the app module that registers it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from pydantic import ValidationError

from ..auth import WRITE, Principal
from ..clock import now_ms
from ..core.model import ID_RE
from ..store import Store, set_bet_stop
from ..webkit import Problem
from . import schemas

audit = structlog.get_logger("oddsfeed.audit")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def handlers(*, principal_of: Callable[[web.Request, str | None], Principal],
             json_body: Callable[[web.Request], Awaitable[Any]],
             bad_body: Callable[[ValidationError], Problem],
             idempotent: Callable[[web.Request, Principal, bytes,
                                   Callable[[], Awaitable[tuple[int, Any]]]],
                                  Awaitable[web.Response]],
             store_key: web.AppKey[Store]) -> dict[str, Handler]:
    """The route handlers by name (the ``handler`` of :data:`oddsfeed.api.openapi.ROUTES`)."""

    async def switch(request: web.Request, stopped: bool) -> web.Response:
        principal = principal_of(request, WRITE)
        event = request.match_info["event"]
        if not ID_RE.match(event):
            raise Problem(400, "invalid event id", "event ids are 1-128 chars of A-Za-z0-9._:-",
                          errors=[{"path": "event", "message": "invalid id"}])
        ts = now_ms()
        if request.body_exists:
            try:
                body = schemas.BetStopIn.model_validate(await json_body(request))
            except ValidationError as exc:
                raise bad_body(exc) from None
            if body.ts is not None:
                ts = body.ts

        async def run() -> tuple[int, Any]:
            result = await set_bet_stop(request.app[store_key], event, stopped=stopped,
                                        source=f"desk:{principal.sub}", ts=ts)
            audit.info("event.bet_stop" if stopped else "event.bet_start", who=principal.sub,
                       event_id=event, markets=len(result.markets))
            return 200, {"event": event,
                         "markets": [{"market": m, "version": v} for m, v in result.markets],
                         "status": "stopped" if stopped else "started"}

        return await idempotent(request, principal, await request.read(), run)

    async def bet_stop(request: web.Request) -> web.Response:
        return await switch(request, True)

    async def bet_start(request: web.Request) -> web.Response:
        return await switch(request, False)

    return {"bet_stop": bet_stop, "bet_start": bet_start}
