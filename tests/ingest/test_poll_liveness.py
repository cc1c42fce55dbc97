"""http-poll liveness against a fake Odds API v4 that answers 304 like the real one: only the
markets of the last 200 body stay alive; an event that left the feed is suspended after
the staleness period; the API key goes as a query parameter and never into the logs."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from structlog.testing import capture_logs

from oddsfeed.settings import load_settings
from oddsfeed.store import Store
from oddsfeed_ingest.main import run_adapter
from oddsfeed_ingest.oddsapi import redact_url

from .conftest import until
from .test_oddsapi import EVENT

ServeApp = Callable[[web.Application], Awaitable[str]]


class EtagOddsApi:
    """Serves ``bodies`` in turn as 200s with ETags "1", "2", ...; once they run out it
    answers 304 to a request that names the last ETag (and the last body otherwise)."""

    def __init__(self, bodies: list[list[dict[str, Any]]]) -> None:
        self.bodies = bodies
        self.served = 0
        self.not_modified = 0
        self.queries: list[dict[str, str]] = []

    async def handler(self, request: web.Request) -> web.Response:
        self.queries.append(dict(request.query))
        if self.served < len(self.bodies):
            self.served += 1
        etag = f'"{self.served}"'
        if self.served == len(self.bodies) and request.headers.get("If-None-Match") == etag:
            self.not_modified += 1
            return web.Response(status=304, headers={"ETag": etag})
        return web.json_response(self.bodies[self.served - 1], headers={"ETag": etag})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v4/sports/soccer_epl/odds", self.handler)
        return app


async def test_304_keeps_alive_only_the_last_bodys_markets(store: Store, serve_app: ServeApp,
                                                           tmp_path: Path) -> None:
    """Two events, then only one in a new body, then 304s: the event that left the feed is
    suspended after the staleness period while the one still in the feed stays open."""
    gone = copy.deepcopy(EVENT)
    gone["id"] = "ev-gone"
    fake = EtagOddsApi([[EVENT, gone], [EVENT]])
    base = await serve_app(fake.app())
    settings = load_settings(None, {"ODDSFEED_INGEST__API_KEY": "poll-key-7"}, {
        "ingest.mapping_file": str(tmp_path / "none.toml"), "ingest.staleness_s": 0.5})
    stop = asyncio.Event()

    async def status(mid: str) -> str | None:
        m = await store.get(mid)
        return m.status if m is not None else None

    async def gone_suspended() -> bool:
        return await status("ev-gone:h2h") == "suspended"

    with capture_logs() as logs:
        task = asyncio.create_task(run_adapter(
            "http-poll", {"url": f"{base}/v4/sports/soccer_epl/odds?regions=eu",
                          "bookmaker": "book1", "interval": 0.05, "feed_id": "live"},
            store, settings, stop=stop))
        try:
            await until(lambda: fake.not_modified > 0, what="a 304")
            await until(gone_suspended, what="the departed event suspended")
            assert await status("ev123:h2h") == "open"
            assert fake.not_modified > 3
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)
    assert {await status(f"ev-gone:{k}") for k in ("h2h", "totals", "spreads")} == {
        "suspended"}
    assert {await status(f"ev123:{k}") for k in ("h2h", "totals", "spreads")} == {"open"}
    assert all(q == {"regions": "eu", "apiKey": "poll-key-7"} for q in fake.queries)
    assert not [e for e in logs if "poll-key-7" in repr(e)]


def test_redact_url() -> None:
    """Credential query parameters are masked in the URL logs show; others are kept."""
    assert redact_url("http://h/odds?apiKey=s3cret&regions=eu") == (
        "http://h/odds?apiKey=***&regions=eu")
    assert redact_url("http://h/odds?token=t&key=k") == "http://h/odds?token=***&key=***"
    assert redact_url("http://h/odds") == "http://h/odds"
