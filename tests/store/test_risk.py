"""The risk store adapter on a real Valkey (single server and cluster): stale times from
the history stream, exact rolling counts under concurrency, bounded memory."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import pytest

from oddsfeed.clock import now_ms
from oddsfeed.core.model import MarketUpdate
from oddsfeed.core.risk import ZERO, add, as_map, slip_counts
from oddsfeed.core.wire import Leg
from oddsfeed.services.risk import Beat, RiskQueue, stale_ms_of
from oddsfeed.store import RiskCounts, Store
from oddsfeed.store.codec import history_key, unpack
from oddsfeed.store.risk import bucket_key
from tests.riskports import RiskMetrics

CREATE = {"fields": {"event": "e1", "sport": "soccer", "name": "A v B"},
          "selections": {"h": {"name": "Home", "price": 25000},
                         "a": {"name": "Away", "price": 30000}}, "create": True}
def ahead() -> int:
    """"Now" for the adds: a minute ahead of the real clock (Valkey expires buckets by its
    own clock, so none of the window's buckets may expire during the test), on a 5 s
    boundary."""
    return (now_ms() // 5000 + 12) * 5000


def counts_of(store: Store, **kw: Any) -> RiskCounts:
    args: dict[str, Any] = {"windows_s": [60, 3600], "buckets": 12, "max_accounts": 1000,
                            "history_scan": 200, **kw}
    return RiskCounts(store.client, **args)


async def entry_ms(store: Store, mid: str, version: int) -> int:
    ((_id, fields),) = await store.client.xrange(history_key(mid), f"{version}-0",
                                                 f"{version}-0")
    return int(unpack(fields[b"d"])["t"]) // 1000


async def test_stale_ms_is_read_from_the_history_timestamps(store: Store) -> None:
    """A rejected leg's stale_ms is the validation time minus the history time of the
    version that replaced its price (or, for a suspension, of the suspension)."""
    await store.apply(MarketUpdate(market="m1", **CREATE))  # type: ignore[arg-type]
    await store.apply(MarketUpdate(market="m1", selections={"h": {"price": 26000}}))  # v2
    await store.apply(MarketUpdate(market="m1", selections={"a": {"price": 31000}}))  # v3
    await store.apply(MarketUpdate(market="m1", fields={"status": "suspended"}))  # v4
    v2, v3, v4 = [await entry_ms(store, "m1", v) for v in (2, 3, 4)]
    legs = [Leg("m1", "h", 25000, version=1), Leg("m1", "h", 25000),
            Leg("m1", "a", 30000, version=2), Leg("m1", "h", 26000), Leg("m9", "h", 25000),
            Leg("m1", "h", 26000, version=3)]
    verdicts = [{"ok": False, "reason": "price_changed"}, {"ok": False, "reason": "price_changed"},
                {"ok": False, "reason": "market_changed"},
                {"ok": False, "reason": "market_suspended"},
                {"ok": False, "reason": "unknown_market"}, {"ok": True}]
    at = v4 + 1234
    got = await stale_ms_of(counts_of(store), legs, verdicts, at)
    assert got == [at - v2, at - v2, at - v3, at - v4, None, None]


async def test_counts_are_exact_under_concurrent_adds(store: Store) -> None:
    """Hundreds of concurrent adds from several accounts, over several buckets of one
    window, sum exactly; a bucket older than the window is left out."""
    t0 = ahead()
    risk = counts_of(store)
    one = slip_counts([{"ok": True}, {"ok": False, "reason": "price_changed"}], [None, 100])
    subs = [f"acct-{i}" for i in range(5)]
    # 60 s window, 12 buckets of 5 s: t0 - 55 s is the oldest bucket still in the window.
    times = [t0, t0 - 1, t0 - 30_000, t0 - 55_000]
    await asyncio.gather(*(risk.add(sub, one, at) for sub in subs for at in times
                           for _ in range(10)))
    await risk.add(subs[0], one, t0 - 60_000)  # one bucket too old for the 60 s window
    window = await risk.window(60, t0)
    assert sorted(window) == subs
    for sub in subs:
        c = as_map(window[sub])
        assert (c["slips"], c["legs"], c["accepted"], c["stale_lt250ms"]) == (40, 80, 40, 40)
        assert as_map(await risk.account(sub, 60, t0) or ()) == c
    hour = await risk.window(3600, t0)  # 12 buckets of 5 min: t0 - 60 s is inside
    assert as_map(hour[subs[0]])["slips"] == 41
    assert await risk.account("nobody", 60, t0) is None


async def test_memory_is_bounded_by_the_bucket_cap_and_expiry(store: Store) -> None:
    """A bucket holds at most max_accounts accounts (others are refused, not stored), every
    bucket expires once no window reads it, and a bucket already out of every window is
    gone at once."""
    t0 = ahead()
    risk = counts_of(store, windows_s=[60], max_accounts=100)
    one = slip_counts([{"ok": True}], [None])
    added = await asyncio.gather(*(risk.add(f"s{i}", one, t0) for i in range(300)))
    assert sum(added) == 100
    key = bucket_key(60, t0 // 5000)
    assert await store.client.hlen(key) == 100
    expire_at = await store.client.execute_command("PEXPIRETIME", key)
    assert expire_at == (t0 // 5000 + 13) * 5000  # 13 buckets of 5 s after its own
    usage = await store.client.memory_usage(key)
    assert usage is not None
    assert usage < 100 * 120  # bytes: 100 accounts with their 1-slip counts
    await risk.add("late", one, t0 - 3_600_000)  # a bucket no window reads any more
    assert not await store.client.exists(bucket_key(60, (t0 - 3_600_000) // 5000))


async def test_a_batch_of_interleaved_accounts_and_grains_is_counted_exactly(
        store: Store) -> None:
    """One recorder batch of slips from interleaved accounts, across time grains, with one
    and several legs, all accepted or with rejected legs, adds per account and bucket
    exactly what slip_counts adds slip by slip."""
    t0 = ahead()
    risk = counts_of(store, windows_s=[60])
    queue = RiskQueue(risk, RiskMetrics(), max_pending=100_000, linger_s=0.05)
    queue.start()
    ok = {"ok": True, "price": 2.5, "version": 1}
    bad = {"ok": False, "reason": "unknown_market"}
    expected: dict[tuple[str, int], tuple[int, ...]] = {}
    try:
        for n in range(300):
            sub = ("a", "b", "a", "c")[n % 4]
            at = t0 + (n // 7) * 1000  # 43 s: runs of one grain (5 s) broken by accounts
            legs = [ok] * (1 + n % 3) if n % 5 else [ok, bad]
            body = {"ok": all(v["ok"] for v in legs), "legs": legs}
            queue.offer(sub, [Leg("m1", "h", 25000)] * len(legs), body, at)
            key = (sub, at // 5000)
            expected[key] = add(expected.get(key, ZERO), slip_counts(legs, [None] * len(legs)))
        await asyncio.wait_for(queue.drain(), 10)
    finally:
        await queue.stop()
    for (sub, grain), counts in expected.items():
        got = await store.client.hget(bucket_key(60, grain), sub)  # bucket = grain here
        assert got is not None
        assert add(msgpack.unpackb(got), ()) == counts


async def test_the_debug_parts_run_only_their_share_of_the_recorder(store: Store) -> None:
    """With ``parts`` "offer" or "fold" a batch is taken and nothing is written; with
    "writes" the counts are written and no sweeper runs; an unknown part is refused."""
    t0 = ahead()
    ok = {"ok": True, "legs": [{"ok": True, "price": 2.5, "version": 1}]}
    for parts, written in (("offer", False), ("fold", False), ("writes", True)):
        sub = f"parts-{parts}"
        queue = RiskQueue(counts_of(store, windows_s=[60]), RiskMetrics(), max_pending=10,
                          linger_s=0.01, parts=parts)
        queue.start()
        try:
            queue.offer(sub, [Leg("m1", "h", 25000)], ok, t0)
            await asyncio.wait_for(queue.drain(), 10)
            assert queue._sweeper is None
        finally:
            await queue.stop()
        got = await store.client.hget(bucket_key(60, t0 // 5000), sub)
        assert (got is not None) == written, parts
    with pytest.raises(ValueError, match="parts 'sweeps'"):
        RiskQueue(counts_of(store), RiskMetrics(), max_pending=10, parts="sweeps")


def test_one_leg_slips_and_other_slips_fold_into_the_same_beat_groups() -> None:
    """The one-leg fast path of ``offer`` queues each accepted leg under the same group and
    time as the general path does (a group's times in any order: the beat queue takes
    their latest), and the batch counts every slip once."""
    queue = RiskQueue(counts_of_grain(5000), RiskMetrics(), max_pending=1000,
                      beat=Beat(None, 1000, 500, 100), clock=now_ms)  # type: ignore[arg-type]
    t0 = 1_000_000_000_000
    ok = {"ok": True, "price": 2.5, "version": 3}
    expected: dict[tuple[Any, ...], list[int]] = {}
    for n in range(60):
        sub, at = ("a", "b")[n % 2], t0 + n * 300
        verdicts = [ok] * (1 + n % 3) if n % 5 else [ok, {"ok": False, "reason": "x"}]
        legs = [Leg(f"m{n % 4}", "h", 25000 + n % 3)] * len(verdicts)
        body = {"ok": all(v["ok"] for v in verdicts), "legs": verdicts}
        queue.offer(sub, legs, body, at)
        for leg, v in zip(legs, verdicts, strict=True):
            if v["ok"]:
                key = (leg.market, leg.selection, leg.price, 2.5, 3, sub)
                expected.setdefault(key, []).append(at)
    batch = queue._batch
    assert batch.slips == 60
    assert {k: sorted(v) for k, v in batch.fold().items()} == expected  # order: irrelevant
    slips = sum(total[0] for _, total in batch.totals.values())
    assert slips == 60


def counts_of_grain(grain_ms: int) -> Any:
    """A store stand-in that only tells the recorder its time grain (nothing is written)."""
    return type("Grain", (), {"grain_ms": grain_ms})()
