"""The trader console in a real headless Chromium against a real worker (fan-out and HTTP
API) on the session's embedded Valkey, with a real ingest runner feeding the markets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from oddsfeed.api.openapi import ROUTES
from oddsfeed.core.model import MarketUpdate
from oddsfeed.worker import Worker
from oddsfeed_ingest.runner import FeedRunner

from ..fanout.conftest import make_settings, mint_token

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
EVENT = "ev-c"
MARKETS = ("ev-c:1x2", "ev-c:ou", "ev-c:btts")
SOURCE = "push:console"
LOCK_ROUTES = any(r.path == "/v1/markets/{id}/lock" for r in ROUTES)
TIMEOUT_MS = 10_000


@dataclass
class Desk:
    """A running worker, a trader token, the feed's runner and an HTTP session."""

    worker: Worker
    token: str
    feed: FeedRunner
    http: aiohttp.ClientSession

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.worker.http_port}"

    def console_url(self, token: str | None = None) -> str:
        return (f"{self.base}/console?ws_port={self.worker.ws_port}"
                f"&token={token or self.token}")

    def board_url(self) -> str:
        return f"{self.base}/?ws_port={self.worker.ws_port}"

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.http.request(method, self.base + path, headers=headers,
                                     json=body) as r:
            return r.status, json.loads(await r.text() or "null")


def created(mid: str, seq: int) -> MarketUpdate:
    name = f"Reds v Blues: {mid.split(':')[1]}"
    return MarketUpdate(market=mid, create=True, seq=seq, source="x",
                        fields={"event": EVENT, "sport": "soccer", "name": name},
                        selections={"h": {"name": "Home", "price": 25000},
                                    "a": {"name": "Away", "price": 30000}})


def priced(mid: str, seq: int, h: int) -> MarketUpdate:
    return MarketUpdate(market=mid, seq=seq, source="x", selections={"h": {"price": h}})


@pytest.fixture
async def desk(valkey_url: str, redis_client: Any) -> AsyncIterator[Desk]:
    """A worker on the emptied Valkey with three markets of one event fed by an ingest
    runner (which has published its health), and a token with odds:read and odds:write."""
    settings = make_settings(valkey_url)
    async with Worker(settings, valkey_url, reuse_port=False) as w, \
            aiohttp.ClientSession() as http:
        feed = FeedRunner(w.store, SOURCE)
        for i, mid in enumerate(MARKETS):
            await feed.submit(created(mid, 1))
            await feed.submit(priced(mid, 2, 26000 + i * 1000))
        await feed.publish_health(force=True)
        token = mint_token(settings, "odds:read", "odds:write", sub="trader-1")
        yield Desk(w, token, feed, http)


async def open_console(browser: Any, desk: Desk, token: str | None = None) -> Any:
    page = await browser.new_page(viewport={"width": 1280, "height": 820})
    await page.goto(desk.console_url(token))
    await page.wait_for_selector(".conn.open", timeout=TIMEOUT_MS)
    for mid in MARKETS:
        await page.wait_for_selector(f"[id='m-{mid}'] button.price", timeout=TIMEOUT_MS)
    return page


def price_button(mid: str, sid: str = "h") -> str:
    return f"[id='m-{mid}'] tr[data-sel='{sid}'] button.price"


async def test_a_price_edit_arrives_on_the_public_board(browser: Any, desk: Desk) -> None:
    """Editing a price on the console (Enter saves) changes it on a second page's public
    board; the selection has a sparkline and the audit shows the desk's change; a token
    without risk:read hides the risk panel."""
    console = await open_console(browser, desk)
    board = await browser.new_page()
    await board.goto(desk.board_url())
    mid = MARKETS[0]
    await board.wait_for_selector(f"[id='m-{mid}'] [data-sel='h'] .price", timeout=TIMEOUT_MS)
    await console.wait_for_selector(f"[id='m-{mid}'] tr[data-sel='h'] svg.sparkline polyline",
                                    timeout=TIMEOUT_MS)
    assert await console.is_hidden("[data-testid=risk]")
    await console.focus(price_button(mid))
    await console.keyboard.press("Enter")
    field = console.locator("[data-testid=price-input]")
    await field.fill("3.75")
    await field.press("Enter")
    await board.wait_for_function(
        "mid => document.querySelector(`[id='m-${mid}'] [data-sel='h'] .price`)"
        "?.textContent === '3.75'", arg=mid, timeout=TIMEOUT_MS)
    await console.wait_for_selector(f"{price_button(mid)}:text('3.75')", timeout=TIMEOUT_MS)
    await console.wait_for_selector("#audit li.desk:has-text('desk:trader-1')",
                                    timeout=TIMEOUT_MS)
    market = await desk.worker.store.get(mid)
    assert market is not None
    assert market.selections["h"].price == 37500


async def test_a_concurrent_change_shows_the_new_price(browser: Any, desk: Desk) -> None:
    """A price saved after someone else changed the market answers 412: the console shows
    the new price, and Enter again saves the trader's price on the new version."""
    console = await open_console(browser, desk)
    mid = MARKETS[1]
    await console.click(price_button(mid))
    field = console.locator("[data-testid=price-input]")
    await field.fill("2.10")
    status, _ = await desk.call("PATCH", f"/v1/markets/{mid}",
                                {"selections": {"h": {"price": 4.2}}})
    assert status == 200
    await field.press("Enter")
    current = console.locator(f"[id='m-{mid}'] tr[data-sel='h'] [data-testid=current-price]")
    await current.wait_for(timeout=TIMEOUT_MS)
    assert await current.text_content() == "4.20"
    market = await desk.worker.store.get(mid)
    assert market is not None
    assert market.selections["h"].price == 42000
    await field.press("Enter")
    await console.wait_for_selector(f"{price_button(mid)}:text('2.10')", timeout=TIMEOUT_MS)
    market = await desk.worker.store.get(mid)
    assert market is not None
    assert market.selections["h"].price == 21000


