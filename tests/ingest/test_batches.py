"""FeedRunner.submit_many: the outcomes, counts, health bookkeeping and store state of
submitting each update in turn, with the writes in pipelined Store.apply_many round trips;
a store failure mid-batch is retried without applying anything twice."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest

from oddsfeed.core.book import Changed, Created, NoOp, Rejected
from oddsfeed.core.errors import StoreError
from oddsfeed.core.model import Market, MarketUpdate
from oddsfeed.store import OutOfOrder, Store
from oddsfeed.store.codec import history_key
from oddsfeed_ingest.normalised import normalize_message
from oddsfeed_ingest.runner import FeedRunner

from .conftest import ManualClock

MARKETS = ("m1", "m2", "m3", "m4")


def msg(market: str, seq: int | None, price: float = 2.0, **extra: Any) -> MarketUpdate:
    """A full message (creates the market when new) with a seq, or without one (and no ts)."""
    m = {"market": market, "event": "e1", "sport": "soccer", "name": "n",
         "selections": {"h": {"name": "H", "price": price}}, **extra}
    if seq is not None:
        m["seq"] = seq
    return normalize_message(m)


class Spy:
    """The store, counting apply_many calls and their sizes."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.batches: list[int] = []

    async def apply(self, update: MarketUpdate) -> Any:
        return await self.store.apply(update)

    async def apply_many(self, updates: Sequence[MarketUpdate]) -> list[Any]:
        self.batches.append(len(updates))
        return await self.store.apply_many(updates)


class Flaky(Spy):
    """The store, whose first apply_many applies the first ``applied`` updates (None: all
    of them, the reply is lost) and then fails, as a connection breaking mid-pipeline."""

    def __init__(self, store: Store, applied: int | None) -> None:
        super().__init__(store)
        self.applied = applied
        self.failed = False

    async def apply_many(self, updates: Sequence[MarketUpdate]) -> list[Any]:
        if not self.failed:
            self.failed = True
            n = len(updates) if self.applied is None else self.applied
            await self.store.apply_many(updates[:n])
            raise StoreError("connection reset mid-pipeline")
        return await super().apply_many(updates)


async def no_sleep(s: float) -> None:
    return None


def setup() -> list[MarketUpdate]:
    """Markets m1..m4 created, m4 with a second price."""
    return [msg(m, 10 * i + 1) for i, m in enumerate(MARKETS)] + [msg("m4", 32, 2.2)]


def batch() -> list[MarketUpdate]:
    """One batch after m1, m2 and m3 were suspended for staleness: reopenings (by a new
    price, by a duplicate, not by a provider's own suspension), duplicates and late seqs,
    rejected updates between good ones, and updates without a seq."""
    return [
        msg("m1", 2, 2.5),  # reopens m1 with its new price
        msg("m2", 12, 2.8, status="suspended"),  # the provider suspends m2 ...
        msg("m4", 33, 2.3),
        msg("m1", 3, 2.6),
        MarketUpdate(market="ghost", selections={"h": {"price": 30000}}, seq=5),  # unknown
        msg("m2", 13, 2.9),  # ... so this one must not reopen it
        msg("m3", 21),  # a duplicate: out of order, still reopens m3
        msg("m4", 33, 2.4),  # a duplicate seq: out of order
        msg("m4", 31, 2.4),  # an older seq: out of order
        msg("m3", 22, 3.1),
        normalize_message({"market": "m4", "event": "other", "sport": "soccer", "name": "n",
                           "seq": 34}),  # rejected: an event cannot change
        msg("m4", None, 4.0),  # no seq: absolute prices
        msg("m4", None, 4.5),
        msg("m4", 35, 5.0),
        msg("m5", None, 6.0),  # a new market without a seq
    ]


def plain(m: Market | None) -> Any:
    """A market without what differs between two runs (epoch, apply time)."""
    return None if m is None else {**dataclasses.asdict(m), "epoch": "", "ts": 0}


