"""Feed health in the store, on a single server and on a cluster: one field per source,
entries older than an hour dropped by the next write, unreadable ones skipped."""

from __future__ import annotations

from oddsfeed.store import FeedHealth, Store, feed_health, publish_feed_health
from oddsfeed.store.feeds import DROP_AFTER_MS, FEEDS_KEY, STALE_AFTER_MS

NOW = 1_800_000_000_000


def entry(source: str, updated_ms: int, priority: int = 0) -> FeedHealth:
    return FeedHealth(source, updated_ms - 250, 40, 12, 0, updated_ms, priority)


async def test_one_field_per_source_read_back(store: Store) -> None:
    """Republishing a source replaces its entry; the read answers every source by priority."""
    for t in range(5):
        await publish_feed_health(store, entry("sim:1", NOW + t))
    await publish_feed_health(store, entry("sim-backup:1", NOW, priority=1))
    got = await feed_health(store, now_ms=NOW + 10)
    assert got == [entry("sim:1", NOW + 4), entry("sim-backup:1", NOW, priority=1)]
    assert await store.client.hlen(FEEDS_KEY) == 2  # type: ignore[misc,unused-ignore]


async def test_old_entries_dropped_and_junk_skipped(store: Store) -> None:
    """An entry older than an hour is deleted by any later write and not read meanwhile;
    a field that is not an entry is skipped by the read and deleted by the next write."""
    await publish_feed_health(store, entry("old", NOW - DROP_AFTER_MS - 1))
    await store.client.hset(FEEDS_KEY, "junk", "{")  # type: ignore[misc,unused-ignore]
    assert await feed_health(store, now_ms=NOW) == []
    await publish_feed_health(store, entry("new", NOW))
    assert await feed_health(store, now_ms=NOW) == [entry("new", NOW)]
    assert await store.client.hkeys(FEEDS_KEY) == [b"new"]  # type: ignore[misc,unused-ignore]


def test_view_marks_stale_after_the_limit() -> None:
    """The wire view is stale only once the entry is older than the stale limit; a source
    that sent nothing has no age."""
    e = entry("sim:1", NOW)
    assert e.view(NOW + STALE_AFTER_MS)["stale"] is False
    assert e.view(NOW + STALE_AFTER_MS + 1)["stale"] is True
    assert e.view(NOW + 1_000)["age_ms"] == 1_250
    silent = FeedHealth("push:x", 0, 0, 0, 0, NOW)
    assert silent.view(NOW)["age_ms"] is None
    assert FeedHealth.from_json(e.to_json()) == e
    assert FeedHealth.from_json(b'{"source": "x"}') is None
