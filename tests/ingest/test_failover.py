"""Failover between two real feed runners on one market: the backup stands by while the
primary is live, drives while it is silent, and the market is suspended for silence only
when both are silent; whichever feed comes back first reopens it. The runners' clocks are
manual; the store's staleness is judged on its own clock, waited on with deadlines."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from oddsfeed.core.model import MarketUpdate
from oddsfeed.settings import load_settings
from oddsfeed.store import Store, desk_markets
from oddsfeed_ingest.main import run_adapter
from oddsfeed_ingest.normalised import normalize_message, to_message
from oddsfeed_ingest.replay import Recorder
from oddsfeed_ingest.runner import FeedRunner

from .conftest import ManualClock, until

STALE_S = 0.05


def msg(seq: int, price: float) -> MarketUpdate:
    """One provider message for market m1."""
    return normalize_message({"market": "m1", "event": "e1", "sport": "soccer", "name": "n",
                              "seq": seq, "selections": {"h": {"name": "H", "price": price}}})


async def server_ms(store: Store) -> int:
    """The store's clock, ms."""
    sec, us = await store.client.time()  # type: ignore[misc]
    return int(sec) * 1000 + int(us) // 1000


async def silent_past_staleness(store: Store) -> None:
    """Wait until the store's clock is past the staleness period from now."""
    start = await server_ms(store)
    await until(lambda: _after(store, start + int(STALE_S * 1000) + 2), what="store time")


async def _after(store: Store, t: int) -> bool:
    return await server_ms(store) > t


async def price_and_status(store: Store) -> tuple[int, str]:
    """Market m1's home price and status."""
    m = await store.get("m1")
    assert m is not None
    return m.selections["h"].price, m.status


async def driver(store: Store) -> str | None:
    """The feed driving m1, as the desk view says."""
    view = (await desk_markets(store, ["m1"]))["m1"]
    assert view is not None
    return view.driver


async def test_backup_takes_over_and_hands_back(store: Store, clock: ManualClock) -> None:
    """Standby while the primary is live (counted, source alive), the backup drives while
    the primary is silent, the primary's sweep leaves the market to the backup, the
    primary wins again at once, and with both silent the backup's sweep suspends the
    market, which the primary's next update reopens."""
    primary = FeedRunner(store, "prov:p", staleness_s=STALE_S, clock=clock)
    backup = FeedRunner(store, "prov:b", staleness_s=STALE_S, clock=clock, priority=1)
    await primary.submit(msg(1, 2.0))
    await backup.submit(msg(1, 2.1))
    assert backup.counts == {"standby": 1}
    assert await price_and_status(store) == (20000, "open")
    assert await driver(store) == "prov:p"

    await silent_past_staleness(store)
    await backup.submit(msg(2, 2.2))
    assert await price_and_status(store) == (22000, "open")
    assert await driver(store) == "prov:b"
    clock.advance(1)
    assert await primary.check_staleness() == ["m1"]  # yields: the backup is live
    assert await price_and_status(store) == (22000, "open")

    await primary.submit(msg(2, 2.3))
    assert await price_and_status(store) == (23000, "open")
    assert await driver(store) == "prov:p"
    await backup.submit(msg(3, 2.4))
    assert backup.counts["standby"] == 2

    await silent_past_staleness(store)
    clock.advance(1)
    assert await backup.check_staleness() == ["m1"]
    assert await price_and_status(store) == (23000, "suspended")
    await primary.submit(msg(3, 2.5))
    assert await price_and_status(store) == (25000, "open")


async def test_priority_option(store: Store, tmp_path: Path) -> None:
    """`--priority` reaches the runner (and the store's view of the feed); a priority out
    of 0-1000 is refused before anything runs."""
    path = tmp_path / "feed.jsonl"
    with path.open("w") as fh:
        Recorder(fh)("simulator", to_message(msg(1, 2.0)))
    cfg = load_settings(None, {}, {"ingest.mapping_file": str(tmp_path / "none.toml")})
    runner = await run_adapter("replay", {"file": str(path), "speed": 0, "priority": 2},
                               store, cfg, stop=asyncio.Event())
    assert runner.priority == 2
    view = (await desk_markets(store, ["m1"]))["m1"]
    assert view is not None
    assert [(f.source, f.priority) for f in view.feeds] == [("replay:1", 2)]
    with pytest.raises(ValueError, match="priority must be 0-1000, got 1001"):
        await run_adapter("replay", {"file": str(path), "priority": 1001}, store, cfg,
                          stop=asyncio.Event())
