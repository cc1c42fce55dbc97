"""Feed health: ingest runners publish it to the store, GET /v1/desk/feeds shows it, and a
stopped ingester turns stale."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from oddsfeed.clock import now_ms
from oddsfeed.core.model import MarketUpdate
from oddsfeed.store import FeedHealth, Store, publish_feed_health
from oddsfeed.store.feeds import DROP_AFTER_MS, FEEDS_KEY, STALE_AFTER_MS
from oddsfeed_ingest.runner import FeedRunner
from oddsfeed_ingest.simulator import SimulatorConfig, run_simulator

from .conftest import Api, mint


async def feeds_until(api: Api, check: Callable[[dict[str, Any]], bool], *,
                      timeout_s: float = 10.0) -> dict[str, Any]:
    """Poll GET /v1/desk/feeds until ``check`` holds for the answer (or fail at the deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status, body, _ = await api.call("GET", "/v1/desk/feeds")
        assert status == 200, body
        if check(body):
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)


def by_source(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["source"]: f for f in body["feeds"]}


@contextlib.asynccontextmanager
async def simulator(store: Store, seed: int) -> AsyncIterator[str]:
    """The simulated feed running until the block ends; yields its source."""
    stop = asyncio.Event()
    cfg = SimulatorConfig(events=2, seed=seed, rate_per_s=50)
    task = asyncio.create_task(run_simulator(store, cfg, stop=stop, start_ms=now_ms()))
    try:
        yield f"sim:{seed}"
    finally:
        stop.set()
        await task


async def test_a_live_feed_is_listed_and_goes_stale_once_stopped(api: Api) -> None:
    """A running simulator is listed fresh (markets, small age and lag, not stale); after it
    stops its entry is shown stale once it is older than the stale limit."""
    async with simulator(api.store, 7) as source:
        body = await feeds_until(api, lambda b: by_source(b).get(source, {}).get("markets", 0)
                                 >= 6)
        feed = by_source(body)[source]
        assert feed["stale"] is False
        assert feed["age_ms"] is not None
        assert 0 <= feed["age_ms"] < STALE_AFTER_MS
        assert 0 <= feed["lag_ms"] < 5_000
        assert feed["suspended_for_silence"] == 0
        assert feed["priority"] == 0
        assert set(feed) == {"source", "age_ms", "lag_ms", "markets",
                             "suspended_for_silence", "stale", "priority"}
    stopped = time.monotonic()
    body = await feeds_until(api, lambda b: by_source(b)[source]["stale"])
    assert time.monotonic() - stopped >= (STALE_AFTER_MS - 1_000) / 1000
    assert by_source(body)[source]["age_ms"] >= STALE_AFTER_MS


async def test_a_silent_source_shows_its_suspended_markets(api: Api) -> None:
    """A watched source that goes silent suspends its market for silence: the entry stays
    fresh (the watcher publishes it) and counts the suspended market."""
    runner = FeedRunner(api.store, "push:quiet", staleness_s=0.3)
    await runner.submit(MarketUpdate(
        market="q1", create=True, source="x",
        fields={"event": "eq", "sport": "soccer", "name": "Q v R"},
        selections={"h": {"name": "Q", "price": 20000}, "a": {"name": "R", "price": 18000}}))
    stop = asyncio.Event()
    watcher = asyncio.create_task(runner.watch(interval_s=0.1, stop=stop))
    try:
        body = await feeds_until(
            api, lambda b: by_source(b).get("push:quiet", {}).get("suspended_for_silence") == 1)
        feed = by_source(body)["push:quiet"]
        assert feed["stale"] is False
        assert feed["markets"] == 1
        assert feed["age_ms"] >= 300
        market = await api.store.get("q1")
        assert market is not None
        assert market.status == "suspended"
    finally:
        stop.set()
        await watcher


async def test_old_and_malformed_entries_are_dropped(api: Api, redis_client: Any) -> None:
    """Publishing drops entries not refreshed for an hour and ones that are not entries;
    one field per source, so republishing does not grow the hash."""
    now = now_ms()
    old = FeedHealth("replay:old", now - DROP_AFTER_MS - 5_000, 0, 3, 0,
                     now - DROP_AFTER_MS - 5_000)
    await publish_feed_health(api.store, old)
    await redis_client.hset(FEEDS_KEY, "junk", "not json")
    assert await redis_client.hlen(FEEDS_KEY) == 2
    for i in range(3):
        await publish_feed_health(api.store, FeedHealth("push:new", now + i, 12, 4, 1, now + i,
                                                        priority=1))
    assert await redis_client.hkeys(FEEDS_KEY) == [b"push:new"]
    body = await feeds_until(api, lambda b: True)
    assert body["feeds"] == [{"source": "push:new", "age_ms": body["feeds"][0]["age_ms"],
                              "lag_ms": 12, "markets": 4, "suspended_for_silence": 1,
                              "stale": False, "priority": 1}]


async def test_feeds_are_ordered_by_priority_then_source(api: Api) -> None:
    """Entries are listed primary first, then by source name."""
    now = now_ms()
    for source, priority in (("b", 1), ("c", 0), ("a", 1)):
        await publish_feed_health(api.store, FeedHealth(source, now, 0, 1, 0, now, priority))
    body = await feeds_until(api, lambda b: len(b["feeds"]) == 3)
    assert [f["source"] for f in body["feeds"]] == ["c", "a", "b"]


@pytest.mark.parametrize(("token", "query", "status"), [
    (None, "", 401), ("bets:validate", "", 403), ("odds:read", "", 200),
    ("odds:read", "?x=1", 400)])
async def test_feeds_route_needs_odds_read(api: Api, token: str | None, query: str,
                                           status: int) -> None:
    """The route needs a token with odds:read and takes no query parameters."""
    got, body, _ = await api.call("GET", f"/v1/desk/feeds{query}",
                                  token=mint(token) if token else None)
    assert got == status, body
    if status == 200:
        assert body == {"feeds": []}
