"""Feed health: a silent source's open markets are suspended and reopened by the next good
update or sign of life from it; markets the provider suspended stay suspended; health and lag
show in the metrics and the logs. Time is a manual clock throughout."""

from __future__ import annotations

import asyncio

from prometheus_client import generate_latest
from structlog.testing import capture_logs

from oddsfeed.core.model import MarketUpdate
from oddsfeed.store import Store
from oddsfeed_ingest.normalised import normalize_message
from oddsfeed_ingest.runner import FeedRunner

from .conftest import ManualClock, until

BASE = {"event": "e1", "sport": "soccer", "name": "n"}


def msg(market: str, seq: int, price: float = 2.0, **extra: object) -> MarketUpdate:
    return normalize_message({"market": market, **BASE, "seq": seq,
                              "selections": {"h": {"name": "H", "price": price}}, **extra})


async def status(store: Store, market: str) -> str:
    m = await store.get(market)
    assert m is not None
    return m.status


async def test_silence_suspends_and_next_update_reopens(store: Store,
                                                        clock: ManualClock) -> None:
    """Past the staleness limit the market is suspended; the source's next good update
    reopens it with its new price."""
    runner = FeedRunner(store, "feed:1", staleness_s=30, clock=clock)
    await runner.submit(msg("m1", 1, ts=int(clock() * 1000) - 250))
    assert runner.lag_s == 0.25
    clock.advance(30)
    assert await runner.check_staleness() == []
    clock.advance(1)
    with capture_logs() as logs:
        assert await runner.check_staleness() == ["m1"]
    assert any(e["event"] == "feed silent: market suspended" for e in logs)
    assert await status(store, "m1") == "suspended"
    assert await runner.check_staleness() == []  # suspended once, not again
    assert runner.health()["stale_markets"] == 1
    text = generate_latest().decode()
    assert 'oddsfeed_ingest_stale_markets{source="feed:1"} 1.0' in text
    assert 'oddsfeed_ingest_healthy{source="feed:1"} 0.0' in text
    await runner.submit(msg("m1", 2, 2.1))
    m = await store.get("m1")
    assert m is not None
    assert m.status == "open"
    assert m.selections["h"].price == 21000
    assert runner.health()["stale_markets"] == 0
    assert 'oddsfeed_ingest_healthy{source="feed:1"} 1.0' in generate_latest().decode()


async def test_provider_suspension_is_left_alone(store: Store, clock: ManualClock) -> None:
    """A market the provider suspended is neither suspended again nor reopened by health."""
    runner = FeedRunner(store, "feed:2", staleness_s=5, clock=clock)
    await runner.submit(msg("m2", 1, status="suspended"))
    clock.advance(60)
    assert await runner.check_staleness() == []
    await runner.alive()
    await runner.submit(msg("m2", 2, 3.0))
    assert await status(store, "m2") == "suspended"


async def test_heartbeats_keep_markets_live_and_reopen(store: Store,
                                                       clock: ManualClock) -> None:
    """Signs of life (heartbeats, 304s) keep quiet markets live; after a silence the first
    one reopens the suspended markets."""
    runner = FeedRunner(store, "stream:9", staleness_s=10, clock=clock)
    await runner.submit(msg("a", 1))
    await runner.submit(msg("b", 2))
    for _ in range(5):
        clock.advance(8)
        await runner.alive()
        assert await runner.check_staleness() == []
    clock.advance(11)
    assert sorted(await runner.check_staleness()) == ["a", "b"]
    await runner.alive(["a"])
    assert [await status(store, x) for x in ("a", "b")] == ["open", "suspended"]
    await runner.alive()
    assert await status(store, "b") == "open"


async def test_a_replayed_update_after_silence_reopens(store: Store,
                                                       clock: ManualClock) -> None:
    """An unchanged snapshot (dropped as out of order) still proves the source live and
    reopens the market, as a poller re-reading the same odds does."""
    runner = FeedRunner(store, "http-poll:9", staleness_s=10, clock=clock)
    await runner.submit(msg("p", 5))
    clock.advance(11)
    assert await runner.check_staleness() == ["p"]
    await runner.submit(msg("p", 5))
    assert await status(store, "p") == "open"
    m = await store.get("p")
    assert m is not None
    assert m.version == 3


async def test_watch_task_suspends_and_logs_health(store: Store, clock: ManualClock) -> None:
    """The watch task checks staleness on its own and logs the source's health."""

    async def tick(s: float) -> None:
        clock.advance(s)
        await asyncio.sleep(0)

    runner = FeedRunner(store, "feed:w", staleness_s=3, clock=clock, sleep=tick)
    await runner.submit(msg("w", 1))
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(runner.watch(interval_s=1, log_every_s=2, stop=stop))
        await until(lambda: "w" in runner.auto_suspended, what="stale suspension")
        stop.set()
        await asyncio.wait_for(task, 5)
    assert await status(store, "w") == "suspended"
    health = [e for e in logs if e["event"] == "feed health"]
    assert health
    assert health[0]["source"] == "feed:w"
    assert "lag_s" in health[0]