async def test_bet_stop_suspends_every_market_on_the_board(browser: Any, desk: Desk) -> None:
    """The b shortcut asks first; confirming stops betting on the event and the public
    board shows every market of it suspended; Esc on the question changes nothing."""
    console = await open_console(browser, desk)
    board = await browser.new_page()
    await board.goto(desk.board_url())
    for mid in MARKETS:
        await board.wait_for_selector(f"[id='m-{mid}'][data-status='open']", timeout=TIMEOUT_MS)
    await console.keyboard.press("b")
    await console.wait_for_selector("[data-testid=confirm][open]", timeout=TIMEOUT_MS)
    await console.keyboard.press("Escape")
    await console.wait_for_selector("[data-testid=confirm]:not([open])", state="attached",
                                    timeout=TIMEOUT_MS)
    assert all(m.status == "open" for m in (await desk.worker.store.get_many(list(MARKETS)))
               .values() if m is not None)
    await console.keyboard.press("b")
    await console.wait_for_selector("[data-testid=confirm][open]", timeout=TIMEOUT_MS)
    await console.keyboard.press("Enter")
    for mid in MARKETS:
        await board.wait_for_selector(f"[id='m-{mid}'][data-status='suspended']",
                                      timeout=TIMEOUT_MS)
        await console.wait_for_selector(f"[id='m-{mid}'][data-status='suspended']",
                                        timeout=TIMEOUT_MS)
    await console.click("[data-testid=bet-start]")
    for mid in MARKETS:
        await board.wait_for_selector(f"[id='m-{mid}'][data-status='open']", timeout=TIMEOUT_MS)


async def test_a_stopped_feed_turns_stale_in_the_health_panel(browser: Any, desk: Desk) -> None:
    """The feed-health panel lists the live feed, then marks it stale once its runner has
    stopped publishing; a screenshot of the console is saved as a test artifact."""
    console = await open_console(browser, desk)
    row = f"#feeds tr[data-source='{SOURCE}']"
    await console.wait_for_selector(f"{row}:not(.stale)", timeout=TIMEOUT_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    await console.screenshot(path=str(ARTIFACTS / "console.png"))
    # nothing publishes any more: the runner is not fed and not watched
    await console.wait_for_selector(f"{row}.stale", timeout=TIMEOUT_MS)
    assert "STALE" in (await console.text_content(row) or "")


async def test_the_risk_panel_needs_risk_read(browser: Any, desk: Desk) -> None:
    """With risk:read the console lists the accounts that validated slips (the panel is
    hidden without it, as the price-edit test checks)."""
    settings = make_settings("redis://unused")
    bettor = mint_token(settings, "bets:validate", sub="bettor-7")
    slip = {"legs": [{"market": MARKETS[0], "selection": "h", "price": 9.5}]}
    async with desk.http.post(f"{desk.base}/v1/bets/validate", json=slip,
                              headers={"Authorization": f"Bearer {bettor}"}) as r:
        assert r.status == 200
    risky = mint_token(settings, "odds:read", "odds:write", "risk:read", sub="head-trader")
    deadline = asyncio.get_running_loop().time() + 10
    while True:  # the recorder counts off the answer's path
        async with desk.http.get(f"{desk.base}/v1/risk/accounts",
                                 headers={"Authorization": f"Bearer {risky}"}) as r:
            if any(a["sub"] == "bettor-7" for a in (await r.json())["accounts"]):
                break
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    console = await open_console(browser, desk, risky)
    await console.wait_for_selector("[data-testid=risk] li:has-text('bettor-7')",
                                    timeout=TIMEOUT_MS)


@pytest.mark.skipif(not LOCK_ROUTES, reason="needs lock routes")
async def test_a_locked_price_refuses_feed_updates(browser: Any, desk: Desk) -> None:
    """Locking a selection on the console keeps its price against a feed update (counted as
    refused in the desk view); after unlocking, the next feed update applies."""
    console = await open_console(browser, desk)
    mid = MARKETS[2]
    lock = f"[id='m-{mid}'] tr[data-sel='h'] [data-testid=lock-sel]"
    await console.click(lock)
    await console.wait_for_selector(f"{lock}:text('Unlock')", timeout=TIMEOUT_MS)
    await desk.feed.submit(priced(mid, 3, 55000))
    await console.wait_for_selector(f"[id='m-{mid}'] [data-testid=refused]", timeout=TIMEOUT_MS)
    market = await desk.worker.store.get(mid)
    assert market is not None
    assert market.selections["h"].price == 28000
    assert await console.text_content(price_button(mid)) == "2.80"
    await console.click(lock)
    await console.wait_for_selector(f"{lock}:text('Lock')", timeout=TIMEOUT_MS)
    await desk.feed.submit(priced(mid, 4, 56000))
    await console.wait_for_selector(f"{price_button(mid)}:text('5.60')", timeout=TIMEOUT_MS)
