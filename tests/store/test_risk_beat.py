"""The beat signal on a real Valkey (single server and cluster): accepted legs queued in
the store's beat queue, judged from the history once their window ended, counted exactly."""

from __future__ import annotations

import asyncio

import msgpack

from oddsfeed.clock import now_ms
from oddsfeed.core.model import MarketUpdate
from oddsfeed.core.risk import DueGroup, as_map
from oddsfeed.core.wire import Leg
from oddsfeed.services.risk import Beat, RiskQueue
from oddsfeed.store import RiskCounts, Store
from oddsfeed.store.codec import history_key, unpack
from oddsfeed.store.risk_due import DueQueue, count_key, due_key
from tests.riskports import RiskMetrics

WINDOW_MS = 10_000
FAR = 2**50  # a sweep "now" after every window


def create(mid: str) -> MarketUpdate:
    return MarketUpdate(market=mid, fields={"event": "e1", "sport": "soccer", "name": "A v B"},
                        selections={"h": {"name": "Home", "price": 25000},
                                    "a": {"name": "Away", "price": 30000}}, create=True)


def recorder(store: Store, metrics: RiskMetrics, *, limit: int = 1000, max_due: int = 10_000
             ) -> RiskQueue:
    """A recorder whose own sweeper never finds a leg due (its clock says 0): the test
    sweeps explicitly."""
    counts = RiskCounts(store.client, windows_s=[60], buckets=12, max_accounts=1000,
                        history_scan=200)
    due = DueQueue(store.client, shards=4, max_due=max_due)
    return RiskQueue(counts, metrics, max_pending=100_000, clock=lambda: 0,
                     beat=Beat(due, WINDOW_MS, 60_000, limit), linger_s=0.05)


async def entry_ms(store: Store, mid: str, version: int) -> int:
    ((_id, fields),) = await store.client.xrange(history_key(mid), f"{version}-0",
                                                 f"{version}-0")
    return int(unpack(fields[b"d"])["t"]) // 1000


def accepted(queue: RiskQueue, sub: str, mid: str, sel: str, at_ms: int, *,
             price: int = 25000, shown: float | None = None) -> None:
    """Offer a one-leg slip accepted at version 1 (``shown``: the price answered)."""
    verdict = {"market": mid, "selection": sel, "ok": True,
               "price": price / 10_000 if shown is None else shown, "version": 1}
    queue.offer(sub, [Leg(mid, sel, price, version=1)], {"ok": True, "legs": [verdict]}, at_ms)


async def beats(queue: RiskQueue, sub: str, at_ms: int) -> int:
    counts = await queue.store.account(sub, 60, at_ms)  # type: ignore[attr-defined]
    return as_map(counts or ())["beat"]


async def sweep_all(queue: RiskQueue) -> int:
    taken = 0
    while n := await queue.sweep(FAR):
        taken += n
    return taken


async def test_suspension_or_shorter_price_inside_the_window_is_a_beat(store: Store) -> None:
    """Accepted then suspended within the window counts 1, outside it 0; a lengthened
    price 0, a shortened one 1 (also for a leg accepted at a better price than asked); a
    leg whose own selection did not move 0."""
    for mid in ("m1", "m2", "m3"):
        await store.apply(create(mid))
    await store.apply(MarketUpdate(market="m1", fields={"status": "suspended"}))
    await store.apply(MarketUpdate(market="m2", selections={"h": {"price": 26000}}))
    await store.apply(MarketUpdate(market="m3", selections={"h": {"price": 24000}}))
    s1, s2, s3 = [await entry_ms(store, m, 2) for m in ("m1", "m2", "m3")]
    metrics = RiskMetrics()
    queue = recorder(store, metrics)
    queue.start()
    try:
        accepted(queue, "in", "m1", "h", s1 - 100)
        accepted(queue, "edge", "m1", "a", s1 - WINDOW_MS)
        accepted(queue, "out", "m1", "h", s1 - WINDOW_MS - 1)
        accepted(queue, "long", "m2", "h", s2 - 100)
        accepted(queue, "short", "m3", "h", s3 - 100)
        accepted(queue, "better", "m3", "h", s3 - 100, price=24500, shown=2.5)
        accepted(queue, "other", "m3", "a", s3 - 100, price=30000)
        await asyncio.wait_for(queue.drain(), 10)
        assert await sweep_all(queue) == 7
    finally:
        await queue.stop()
    got = {sub: await beats(queue, sub, at) for sub, at in (
        ("in", s1 - 100), ("edge", s1 - WINDOW_MS), ("out", s1 - WINDOW_MS - 1),
        ("long", s2 - 100), ("short", s3 - 100), ("better", s3 - 100), ("other", s3 - 100))}
    assert got == {"in": 1, "edge": 1, "out": 0, "long": 0, "short": 1, "better": 1,
                   "other": 0}
    assert (metrics.judged_legs, metrics.beats, metrics.why) == (7, 4, [])


