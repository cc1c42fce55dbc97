"""Lanes: concurrent apply across markets with per-market order kept, what waits in a lane
applied as one batch, bounded queues, and errors handed back to the producer."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import pytest

from oddsfeed.core.errors import StoreError
from oddsfeed.core.model import MarketUpdate
from oddsfeed.store import Store
from oddsfeed_ingest.normalised import normalize_message
from oddsfeed_ingest.runner import FeedRunner, Lanes


def upd(market: str, seq: int) -> MarketUpdate:
    return normalize_message({"market": market, "event": "e", "sport": "s", "name": "n",
                              "seq": seq,
                              "selections": {"h": {"name": "H", "price": 2 + seq / 1000}}})


class Batches:
    """The store, keeping each apply_many batch's (market, seq) pairs."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.batches: list[list[tuple[str, int | None]]] = []

    async def apply(self, update: MarketUpdate) -> Any:
        return await self.store.apply(update)

    async def apply_many(self, updates: Sequence[MarketUpdate]) -> list[Any]:
        self.batches.append([(u.market, u.seq) for u in updates])
        return await self.store.apply_many(updates)


async def test_lanes_keep_per_market_order(store: Store) -> None:
    """Updates interleaved over many markets all apply in batches, each market's in its
    own order, no batch larger than the bound."""
    rng = random.Random(2)
    plan = [(f"m{rng.randrange(12)}", i + 1) for i in range(600)]
    spy = Batches(store)
    runner = FeedRunner(spy, "replay:lanes")
    lanes = Lanes(runner.submit_many, lanes=4, depth=16, batch=8)
    for market, seq in plan:
        await lanes.put(upd(market, seq))
    await lanes.close()
    assert runner.counts == {"applied": 600}
    assert sum(map(len, spy.batches)) == 600
    assert max(map(len, spy.batches)) == 8
    assert len(spy.batches) < 600 / 4
    for market in {m for m, _ in plan}:  # in put order, market by market, batch after batch
        assert [s for b in spy.batches for m, s in b if m == market] == [
            s for m, s in plan if m == market]
    for market in {m for m, _ in plan}:
        seqs = [s for m, s in plan if m == market]
        got = await store.get(market)
        assert got is not None
        assert got.version == len(seqs)
        assert got.selections["h"].price == 20000 + 10 * seqs[-1]


async def test_a_full_lane_makes_put_wait() -> None:
    """put waits while the market's lane is full: nothing queues without bound (at most
    ``depth`` waiting besides the batch being applied)."""
    gate = asyncio.Event()
    started: list[list[int | None]] = []

    async def slow(batch: list[MarketUpdate]) -> None:
        started.append([u.seq for u in batch])
        await gate.wait()

    lanes = Lanes(slow, lanes=1, depth=2, batch=2)
    for i in range(4):  # two being applied, two waiting
        await lanes.put(upd("x", i + 1))
    blocked = asyncio.create_task(lanes.put(upd("x", 9)))
    for _ in range(20):  # let the loop run the lane and the waiting put
        await asyncio.sleep(0)
    assert not blocked.done()
    assert started == [[1, 2]]
    gate.set()
    await asyncio.wait_for(blocked, 5)
    await lanes.close()
    assert started == [[1, 2], [3, 4], [9]]


async def test_lane_errors_reach_the_producer() -> None:
    """A store error in a lane is raised by the next put or by close."""

    async def failing(batch: list[MarketUpdate]) -> None:
        raise StoreError("down")

    lanes = Lanes(failing, lanes=2)
    await lanes.put(upd("a", 1))
    with pytest.raises(StoreError):
        await lanes.close()
