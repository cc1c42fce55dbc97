"""Replay and record: original timing, speed-up, as fast as possible, determinism, and
recordings of every provider shape."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest

from oddsfeed.core.errors import ProviderDataError
from oddsfeed.core.model import MarketUpdate
from oddsfeed.store import Store
from oddsfeed_ingest.normalised import to_message
from oddsfeed_ingest.replay import Normalizer, Recorder, replay
from oddsfeed_ingest.runner import FeedRunner
from oddsfeed_ingest.simulator import SimulatorConfig, updates_for

from .conftest import FIXTURES


def _lines(ts: list[int]) -> list[str]:
    return [json.dumps({"t": t, "provider": "push", "msg": {
        "market": "m1", "selections": {"h": {"price": 2}}, "seq": i + 1}})
        for i, t in enumerate(ts)]


class Sleeps:
    """An injected sleep that records what it was asked to wait."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, s: float) -> None:
        self.calls.append(s)


async def _drop(update: MarketUpdate) -> None:
    return None


async def test_original_timing_and_speed() -> None:
    """Replay keeps the recorded gaps, divides them by the speed, and waits for nothing at
    speed 0."""
    lines = _lines([5_000, 6_000, 6_000, 9_000])
    sleeps = Sleeps()
    assert await replay(lines, _drop, lambda e: None, speed=1, sleep=sleeps) == 4
    assert sleeps.calls == [1.0, 3.0]
    sleeps.calls.clear()
    await replay(lines, _drop, lambda e: None, speed=10, sleep=sleeps)
    assert sleeps.calls == pytest.approx([0.1, 0.3])
    sleeps.calls.clear()
    await replay(lines, _drop, lambda e: None, speed=0, sleep=sleeps)
    assert sleeps.calls == []


async def test_timing_never_goes_backwards() -> None:
    """A record stamped earlier than the one before it is replayed at once, not waited for
    twice."""
    sleeps = Sleeps()
    await replay(_lines([0, 2_000, 1_000, 3_000]), _drop, lambda e: None, speed=1,
                 sleep=sleeps)
    assert sleeps.calls == [2.0, 1.0]


async def test_stop_ends_replay_early() -> None:
    """A set stop event ends the replay before the next record."""
    stop = asyncio.Event()
    got: list[MarketUpdate] = []

    async def submit(u: MarketUpdate) -> None:
        got.append(u)
        stop.set()

    assert await replay(_lines([0, 1, 2]), submit, lambda e: None, speed=0, stop=stop) == 1


async def test_replay_is_deterministic(store: Store, redis_client: Any) -> None:
    """Replaying a simulator recording twice from scratch yields the same markets, and a
    second replay on top changes nothing."""
    buf = io.StringIO()
    rec = Recorder(buf, clock=lambda: 1_800_000_000.0)
    for u in updates_for(SimulatorConfig(seed=9, events=2), 300):
        rec("simulator", to_message(u))
    lines = buf.getvalue().splitlines()

    async def state() -> list[dict[str, Any]]:
        out = []
        for m in await store.list_markets():
            d = m.to_store()
            d.pop("epoch")
            out.append(d)
        return out

    runner = FeedRunner(store, "replay:1")
    n = await replay(lines, runner.submit, runner.bad, speed=0)
    assert n == len(lines)
    assert runner.counts.get("bad", 0) == 0
    first = await state()
    again = FeedRunner(store, "replay:1")
    await replay(lines, again.submit, again.bad, speed=0)
    assert again.counts["out_of_order"] == n
    assert await state() == first
    await redis_client.flushall()
    fresh = FeedRunner(store, "replay:1")
    await replay(lines, fresh.submit, fresh.bad, speed=0)
    assert await state() == first


async def test_fixture_recording_of_every_provider(store: Store) -> None:
    """A recording mixing push, Odds API and Betfair stream messages replays into markets."""
    lines = (FIXTURES / "mixed.jsonl").read_text().splitlines()
    runner = FeedRunner(store, "replay:fx")
    sleeps = Sleeps()
    await replay(lines, runner.submit, runner.bad, speed=2,
                 normalizer=Normalizer(bookmaker="book1"), sleep=sleeps)
    assert runner.counts.get("bad", 0) == 0
    assert sum(sleeps.calls) == pytest.approx(1.5)  # 3 s of recording at speed 2
    ids = {m.id for m in await store.list_markets()}
    assert ids == {"p1", "ev9:h2h", "1.23"}
    bf = await store.get("1.23")
    assert bf is not None
    assert bf.selections["101"].price == 31000


def test_unknown_provider_in_recording_is_bad_data() -> None:
    """A record naming a provider we have no normaliser for is bad provider data."""
    with pytest.raises(ProviderDataError):
        Normalizer()({"t": 0, "provider": "acme", "msg": {}})


def test_recorder_writes_json_lines(tmp_path: Path) -> None:
    """The recorder writes one compact JSON object per line with t in milliseconds."""
    path = tmp_path / "r.jsonl"
    with path.open("w") as fh:
        Recorder(fh, clock=lambda: 12.5)("oddsapi", {"id": "x"})
    assert json.loads(path.read_text()) == {"t": 12500, "provider": "oddsapi",
                                            "msg": {"id": "x"}}
