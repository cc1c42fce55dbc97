"""The simulator: deterministic, realistic odds, every market life-cycle step, and the async
driver `oddsfeed run` uses."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import pytest

from oddsfeed.clock import now_ms
from oddsfeed.core.book import Rejected
from oddsfeed.core.model import MarketUpdate
from oddsfeed.core.prices import overround
from oddsfeed.store import Store, desk_markets
from oddsfeed_ingest.runner import FeedRunner
from oddsfeed_ingest.simulator import (
    MARKETS,
    SimulatorConfig,
    backed,
    backup_update,
    primary_out,
    run_simulator,
    updates_for,
)

from .conftest import until


def test_same_seed_same_updates() -> None:
    """The same seed gives the same updates; another seed gives others."""
    a = updates_for(SimulatorConfig(seed=4), 800)
    assert a == updates_for(SimulatorConfig(seed=4), 800)
    assert a != updates_for(SimulatorConfig(seed=5), 800)


@pytest.mark.parametrize("markets", [1, 3, len(MARKETS)])
def test_every_price_has_about_five_percent_margin(markets: int) -> None:
    """Every full set of prices the simulator sends has an overround near 1.05."""
    ups = updates_for(SimulatorConfig(seed=7, markets_per_event=markets), 1500)
    checked = 0
    for u in ups:
        prices = [s["price"] for s in u.selections.values() if "price" in s]
        if len(prices) >= 2:
            book = overround(prices)
            # clamped long shots (price ceilings) may shave the book a little
            assert Fraction(100, 100) < book < Fraction(107, 100), (u.market, prices)
            checked += 1
    assert checked > 100


def test_life_cycle_has_every_step() -> None:
    """Over a long run markets go in play with a bet delay, get suspended (goals), reopen,
    close and settle, and new events replace settled ones."""
    ups = updates_for(SimulatorConfig(seed=3, events=3), 4000)
    statuses = [u.fields.get("status") for u in ups]
    assert {"suspended", "open", "closed", "settled"} <= set(statuses)
    assert any(u.fields.get("in_play") is True and u.fields.get("bet_delay_ms", 0) > 0
               for u in ups)
    created = {u.market for u in ups if u.create}
    assert len(created) > 3 * 3  # replacement events were created
    seqs = [u.seq or 0 for u in ups]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)


def test_a_goal_moves_prices_sharply() -> None:
    """Reopening after a goal moves some 1x2 price by more than 20%."""
    ups = updates_for(SimulatorConfig(seed=11, events=1), 3000)
    last: dict[str, dict[str, int]] = {}
    jumps = []
    for u in ups:
        if not u.market.endswith(":1x2"):
            continue
        prices = {k: v["price"] for k, v in u.selections.items() if "price" in v}
        if prices and u.fields.get("status") == "open" and u.market in last:
            jumps.append(max(abs(prices[k] - last[u.market][k]) / last[u.market][k]
                             for k in prices))
        if prices:
            last[u.market] = {**last.get(u.market, {}), **prices}
    assert jumps
    assert max(jumps) > 0.2


async def test_simulated_updates_apply_cleanly(store: Store) -> None:
    """Simulated updates apply through the runner without a single rejection."""
    runner = FeedRunner(store, "simulator:test")
    for u in updates_for(SimulatorConfig(seed=2, events=2), 400):
        await runner.submit(u)
    assert runner.counts.get("rejected", 0) == 0
    assert runner.counts.get("bad", 0) == 0
    assert runner.counts["applied"] > 100
    assert len(await store.list_markets()) >= 6


async def test_run_simulator_stops_on_event(store: Store) -> None:
    """run_simulator writes through store.apply at the given rate and returns on stop."""
    stop = asyncio.Event()
    seen: list[Any] = []

    class Counting:
        async def apply(self, update: MarketUpdate) -> Any:
            seen.append(update)
            out = await store.apply(update)
            assert not isinstance(out, Rejected)
            return out

        async def apply_many(self, updates: Sequence[MarketUpdate]) -> list[Any]:
            return [await self.apply(u) for u in updates]

    start = now_ms()
    task = asyncio.create_task(run_simulator(Counting(), SimulatorConfig(rate_per_s=500),
                                             stop=stop, start_ms=start))
    await until(lambda: len(seen) > 40, what="simulated updates")
    stop.set()
    ticks = await asyncio.wait_for(task, 5)
    assert ticks > 0
    assert len(await store.list_markets()) == 4 * 3
    # a live feed's source stamps follow the wall clock, in order, never ahead of it
    stamps = [u.ts for u in seen]
    assert stamps == sorted(stamps)
    assert start <= stamps[0]
    assert stamps[-1] <= now_ms()


def test_bad_config_is_refused() -> None:
    """A simulator config with impossible values is refused."""
    with pytest.raises(ValueError, match="markets_per_event"):
        SimulatorConfig(markets_per_event=0)
    with pytest.raises(ValueError, match="rate_per_s"):
        SimulatorConfig(rate_per_s=0)


def test_backup_copies_and_outage_schedule() -> None:
    """The backup covers the configured share of events at slightly shorter prices, and the
    primary's outage is the last outage_s of every period."""
    cfg = SimulatorConfig(backup_every=2, outage_every_s=10, outage_s=3)
    ups = updates_for(cfg, 50)
    markets = {u.market for u in ups}
    covered = {m for m in markets if backed(cfg, m)}
    assert covered
    assert covered != markets
    assert not any(backed(SimulatorConfig(), m) for m in markets)
    first = next(u for u in ups if u.create)
    copy = backup_update(cfg, first)
    assert copy.source == "sim-backup:1"
    assert (copy.seq, copy.fields, copy.create) == (first.seq, first.fields, True)
    for sid, sel in copy.selections.items():
        assert sel["price"] < first.selections[sid]["price"]
    assert [primary_out(cfg, t) for t in (0, 6.9, 7, 9.9, 10, 17.5)] == [
        False, False, True, True, False, True]
    with pytest.raises(ValueError, match="outage_s"):
        SimulatorConfig(outage_s=5, outage_every_s=5)


async def test_backup_drives_during_primary_outages(store: Store) -> None:
    """Under run_simulator with a backup, a backed market's driver goes to the backup during
    a primary outage and back to the primary after it."""
    cfg = SimulatorConfig(events=2, rate_per_s=400, backup_every=1, outage_every_s=0.6,
                          outage_s=0.3)
    stop = asyncio.Event()
    task = asyncio.create_task(run_simulator(store, cfg, stop=stop, staleness_s=0.05))
    changes: dict[str, list[str | None]] = {}  # market -> its drivers, as they changed

    async def handed_back() -> bool:
        views = await desk_markets(store, [m.id for m in await store.list_markets()])
        for mid, v in views.items():
            seen = changes.setdefault(mid, [])
            if v is not None and (not seen or seen[-1] != v.driver):
                seen.append(v.driver)
        return any("sim-backup:1" in seen and "sim:1" in seen[seen.index("sim-backup:1"):]
                   for seen in changes.values())

    try:
        await until(handed_back, what="a market driven by the backup, then the primary")
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
