"""The trader console's routes: the page (``GET /console``, static files beside the demo
page) and the feed-health list it shows (``GET /v1/desk/feeds``, protocol.md section 6).
It only reads; every action of the console goes through the ordinary write routes.

The app module registers the handlers of :data:`HANDLERS` by their route names.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from pydantic import BaseModel, Field

from ..auth import READ
from ..clock import now_ms
from ..store import feed_health
from ..webkit import Problem
from .plumbing import K_STORE, principal_of

STATIC_DIR = Path(__file__).parent / "static"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FeedOut(BaseModel):
    source: str
    age_ms: int | None = Field(description="since the source's last message (or sign of "
                                           "life); null if it sent none")
    lag_ms: int = Field(description="receive time minus provider time of the last update")
    markets: int = Field(description="markets the source has fed")
    suspended_for_silence: int = Field(description="markets suspended because the source "
                                                   "went silent")
    stale: bool = Field(description="the ingester has not published its health for 3 s")
    priority: int = Field(description="failover priority, 0 = primary")


class FeedsOut(BaseModel):
    feeds: list[FeedOut] = Field(description="by priority, then source")


async def feeds(request: web.Request) -> web.Response:
    principal_of(request, READ)
    if request.query:
        raise Problem(400, "invalid query", "unknown query parameter",
                      errors=[{"path": k, "message": "unknown query parameter"}
                              for k in sorted(set(request.query))])
    now = now_ms()
    entries = await feed_health(request.app[K_STORE], now_ms=now)
    return web.json_response({"feeds": [e.view(now) for e in entries]})


async def console_page(request: web.Request) -> web.StreamResponse:
    page = STATIC_DIR / "console.html"
    if not page.is_file():
        raise Problem(404, "not found", "the console page is not installed")
    return web.FileResponse(page)


HANDLERS: dict[str, Handler] = {"desk_feeds": feeds, "console": console_page}
