"""The fan-out worker runs the collector's middle generation while idle (oddsfeed.fanout.server)."""

from __future__ import annotations

import asyncio
import gc

import pytest

from .conftest import WorkerFactory


async def test_an_idle_worker_collects_the_middle_generation(
        start_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle fan-out worker runs generation 1 itself (once a second at most) when a young
    collection happened since the last one, so that a loaded loop does not pay for it."""
    from oddsfeed.fanout import server as server_module

    calls: list[int] = []
    real_collect = gc.collect

    def collect(generation: int = 2) -> int:
        calls.append(generation)
        return real_collect(generation)

    monkeypatch.setattr(server_module.gc, "collect", collect)
    async with start_worker() as w:
        assert w.fanout.policy.busy < server_module.IDLE_GC_BUSY
        real_collect(0)  # a young collection: generation 1 now has something to look at
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while 1 not in calls and loop.time() < deadline:
            await asyncio.sleep(0.1)
        assert 1 in calls


async def test_a_worker_that_just_got_busy_does_not_collect(
        start_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The smoothed busy share lags behind a load that just started: a worker whose last
    tick was busy does not run the (long, after a ramp) idle collection, even though the
    smoothed share is still low; the next idle tick does, and not twice within a second."""
    from oddsfeed.fanout import server as server_module

    calls: list[int] = []
    real_collect = gc.collect
    monkeypatch.setattr(server_module.gc, "collect", lambda generation=2: calls.append(
        generation) or 0)
    async with start_worker() as w:
        fan = w.fanout
        real_collect(0)  # generation 1 has something to look at
        # no await between setting the state and the decision: the ticker cannot interleave
        fan.policy.busy = 0.0
        fan._idle_gc_at = -10.0
        fan.policy.adapt(0.06, 0.1, 0.0)  # a tick 60% busy: smoothed 0.18, under the threshold
        assert fan.policy.busy < server_module.IDLE_GC_BUSY
        fan._idle_collect(100.0)
        assert calls == []
        fan.policy.adapt(0.001, 0.1, 0.0)  # idle again
        fan._idle_collect(100.1)
        assert calls == [1]
        real_collect(0)
        fan.policy.adapt(0.001, 0.1, 0.0)
        fan._idle_collect(100.5)  # within IDLE_GC_EVERY_S of the last one
        assert calls == [1]
        fan._idle_collect(101.2)
        assert calls == [1, 1]