async def test_a_leg_is_judged_once_and_counted_exactly_by_concurrent_workers(
        store: Store) -> None:
    """Two recorders (two workers) queue 5 x 40 accepted legs concurrently, then sweep the
    shared queue concurrently in small takes: every leg is judged by exactly one of them
    and each account gets exactly its 40 beats."""
    await store.apply(create("m1"))
    await store.apply(MarketUpdate(market="m1", selections={"h": {"price": 24000}}))
    moved = await entry_ms(store, "m1", 2)
    metrics = [RiskMetrics(), RiskMetrics()]
    queues = [recorder(store, m, limit=3) for m in metrics]
    for q in queues:
        q.start()
    try:
        subs = [f"acct-{i}" for i in range(5)]
        for n in range(40):
            for i, sub in enumerate(subs):
                accepted(queues[(n + i) % 2], sub, "m1", "h", moved - 1 - n)
        await asyncio.gather(*(asyncio.wait_for(q.drain(), 10) for q in queues))
        taken = await asyncio.gather(*(sweep_all(q) for q in queues))
    finally:
        for q in queues:
            await q.stop()
    assert sum(taken) == 200
    assert sum(m.judged_legs for m in metrics) == 200
    for sub in subs:
        counts = await queues[0].store.window(60, moved)  # type: ignore[attr-defined]
        assert as_map(counts[sub])["beat"] == 40
        assert as_map(counts[sub])["slips"] == 40


async def test_the_queue_is_capped_and_a_full_shard_refuses_new_legs(store: Store) -> None:
    """A push that would take a shard past max_due legs is refused whole and counted
    (due_full), the queued ones kept; a leg is not taken before its window ends."""
    due = DueQueue(store.client, shards=1, max_due=10)
    t = now_ms()
    legs = [(f"s{i}", [t]) for i in range(15)]
    assert [await due.push([DueGroup("m1", "h", 25000, 1, WINDOW_MS, legs[i:i + 5])])
            for i in (0, 5, 10)] == [0, 0, 5]
    assert await due.size() == 10
    assert await due.pop(t + WINDOW_MS - 1, 100) == []
    taken = await due.pop(t + WINDOW_MS, 100)
    assert sorted(sub for g in taken for sub, ats in g.accepted for _ in ats) == sorted(
        f"s{i}" for i in range(10))
    assert await due.size() == 0
    metrics = RiskMetrics()
    queue = recorder(store, metrics, max_due=4)
    queue.start()
    try:
        for i in range(6):
            accepted(queue, f"s{i}", "m1", "h", t)
            await asyncio.wait_for(queue.drain(), 10)
    finally:
        await queue.stop()
    assert metrics.why.count("due_full") == 2


async def test_a_member_in_the_earlier_form_is_still_judged(store: Store) -> None:
    """A beat-queue member queued by the previous release (one (sub, at_ms, due_ms) per
    leg) pops as one group per leg with that leg's window, and is judged like any other."""
    await store.apply(create("m1"))
    await store.apply(MarketUpdate(market="m1", fields={"status": "suspended"}))
    halted = await entry_ms(store, "m1", 2)
    legs = [["old-in", halted - 100, halted - 100 + WINDOW_MS],
            ["old-out", halted - WINDOW_MS - 1, halted - 1]]
    member = b"2|" + msgpack.packb([7, [["m1", "h", 25000, 1, legs]]])
    await store.client.zadd(due_key(0), {member: halted - 1})
    await store.client.incrby(count_key(0), 2)
    metrics = RiskMetrics()
    queue = recorder(store, metrics)
    assert await sweep_all(queue) == 2
    assert (await beats(queue, "old-in", halted - 100),
            await beats(queue, "old-out", halted - WINDOW_MS - 1)) == (1, 0)
    assert await queue.beat.due.size() == 0  # type: ignore[union-attr]
