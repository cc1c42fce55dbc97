"""Event bet stop and bet start in the store, on a single server and on the 3-node cluster."""

from __future__ import annotations

import asyncio
from typing import Any

from oddsfeed.core.book import Changed, Created, Delta
from oddsfeed.core.model import MarketUpdate
from oddsfeed.store import Store, decode_payload, set_bet_stop
from oddsfeed.store.codec import state_key

EVENT = "ev1"


def creation(mid: str, status: str = "open", event: str = EVENT) -> MarketUpdate:
    """A feed's create-or-replace of one market of ``event``."""
    return MarketUpdate(market=mid, create=True, replace=True, source="feed",
                        fields={"event": event, "sport": "soccer", "name": mid, "status": status},
                        selections={"h": {"name": "Home", "price": 25000}})


def spread_ids(store: Store, n: int) -> list[str]:
    """``n`` market ids covering every shard of a cluster (any ids on a single server)."""
    if not store.cluster:
        return [f"m{i}" for i in range(n)]
    by_node: dict[str, list[str]] = {}
    i = 0
    while min((len(v) for v in by_node.values()), default=0) * len(by_node) < n \
            or len(by_node) < 3:
        mid = f"m{i}"
        node = store.client.get_node_from_key(state_key(mid))  # type: ignore[union-attr]
        by_node.setdefault(node.name, []).append(mid)
        i += 1
    per = -(-n // len(by_node))
    return sorted(mid for ids in by_node.values() for mid in ids[:per])[:n]


async def statuses(store: Store, ids: list[str]) -> dict[str, str]:
    """The status of each market now."""
    got = await store.get_many(ids)
    return {mid: m.status for mid, m in got.items() if m is not None}


async def stop(store: Store, stopped: bool, event: str = EVENT) -> Any:
    """A desk's bet stop (True) or bet start (False) of ``event``."""
    return await set_bet_stop(store, event, stopped=stopped, source="desk:d1", ts=1)


async def test_bet_stop_suspends_every_market_and_bet_start_reopens_only_those(
        store: Store) -> None:
    """Bet stop suspends the open markets on every shard; bet start reopens exactly them."""
    ids = spread_ids(store, 6)
    own = {ids[0]: "suspended", ids[1]: "closed"}
    await store.apply_many([creation(mid, own.get(mid, "open")) for mid in ids])
    await store.apply(creation("other", event="ev2"))
    res = await stop(store, True)
    assert sorted(m for m, _ in res.markets) == sorted(ids)
    assert await statuses(store, ids) == {mid: own.get(mid, "suspended") for mid in ids}
    got = await store.get_many(ids)
    assert dict(res.markets) == {mid: m.version for mid, m in got.items() if m}
    assert (await store.get("other")).status == "open"  # type: ignore[union-attr]
    await stop(store, False)
    assert await statuses(store, ids) == {mid: own.get(mid, "open") for mid in ids}


async def test_open_is_held_during_bet_stop_and_own_suspension_survives_bet_start(
        store: Store) -> None:
    """A change to open during a bet stop stays suspended until bet start; a market a trader
    suspended during the stop stays suspended after it."""
    await store.apply_many([creation("a"), creation("b"), creation("c", "suspended")])
    await stop(store, True)
    feed = await store.apply(MarketUpdate(market="c", fields={"status": "open"}, source="feed"))
    assert (await store.get("c")).status == "suspended"  # type: ignore[union-attr]
    assert not isinstance(feed, Changed)  # held: nothing changed
    trader = await store.apply(MarketUpdate(market="b", fields={"status": "suspended"}))
    assert not isinstance(trader, Changed)  # already suspended: a no-op, but recorded
    await store.apply(creation("a"))  # a feed's replace says open: held
    assert await statuses(store, ["a", "b", "c"]) == {"a": "suspended", "b": "suspended",
                                                     "c": "suspended"}
    await stop(store, False)
    assert await statuses(store, ["a", "b", "c"]) == {"a": "open", "b": "suspended",
                                                     "c": "open"}


async def test_market_created_during_bet_stop_is_created_suspended(store: Store) -> None:
    """A market created while its event is stopped is suspended from version 1 on, and bet
    start reopens it; a market of another event is not touched."""
    await store.apply(creation("a"))
    await stop(store, True)
    out = await store.apply(creation("new"))
    assert isinstance(out, Created)
    assert out.market.status == "suspended"
    (batch,) = await store.apply_many([creation("new2")])
    assert isinstance(batch, Created)
    assert batch.market.status == "suspended"
    other = await store.apply(creation("x", event="ev2"))
    assert isinstance(other, Created)
    assert other.market.status == "open"
    res = await stop(store, False)
    assert sorted(m for m, _ in res.markets) == ["a", "new", "new2"]
    assert await statuses(store, ["a", "new", "new2"]) == dict.fromkeys(
        ["a", "new", "new2"], "open")


async def test_no_market_escapes_a_bet_stop_racing_its_creation(store: Store) -> None:
    """Creations racing a bet stop: once both are done, every market of the event is
    suspended, whichever ran first."""
    for round_ in range(5):
        ids = [f"r{round_}-{i}" for i in range(12)]
        creates = [store.apply(creation(mid)) for mid in ids[:6]]
        creates.append(store.apply_many([creation(mid) for mid in ids[6:]]))
        await asyncio.gather(stop(store, True), *creates)
        assert set((await statuses(store, ids)).values()) == {"suspended"}, round_
        await stop(store, False)
        assert set((await statuses(store, ids)).values()) == {"open"}, round_


async def test_subscribers_get_the_suspension_as_a_delta(store: Store) -> None:
    """Each market's subscribers get its bet-stop suspension as an ordinary delta."""
    ids = spread_ids(store, 3)
    await store.apply_many([creation(mid) for mid in ids])
    got: list[Any] = []
    bus = store.bus(lambda kind, ident, data: got.append(decode_payload(data)[0]))
    await bus.start()
    try:
        for mid in ids:
            await bus.subscribe_market(mid)
        await stop(store, True)
        async with asyncio.timeout(5):
            while len(got) < len(ids):
                await asyncio.sleep(0.01)
    finally:
        await bus.stop()
    assert all(isinstance(d, Delta) and d.fields == {"status": "suspended"} for d in got)
    assert sorted(d.market for d in got) == sorted(ids)


async def test_a_stale_bet_stop_changes_nothing(store: Store) -> None:
    """A stop record older than the one a market has seen (a late message) is ignored."""
    await store.apply(creation("a"))
    await stop(store, True)
    await stop(store, False)
    keys, args = store._apply_args(MarketUpdate(market="a"), None, None, "1:1", "stop")
    await store._apply(keys=keys, args=args)
    assert (await store.get("a")).status == "open"  # type: ignore[union-attr]
