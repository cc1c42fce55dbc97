"""The store's one atomic write path, reads and history, on a server and on a cluster."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oddsfeed.book import (
    Applied,
    Changed,
    Created,
    Delta,
    NoOp,
    Rejected,
    apply_delta,
    apply_update,
)
from oddsfeed.errors import InvalidInput
from oddsfeed.model import Market, MarketUpdate
from oddsfeed.store import Gone, OutOfOrder, Precondition, Store, decode_payload
from oddsfeed.store.codec import history_key, state_key

from ..core.strategies import markets, updates

CREATE = {"fields": {"event": "e1", "sport": "soccer", "name": "A v B"},
              "selections": {"h": {"name": "Home", "price": 25000},
                          "a": {"name": "Away", "price": 30000}}, "create": True}


async def create(store: Store, mid: str = "m1", **kw: Any) -> Market:
    args: dict[str, Any] = {**CREATE, **kw}
    out = await store.apply(MarketUpdate(market=mid, **args))
    assert isinstance(out, Created), out
    return out.market


async def snapshot_of(store: Store, mid: str) -> tuple[Any, ...]:
    """Everything the store holds about a market, to prove a rejected write changed nothing."""
    c = store.client
    return (await c.get(state_key(mid)), await c.xlen(history_key(mid)))


async def test_create_change_noop(store: Store) -> None:
    """A create starts at version 1; a change bumps by one; a repeat is a no-op."""
    m = await create(store)
    assert m.version == 1
    assert m.epoch
    up = MarketUpdate(market="m1", selections={"h": {"price": 26000}})
    changed = await store.apply(up)
    assert isinstance(changed, Changed)
    assert changed.market.version == 2
    assert changed.delta.sel == {"h": {"price": 26000}}
    assert changed.delta.base == 1
    again = await store.apply(up)
    assert isinstance(again, NoOp)
    assert again.market.version == 2
    assert await store.get("m1") == changed.market


async def test_out_of_order_and_duplicates_never_bump(store: Store) -> None:
    """A (source, seq) not newer than the last accepted one is dropped; sources are independent."""
    await create(store)
    first = await store.apply(MarketUpdate(market="m1", selections={"h": {"price": 26000}},
                                           source="feed-a", seq=10))
    assert isinstance(first, Changed)
    for seq in (10, 9, 1):
        out = await store.apply(MarketUpdate(market="m1", selections={"h": {"price": 27000}},
                                             source="feed-a", seq=seq))
        assert isinstance(out, OutOfOrder)
        assert out.last_seq == 10
    other = await store.apply(MarketUpdate(market="m1", selections={"h": {"price": 27000}},
                                           source="feed-b", seq=1))
    assert isinstance(other, Changed)
    m = await store.get("m1")
    assert m is not None
    assert m.version == 3


async def test_rejections_change_nothing(store: Store) -> None:
    """Unknown market, event change and settled markets are refused and change nothing."""
    out = await store.apply(MarketUpdate(market="zz", selections={"h": {"price": 20000}}))
    assert isinstance(out, Rejected)
    assert out.reason == "unknown_market"
    assert await store.get("zz") is None
    await create(store)
    before = await snapshot_of(store, "m1")
    out = await store.apply(MarketUpdate(market="m1", fields={"event": "e2"}))
    assert isinstance(out, Rejected)
    assert out.reason == "conflict"
    out = await store.apply(MarketUpdate(market="m1", selections={"n": {"price": 20000}}))
    assert isinstance(out, Rejected)
    assert out.reason == "invalid"
    assert out.path == "selections.n"
    assert await snapshot_of(store, "m1") == before
    await store.apply(MarketUpdate(market="m1", fields={"status": "settled"}))
    settled = await snapshot_of(store, "m1")
    out = await store.apply(MarketUpdate(market="m1", selections={"h": {"price": 20000}}))
    assert isinstance(out, Rejected)
    assert out.reason == "settled"
    assert await snapshot_of(store, "m1") == settled


def test_bad_values_never_reach_the_store() -> None:
    """Prices <= 1, unknown statuses and wrong types are refused before any store call."""
    for bad in ({"selections": {"h": {"price": 10000}}}, {"fields": {"status": "paused"}},
                {"fields": {"in_play": "yes"}}, {"selections": {"h": {"price": "2.5"}}}):
        with pytest.raises(InvalidInput):
            MarketUpdate(market="m1", **bad)  # type: ignore[arg-type]


async def test_if_match(store: Store) -> None:
    """expect=(epoch, version) applies on a match and returns the current market otherwise."""
    m = await create(store)
    up = MarketUpdate(market="m1", selections={"h": {"price": 26000}})
    assert isinstance(await store.apply(up, expect=(m.epoch, 1)), Changed)
    out = await store.apply(up, expect=(m.epoch, 1))
    assert isinstance(out, Precondition)
    assert out.current is not None
    assert out.current.version == 2
    missing = await store.apply(MarketUpdate(market="nope", fields={"name": "x"}),
                                expect=("e", 1))
    assert isinstance(missing, Precondition)
    assert missing.current is None


async def test_concurrent_writers_history_and_bus(store: Store) -> None:
    """8 concurrent writers: contiguous versions, history replays to the state, and a bus
    subscriber receives every delta in order."""
    m0 = await create(store)
    got: list[Any] = []
    bus = store.bus(lambda kind, ident, data: got.append(decode_payload(data)[0]))
    await bus.start()
    await bus.subscribe_market("m1")
    rng = random.Random(7)

    async def writer(n: int) -> None:
        for i in range(40):
            sid = rng.choice(["h", "a", f"s{n}"])
            patch: dict[str, Any] = {"price": rng.randint(11000, 90000)}
            if sid.startswith("s"):
                patch = ({"status": "removed"} if rng.random() < 0.3
                         else {"name": f"S{n}", "price": patch["price"]})
            await store.apply(MarketUpdate(market="m1", selections={sid: patch},
                                           source=f"w{n}", seq=i))

    await asyncio.gather(*(writer(n) for n in range(8)))
    final = await store.get("m1")
    assert final is not None
    hist = await store.history("m1", m0.epoch, 1)
    assert hist is not None
    _, deltas = hist
    assert [d.version for d in deltas] == list(range(2, final.version + 1))
    state = m0
    for d in deltas:
        res = apply_delta(state, d)
        assert isinstance(res, Applied)
        state = res.market
    assert state == final
    deadline = asyncio.get_running_loop().time() + 10
    while len(got) < len(deltas) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    assert [d.version for d in got if isinstance(d, Delta)] == [d.version for d in deltas]
    await bus.stop()


async def test_history_coverage(valkey_url: str) -> None:
    """History serves what it still holds and says when it cannot (trimmed, epoch, ahead)."""
    store = await Store.connect(valkey_url, history_len=500)
    await store.client.flushall()
    try:
        m = await create(store)
        for i in range(700):
            await store.apply(MarketUpdate(market="m1", selections={"h": {"price": 20000 + i}}))
        latest = await store.get("m1")
        assert latest is not None
        assert latest.version == 701
        recent = await store.history("m1", m.epoch, 650)
        assert recent is not None
        assert [d.version for d in recent[1]] == list(range(651, 702))
        assert await store.history("m1", m.epoch, 2) is None  # trimmed away
        assert await store.history("m1", "other-epoch", 650) is None
        assert await store.history("m1", m.epoch, 800) is None  # ahead of the store
        up_to_date = await store.history("m1", m.epoch, 701)
        assert up_to_date is not None
        assert up_to_date[1] == []
        assert await store.client.xlen(history_key("m1")) >= 500
    finally:
        await store.close()


async def test_suspension_record(store: Store) -> None:
    """susp_v answers exactly whether the market was suspended after a version."""
    await create(store)  # v1
    await store.apply(MarketUpdate(market="m1", selections={"h": {"price": 26000}}))  # v2
    await store.apply(MarketUpdate(market="m1", fields={"status": "suspended"}))  # v3
    await store.apply(MarketUpdate(market="m1", fields={"status": "open"}))  # v4
    rec = (await store.get_for_validation(["m1", "nope"]))
    assert rec["nope"] is None
    market, susp_v = rec["m1"]  # type: ignore[misc]
    assert market.version == 4
    assert market.status == "open"
    assert susp_v == 3
    assert susp_v > 2
    assert not susp_v > 3


async def test_listing_delete_and_new_epoch(store: Store) -> None:
    """Listings filter by event, sport and status; delete publishes gone, clears membership,
    and a re-created market gets a new epoch."""
    ids = [f"mk{i}" for i in range(12)]
    for i, mid in enumerate(ids):
        await store.apply(MarketUpdate(market=mid, fields={
            "event": f"e{i % 3}", "sport": "soccer" if i % 2 else "tennis", "name": "n",
            "status": "suspended" if i % 4 == 0 else "open"}, create=True))
    assert [m.id for m in await store.list_markets(event="e1")] == sorted(ids[1::3])
    assert {m.id for m in await store.list_markets(sport="soccer", status="open")} == {
        mid for i, mid in enumerate(ids) if i % 2 and i % 4}
    got: list[Any] = []
    bus = store.bus(lambda kind, ident, data: got.append(decode_payload(data)[0]))
    await bus.start()
    await bus.subscribe_market("mk1")
    before = await store.get("mk1")
    assert before is not None
    assert await store.delete("mk1")
    assert not await store.delete("mk1")
    assert "mk1" not in await store.event_market_ids("e1")
    deadline = asyncio.get_running_loop().time() + 5
    while not got and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    assert got == [Gone("mk1")]
    again = await create(store, "mk1", fields={"event": "e1", "sport": "soccer", "name": "n"})
    assert again.epoch != before.epoch
    assert again.version == 1
    many = await store.get_many(["mk0", "mk1", "nope"])
    assert many["nope"] is None
    assert many["mk1"] == again
    await bus.stop()


async def test_cluster_spreads_markets_over_three_shards(valkey_cluster: Any) -> None:
    """On the cluster, markets land on all three primaries and the bus delivers from each."""
    store = await Store.connect(valkey_cluster.url, cluster=True)
    try:
        await store.client.flushall(target_nodes="primaries")
        ids = [f"c{i}" for i in range(30)]
        nodes = {store.client.get_node_from_key(state_key(m)).name for m in ids}
        assert len(nodes) == 3
        got: dict[str, int] = {}
        bus = store.bus(lambda kind, ident, data: got.__setitem__(ident, got.get(ident, 0) + 1))
        await bus.start()
        for m in ids:
            await bus.subscribe_market(m)
        for m in ids:
            await create(store, m)
            await store.apply(MarketUpdate(market=m, selections={"h": {"price": 21000}}))
        deadline = asyncio.get_running_loop().time() + 10
        while sum(got.values()) < 60 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        assert got == dict.fromkeys(ids, 2)
        await bus.stop()
    finally:
        await store.close()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(initial=markets(status="open"), ups=st.lists(updates(), max_size=8))
def test_lua_matches_core_book(valkey_url: str, initial: Market, ups: list[MarketUpdate]) -> None:
    """The store's Lua apply gives exactly the core book's outcome, state and delta."""

    async def check() -> None:
        store = await Store.connect(valkey_url)
        try:
            await store.client.delete(*list(await store.client.keys("of:{m:m1}*")) or ["x"])
            created = await store.apply(MarketUpdate(
                market="m1", fields={k: getattr(initial, k) for k in (
                    "event", "sport", "name", "kind", "status", "in_play", "bet_delay_ms")},
                selections={k: s.to_store() for k, s in initial.selections.items()},
                create=True, ts=initial.ts))
            assert isinstance(created, Created)
            state = created.market
            for i, u in enumerate(ups):
                expected = apply_update(state, u, epoch="unused", now_ms=i)
                got = await store.apply(u, now_ms=i)
                assert type(got) is type(expected), (u, got, expected)
                if isinstance(expected, Changed):
                    assert isinstance(got, Changed)
                    assert got.market == expected.market
                    assert got.delta == expected.delta
                    state = got.market
                elif isinstance(expected, Rejected):
                    assert isinstance(got, Rejected)
                    assert got.reason == expected.reason
        finally:
            await store.close()

    asyncio.run(check())
