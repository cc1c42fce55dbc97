"""Lanes: concurrent apply across markets with per-market order kept, bounded queues, and
errors handed back to the producer."""

from __future__ import annotations

import asyncio
import random

import pytest

from ingest.normalised import normalize_message
from ingest.runner import FeedRunner, Lanes
from oddsfeed.errors import StoreError
from oddsfeed.model import MarketUpdate
from oddsfeed.store import Store


def upd(market: str, seq: int) -> MarketUpdate:
    return normalize_message({"market": market, "event": "e", "sport": "s", "name": "n",
                              "seq": seq,
                              "selections": {"h": {"name": "H", "price": 2 + seq / 1000}}})


async def test_lanes_keep_per_market_order(store: Store) -> None:
    """Updates interleaved over many markets all apply, each market's in its own order."""
    rng = random.Random(2)
    plan = [(f"m{rng.randrange(12)}", i + 1) for i in range(600)]
    runner = FeedRunner(store, "replay:lanes")
    lanes = Lanes(runner.submit, lanes=4, depth=8)
    for market, seq in plan:
        await lanes.put(upd(market, seq))
    await lanes.close()
    assert runner.counts.get("out_of_order", 0) == 0
    for market in {m for m, _ in plan}:
        seqs = [s for m, s in plan if m == market]
        got = await store.get(market)
        assert got is not None
        assert got.version == len(seqs)
        assert got.selections["h"].price == 20000 + 10 * seqs[-1]


async def test_a_full_lane_makes_put_wait() -> None:
    """put waits while the market's lane is full: nothing queues without bound."""
    gate = asyncio.Event()
    started: list[str] = []

    async def slow(u: MarketUpdate) -> None:
        started.append(u.market)
        await gate.wait()

    lanes = Lanes(slow, lanes=1, depth=2)
    for i in range(3):  # one being applied, two waiting
        await lanes.put(upd("x", i + 1))
    blocked = asyncio.create_task(lanes.put(upd("x", 9)))
    for _ in range(20):  # let the loop run the lane and the waiting put
        await asyncio.sleep(0)
    assert not blocked.done()
    gate.set()
    await asyncio.wait_for(blocked, 5)
    await lanes.close()
    assert len(started) == 4


async def test_lane_errors_reach_the_producer() -> None:
    """A store error in a lane is raised by the next put or by close."""

    async def failing(u: MarketUpdate) -> None:
        raise StoreError("down")

    lanes = Lanes(failing, lanes=2)
    await lanes.put(upd("a", 1))
    with pytest.raises(StoreError):
        await lanes.close()