def kind(outcome: Any) -> Any:
    """An outcome without what differs between two runs."""
    if isinstance(outcome, (Created, Changed, NoOp)):
        return type(outcome).__name__, plain(outcome.market)
    if isinstance(outcome, Rejected):
        return "Rejected", outcome.reason, outcome.path
    if isinstance(outcome, OutOfOrder):
        return "OutOfOrder", outcome.last_seq
    return outcome


async def run(store: Store, clock: ManualClock, *, batched: bool) -> dict[str, Any]:
    spy = Spy(store)
    runner = FeedRunner(spy, "feed:b", staleness_s=10, clock=clock)
    for u in setup():
        await runner.submit(u)
    clock.advance(5)
    await runner.submit(msg("m4", 32, 2.2))  # m4 heard from again: not stale below
    clock.advance(6)
    assert sorted(await runner.check_staleness()) == ["m1", "m2", "m3"]
    clock.advance(1)
    if batched:
        outcomes = await runner.submit_many(batch())
    else:
        outcomes = [await runner.submit(u) for u in batch()]
    ids = [*MARKETS, "m5", "ghost"]
    markets = await store.get_many(ids)
    history = {m: await store.client.xlen(history_key(m)) for m in ids}
    await store.client.flushall()
    return {"outcomes": [kind(o) for o in outcomes], "counts": runner.counts,
            "status": runner.status, "auto_suspended": runner.auto_suspended,
            "last_seen": runner.last_seen, "lag_s": runner.lag_s,
            "markets": {m: plain(x) for m, x in markets.items()}, "history": history,
            "batches": spy.batches}


async def test_submit_many_is_submit_one_by_one(store: Store) -> None:
    """Outcomes, counts, health state and the markets (versions, prices, status, history)
    are those of submitting each update in turn; the writes take few round trips."""
    one = await run(store, ManualClock(), batched=False)
    many = await run(store, ManualClock(), batched=True)
    assert one["batches"] == []
    for key in ("outcomes", "counts", "status", "auto_suspended", "last_seen", "lag_s",
                "markets", "history"):
        assert many[key] == one[key], key
    # what the batch did, to be sure it was the case described
    out = many["outcomes"]
    assert [o[0] for o in out] == [
        "Changed", "Changed", "Changed", "Changed", "Rejected", "Changed", "OutOfOrder",
        "OutOfOrder", "OutOfOrder", "Changed", "Rejected", "Changed", "Changed", "Changed",
        "Created"]
    ms = many["markets"]
    assert (ms["m1"]["status"], ms["m1"]["selections"]["h"]["price"]) == ("open", 26000)
    assert (ms["m2"]["status"], ms["m2"]["selections"]["h"]["price"]) == ("suspended", 29000)
    assert (ms["m3"]["status"], ms["m3"]["selections"]["h"]["price"]) == ("open", 31000)
    assert ms["m4"]["selections"]["h"]["price"] == 50000
    assert ms["ghost"] is None
    assert many["auto_suspended"] == set()
    assert many["counts"] == {"applied": 15, "out_of_order": 4, "rejected": 2}
    # a round trip ends before a second update of a market waiting to be reopened (m1,
    # m4), a seq not above the market's last in it (m4), and around an update without a
    # seq followed by another of its market (m4)
    assert many["batches"] == [3, 5, 3, 1, 1, 2]


async def test_a_batch_is_one_round_trip(store: Store) -> None:
    """Updates over many markets with rising seqs go to the store in one apply_many."""
    spy = Spy(store)
    runner = FeedRunner(spy, "feed:one")
    updates = [msg(f"r{i % 10}", i + 1, 2 + i / 100) for i in range(50)]
    outcomes = await runner.submit_many(updates)
    assert spy.batches == [50]
    assert [type(o) for o in outcomes] == [Created] * 10 + [Changed] * 40
    assert runner.counts == {"applied": 50}
    assert await runner.submit_many([]) == []
    assert spy.batches == [50]


