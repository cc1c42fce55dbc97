"""The store's one atomic write path, reads and history, on a server and on a cluster."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from redis.asyncio.connection import AbstractConnection

from oddsfeed.core.book import (
    Applied,
    Changed,
    Created,
    Delta,
    NoOp,
    Rejected,
    apply_delta,
)
from oddsfeed.core.errors import InvalidInput
from oddsfeed.core.model import Market, MarketUpdate
from oddsfeed.store import Gone, OutOfOrder, Precondition, Store, decode_payload
from oddsfeed.store.codec import (
    ALL_MARKETS_KEY,
    event_set_key,
    history_key,
    meta_key,
    state_key,
)

CREATE = {"fields": {"event": "e1", "sport": "soccer", "name": "A v B"},
              "selections": {"h": {"name": "Home", "price": 25000},
                          "a": {"name": "Away", "price": 30000}}, "create": True}


async def create(store: Store, mid: str = "m1", **kw: Any) -> Market:
    args: dict[str, Any] = {**CREATE, **kw}
    out = await store.apply(MarketUpdate(market=mid, **args))
    assert isinstance(out, Created), out
    return out.market


async def snapshot_of(store: Store, mid: str) -> tuple[Any, ...]:
    """Everything the store holds about a market (state, history length, meta, membership),
    to prove a rejected write changed nothing."""
    c = store.client
    return (await c.get(state_key(mid)), await c.xlen(history_key(mid)),
            await c.hgetall(meta_key(mid)), await c.smembers(ALL_MARKETS_KEY),
            await c.smembers(event_set_key("e1")), await c.smembers(event_set_key("e2")))


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
    assert await store.client.xlen(history_key("m1")) == 2
    other = await store.apply(MarketUpdate(market="m1", selections={"h": {"price": 27000}},
                                           source="feed-b", seq=1))
    assert isinstance(other, Changed)
    assert isinstance(await store.apply(MarketUpdate(
        market="m1", selections={"a": {"price": 31000}}, source="feed-a", seq=11)), Changed)
    assert isinstance(await store.apply(MarketUpdate(
        market="m1", selections={"a": {"price": 32000}}, source="feed-b", seq=1)), OutOfOrder)
    m = await store.get("m1")
    assert m is not None
    assert m.version == 4
    assert await store.client.xlen(history_key("m1")) == 4


async def test_rejections_change_nothing(store: Store) -> None:
    """Unknown market, event or sport change, an incomplete new selection and a settled
    market are refused with a reason and path, change nothing, and do not use up the seq."""
    empty = await snapshot_of(store, "zz")
    out = await store.apply(MarketUpdate(market="zz", selections={"h": {"price": 20000}},
                                         source="f", seq=5))
    assert isinstance(out, Rejected)
    assert out.reason == "unknown_market"
    assert "zz" in out.message
    assert await store.get("zz") is None
    assert await snapshot_of(store, "zz") == empty
    await create(store)
    before = await snapshot_of(store, "m1")
    for fields, sels, reason, path in (
            ({"event": "e2"}, {}, "conflict", "event"),
            ({"sport": "tennis", "name": "x"}, {}, "conflict", "sport"),
            ({}, {"h": {"price": 21000}, "n": {"price": 20000}}, "invalid", "selections.n"),
            ({}, {"n": {"name": "New"}}, "invalid", "selections.n")):
        out = await store.apply(MarketUpdate(market="m1", fields=fields, selections=sels,
                                             source="f", seq=5))
        assert isinstance(out, Rejected), out
        assert (out.reason, out.path) == (reason, path)
        assert out.message
        assert await snapshot_of(store, "m1") == before
    # the refused updates did not record seq 5 for source f
    assert isinstance(await store.apply(MarketUpdate(
        market="m1", fields={"status": "settled"}, source="f", seq=5)), Changed)
    settled = await snapshot_of(store, "m1")
    out = await store.apply(MarketUpdate(market="m1", selections={"h": {"price": 20000}},
                                         source="f", seq=6))
    assert isinstance(out, Rejected)
    assert (out.reason, out.path) == ("settled", "status")
    assert await snapshot_of(store, "m1") == settled


@pytest.mark.parametrize(("bad", "path"), [
    ({"selections": {"h": {"price": 10000}}}, "selections.h.price"),  # price 1.0
    ({"selections": {"h": {"price": 0}}}, "selections.h.price"),
    ({"selections": {"h": {"price": -25000}}}, "selections.h.price"),
    ({"selections": {"h": {"price": "2.5"}}}, "selections.h.price"),
    ({"selections": {"h": {"price": 2.5}}}, "selections.h.price"),
    ({"selections": {"h": {"status": "gone"}}}, "selections.h.status"),
    ({"selections": {"h": "2.5"}}, "selections.h"),
    ({"selections": {"h": {"odds": 25000}}}, "selections.h.odds"),
    ({"fields": {"status": "paused"}}, "status"),
    ({"fields": {"in_play": "yes"}}, "in_play"),
    ({"fields": {"bet_delay_ms": "5"}}, "bet_delay_ms"),
    ({"fields": {"bet_delay_ms": -1}}, "bet_delay_ms"),
    ({"fields": {"colour": "red"}}, "colour"),
    ({"seq": "7", "source": "f"}, "seq"),
])
async def test_bad_values_are_refused_and_change_nothing(store: Store, bad: dict[str, Any],
                                                         path: str) -> None:
    """Prices <= 1, unknown statuses, wrong types and unknown fields are refused with the
    offending path before any store call, and the stored market is unchanged."""
    await create(store)
    before = await snapshot_of(store, "m1")
    with pytest.raises(InvalidInput) as err:
        await store.apply(MarketUpdate(market="m1", **bad))
    assert err.value.path == path
    assert await snapshot_of(store, "m1") == before


async def test_big_sequences_compare_exactly(store: Store) -> None:
    """Sequences beyond 2^53 (nanosecond timestamps) are compared exactly, not as doubles."""
    await create(store)
    big = 2**62 - 10
    for i, (seq, kind) in enumerate([(big, Changed), (big + 1, Changed), (big + 1, OutOfOrder),
                                     (big, OutOfOrder), (10**15, OutOfOrder)]):
        out = await store.apply(MarketUpdate(market="m1", selections={"h": {"price": 40000 + i}},
                                             source="ns", seq=seq))
        assert isinstance(out, kind), (seq, out)
    assert out.last_seq == big + 1  # type: ignore[union-attr]


async def test_lost_state_starts_a_clean_source_record(store: Store) -> None:
    """A market whose state was lost is created anew without its old per-source seqs."""
    await create(store, source="f", seq=100)
    await store.client.delete(state_key("m1"))  # lost, e.g. evicted; meta and history remain
    again = await store.apply(MarketUpdate(market="m1", source="f", seq=1, **CREATE))
    assert isinstance(again, Created)
    assert await store.client.hgetall(meta_key("m1")) == {b"src:f": b"1"}
    assert await store.client.xlen(history_key("m1")) == 1


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

    async def writer(n: int) -> int:
        changes = 0
        for i in range(40):
            sid = rng.choice(["h", "a", f"s{n}"])
            patch: dict[str, Any] = {"price": rng.randint(11000, 90000)}
            if sid.startswith("s"):
                patch = ({"status": "removed"} if rng.random() < 0.3
                         else {"name": f"S{n}", "price": patch["price"]})
            out = await store.apply(MarketUpdate(market="m1", selections={sid: patch},
                                                 source=f"w{n}", seq=i))
            assert isinstance(out, Changed | NoOp | Rejected), out
            changes += isinstance(out, Changed)
        return changes

    outcomes = await asyncio.gather(*(writer(n) for n in range(8)))
    final = await store.get("m1")
    assert final is not None
    assert final.version == 1 + sum(outcomes)
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


async def test_history_coverage(store: Store) -> None:
    """History serves what it still holds and says when it cannot (trimmed, epoch, ahead)."""
    short = await Store.connect(store.url, cluster=store.cluster, history_len=500)
    try:
        store = short
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
        assert await store.client.xlen(history_key("m1")) >= 500  # MAXLEN ~ trims roughly
        oldest = await store.client.xrange(history_key("m1"), count=1)
        first_kept = int(oldest[0][0].split(b"-")[0])
        assert first_kept <= 202
        covered = await store.history("m1", m.epoch, first_kept - 1)
        assert covered is not None
        assert [d.version for d in covered[1]] == list(range(first_kept, 702))
        assert await store.history("m1", m.epoch, first_kept - 2) is None
        assert await store.history("m1", m.epoch, 0) is None
        assert await store.history("gone", m.epoch, 1) is None
    finally:
        await short.close()


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
    # a change while suspended moves the mark; reopening does not
    await store.apply(MarketUpdate(market="m1", fields={"status": "suspended"}))  # v5
    await store.apply(MarketUpdate(market="m1", selections={"h": {"price": 27000}}))  # v6
    await store.apply(MarketUpdate(market="m1", fields={"status": "open"}))  # v7
    await store.apply(MarketUpdate(market="m1", selections={"h": {"price": 28000}}))  # v8
    market, susp_v = (await store.get_for_validation(["m1"]))["m1"]  # type: ignore[misc]
    assert (market.version, susp_v) == (8, 6)
    suspended_after = {x: susp_v > x for x in range(1, 9)}
    assert suspended_after == {1: True, 2: True, 3: True, 4: True, 5: True, 6: False,
                               7: False, 8: False}
    born_closed = await create(store, "m2", fields={**CREATE["fields"], "status": "closed"})
    assert born_closed.version == 1
    assert (await store.get_for_validation(["m2"]))["m2"][1] == 1  # type: ignore[index]


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


def count_sends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, one entry per request written to any server (pipelines count once)."""
    sends: list[int] = []
    real = AbstractConnection.send_packed_command

    async def counting(self: AbstractConnection, *args: Any, **kw: Any) -> None:
        sends.append(1)
        await real(self, *args, **kw)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return sends


