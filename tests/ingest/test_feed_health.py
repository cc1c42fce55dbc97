"""The runner's feed-health publishing: rate-limited, skipped for stand-in stores, and never
fatal when the store is gone (a real Valkey is stopped)."""

from __future__ import annotations

from typing import Any

from structlog.testing import capture_logs

from oddsfeed.core.model import MarketUpdate
from oddsfeed.embedded import EmbeddedValkey
from oddsfeed.store import Store, feed_health
from oddsfeed_ingest.runner import FeedRunner

from .conftest import ManualClock


def created(mid: str) -> MarketUpdate:
    return MarketUpdate(market=mid, create=True, source="x",
                        fields={"event": "e", "sport": "soccer", "name": "A v B"},
                        selections={"h": {"name": "A", "price": 20000}})


async def test_published_at_most_once_a_period(store: Store) -> None:
    """Submits publish the health when a period has passed since the last publication,
    not on every update; a forced publication goes out at once."""
    clock = ManualClock()
    runner = FeedRunner(store, "push:p", clock=clock)
    await runner.submit(created("m1"))
    first = await feed_health(store, now_ms=int(clock() * 1000))
    assert [(e.source, e.markets, e.updated_ms) for e in first] == [
        ("push:p", 1, int(clock() * 1000))]
    clock.advance(0.5)
    await runner.submit(created("m2"))
    assert await feed_health(store, now_ms=int(clock() * 1000)) == first
    clock.advance(0.5)
    await runner.submit(created("m3"))
    (entry,) = await feed_health(store, now_ms=int(clock() * 1000))
    assert (entry.markets, entry.updated_ms) == (3, int(clock() * 1000))
    clock.advance(0.1)
    await runner.publish_health(force=True)
    (entry,) = await feed_health(store, now_ms=int(clock() * 1000))
    assert entry.updated_ms == int(clock() * 1000)


async def test_a_stand_in_store_publishes_nothing(store: Store) -> None:
    """A runner over a stand-in store (not a Store: `record`, test spies) skips publishing."""

    class Spy:
        async def apply(self, update: MarketUpdate) -> Any:
            return await store.apply(update)

        async def apply_many(self, updates: Any) -> Any:
            return await store.apply_many(updates)

    runner = FeedRunner(Spy(), "push:spy")
    await runner.submit(created("m1"))
    await runner.publish_health(force=True)
    assert await feed_health(store, now_ms=0) == []


async def test_a_lost_store_is_logged_not_raised() -> None:
    """With the store's Valkey stopped, publishing logs a warning and returns."""
    with EmbeddedValkey() as server:
        store = await Store.connect(server.url, socket_timeout=1.0)
        try:
            runner = FeedRunner(store, "push:lost")
            await runner.publish_health(force=True)
            server.stop()
            with capture_logs() as logs:
                await runner.publish_health(force=True)
        finally:
            await store.close()
    assert [e["event"] for e in logs] == ["feed health not published"]
    assert logs[0]["source"] == "push:lost"