@pytest.mark.parametrize("applied", [0, 3, 7, None], ids=["none", "3", "7", "all"])
async def test_a_failed_batch_is_retried_without_applying_twice(store: Store,
                                                                applied: int | None) -> None:
    """The store fails after applying part (or all) of a batch: the runner retries the
    batch, and every market ends at the state and version of applying it once, with
    nothing applied or published twice (history holds one entry per version)."""
    spy = Flaky(store, applied)
    runner = FeedRunner(spy, "feed:retry", sleep=no_sleep)
    updates = [msg(m, 10 * i + 1) for i, m in enumerate(("x1", "x2", "x3"))]
    updates += [msg("x1", 2, 2.1), msg("x2", 12, 2.2), msg("x1", 3, 2.3), msg("x3", 22, 2.4),
                msg("x2", 13, 2.5), msg("x1", 4, 2.6),
                # rejected (z is unknown), then z created with a lower seq: a repeat of the
                # rejected one after the creation would apply
                MarketUpdate(market="z", selections={"h": {"price": 90000}}, seq=5),
                msg("z", 4, 3.0),
                msg("y", None, 3.0), msg("y", None, 3.5)]  # no seq: must not be repeated
    outcomes = await runner.submit_many(updates)
    assert spy.failed
    assert spy.batches == [10, 2, 1]  # the failed attempt was the first 10 updates
    assert len(outcomes) == len(updates)
    want = {"x1": (4, 26000), "x2": (3, 25000), "x3": (2, 24000), "z": (1, 30000),
            "y": (2, 35000)}
    for mid, (version, price) in want.items():
        m = await store.get(mid)
        assert m is not None
        assert (m.version, m.selections["h"].price) == (version, price), mid
        assert await store.client.xlen(history_key(mid)) == version, mid
    # what the failed attempt applied is out of order on the retry, the rest is applied
    done = 9 if applied is None else min(applied, 9)
    assert runner.counts.get("out_of_order", 0) == done
    assert runner.counts["rejected"] == 1
    assert runner.counts["applied"] + runner.counts.get("noop", 0) == len(updates) - done - 1


async def test_a_store_that_stays_down_raises(store: Store) -> None:
    """After the retries the StoreError reaches the caller, counted once."""

    class Down(Spy):
        async def apply_many(self, updates: Sequence[MarketUpdate]) -> list[Any]:
            self.batches.append(len(updates))
            raise StoreError("down")

    spy = Down(store)
    runner = FeedRunner(spy, "feed:down", sleep=no_sleep)
    with pytest.raises(StoreError):
        await runner.submit_many([msg("d", 1), msg("d", 2)])
    assert spy.batches == [2] * 6
    assert runner.counts == {"store_error": 1}


async def test_suspended_while_in_flight_stays_marked(store: Store,
                                                      clock: ManualClock) -> None:
    """A market suspended for staleness while its update is on its way to the store stays
    marked as suspended by the runner, so the next update reopens it."""
    runner: FeedRunner

    class Slow(Spy):
        async def apply_many(self, updates: Sequence[MarketUpdate]) -> list[Any]:
            out = await self.store.apply_many(updates)
            clock.advance(11)
            assert await runner.check_staleness() == ["s"]  # the watcher runs meanwhile
            return out

    runner = FeedRunner(Slow(store), "feed:s", staleness_s=10, clock=clock)
    await runner.submit(msg("s", 1))
    await runner.submit_many([msg("s", 2, 2.5)])
    assert runner.auto_suspended == {"s"}
    m = await store.get("s")
    assert m is not None
    assert m.status == "suspended"
    await runner.submit(msg("s", 3, 2.6))
    m = await store.get("s")
    assert m is not None
    assert m.status == "open"
    assert runner.auto_suspended == set()