async def test_reads_take_one_round_trip(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """get_many and get_for_validation send one pipelined request per server involved (on a
    single server a second one when a market is missing: MGET's nil is checked with GET)."""
    ids = [f"r{i}" for i in range(20)]
    for mid in ids:
        await create(store, mid)
    sends = count_sends(monkeypatch)
    many = await store.get_many([*ids, "missing"])
    assert len(sends) <= (3 if store.cluster else 2)
    assert [m.id for m in many.values() if m] == ids
    assert many["missing"] is None
    sends.clear()
    rec = await store.get_for_validation(ids)
    assert len(sends) <= (3 if store.cluster else 1)
    assert all(r is not None and r[1] == 0 for r in rec.values())


async def test_apply_many_is_apply_in_one_round_trip(store: Store,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """apply_many gives each update exactly apply's outcome, keeps order within a market,
    sends one pipelined request per server involved, and reloads a flushed script."""
    ids = [f"p{i}" for i in range(12)]
    for mid in ids:
        await create(store, mid)
    rng = random.Random(3)
    batch = []
    expected_version = dict.fromkeys(ids, 1)
    for i in range(60):
        mid = rng.choice(ids)
        batch.append(MarketUpdate(market=mid, selections={"h": {"price": 20000 + i}}))
        expected_version[mid] += 1
    batch.append(MarketUpdate(market="nope", selections={"h": {"price": 20000}}))
    batch.append(MarketUpdate(market="p0", selections={"h": {"price": 20059}}))  # same again
    sends = count_sends(monkeypatch)
    out = await store.apply_many(batch)
    assert len(sends) <= (3 if store.cluster else 1)
    monkeypatch.undo()
    assert len(out) == len(batch)
    seen = dict.fromkeys(ids, 1)
    for up, res in zip(batch[:60], out[:60]):
        assert isinstance(res, Changed), res
        assert res.delta.base == seen[up.market]  # in order within the market
        seen[up.market] = res.market.version
    assert isinstance(out[60], Rejected)
    assert out[60].reason == "unknown_market"
    last_p0 = max(i for i, up in enumerate(batch[:60]) if up.market == "p0")
    assert isinstance(out[61], NoOp if last_p0 == 59 else Changed)
    expected_version["p0"] += 0 if last_p0 == 59 else 1
    for mid in ids:
        m = await store.get(mid)
        assert m is not None
        assert m.version == expected_version[mid]
    # the script cache flushed (a restarted server): loaded again, nothing lost or doubled
    await store.client.script_flush()  # a cluster sends it to every primary
    out = await store.apply_many([MarketUpdate(market="p1", selections={"h": {"price": 41234}}),
                                  MarketUpdate(market="p2", selections={"h": {"price": 41234}})])
    assert [type(o) for o in out] == [Changed, Changed]
    m = await store.get("p1")
    assert m is not None
    assert m.version == expected_version["p1"] + 1
    assert await store.apply_many([]) == []
    created = await store.apply_many([MarketUpdate(market="n1", **CREATE)])
    assert isinstance(created[0], Created)
    assert "n1" in {x.decode() for x in await store.client.smembers(event_set_key("e1"))}
