"""A market's history entries name their writer, and read back newest first, paged; an
event's audit merges its markets' entries by ts."""

from __future__ import annotations

from oddsfeed.core.model import MarketUpdate
from oddsfeed.store import Store, event_audit, market_history, set_bet_stop


def creation(mid: str, source: str, ts: int, event: str = "ev1") -> MarketUpdate:
    """A create-or-replace of one market by ``source`` at ``ts``."""
    return MarketUpdate(market=mid, create=True, replace=True, source=source, ts=ts,
                        fields={"event": event, "sport": "soccer", "name": mid},
                        selections={"h": {"name": "Home", "price": 25000}})


async def test_history_names_writer_and_changes(store: Store) -> None:
    """Each version says who wrote it and what changed; pages go back with ``before``."""
    await store.apply(creation("a", "feedA", 10))
    await store.apply(MarketUpdate(market="a", selections={"h": {"price": 26000}},
                                   source="feedA", ts=20))
    await store.apply(MarketUpdate(market="a", fields={"name": "Renamed"},
                                   source="desk:alice", ts=30))
    await set_bet_stop(store, "ev1", stopped=True, source="desk:bob", ts=40)
    entries = await market_history(store, "a", limit=10)
    assert [(e.version, e.ts, e.op, e.writer) for e in entries] == [
        (4, 40, "delta", "desk:bob"), (3, 30, "delta", "desk:alice"),
        (2, 20, "delta", "feedA"), (1, 10, "created", "feedA")]
    assert entries[0].changes == {"status": "suspended"}
    assert entries[1].changes == {"name": "Renamed"}
    assert entries[2].changes == {"sel": {"h": {"price": 2.6}}}
    assert entries[3].changes["selections"]["h"]["price"] == 2.5
    page = await market_history(store, "a", limit=2, before=3)
    assert [e.version for e in page] == [2, 1]
    assert await market_history(store, "nope", limit=5) == []


async def test_event_audit_merges_markets_by_ts(store: Store) -> None:
    """The audit lists the newest changes over every market of the event, newest ts first,
    at most ``limit``; other events' changes are not in it."""
    await store.apply(creation("a", "feedA", 10))
    await store.apply(creation("b", "feedB", 15))
    await store.apply(creation("x", "feedX", 16, event="ev2"))
    await store.apply(MarketUpdate(market="a", selections={"h": {"price": 30000}},
                                   source="desk:carol", ts=30))
    audit = await event_audit(store, "ev1", limit=10)
    assert [(e.market, e.version, e.writer) for e in audit] == [
        ("a", 2, "desk:carol"), ("b", 1, "feedB"), ("a", 1, "feedA")]
    assert [e.market for e in await event_audit(store, "ev1", limit=2)] == ["a", "b"]
    assert await event_audit(store, "none", limit=5) == []
