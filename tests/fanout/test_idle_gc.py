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
        assert w.fanout.busy < server_module.IDLE_GC_BUSY
        real_collect(0)  # a young collection: generation 1 now has something to look at
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while 1 not in calls and loop.time() < deadline:
            await asyncio.sleep(0.1)
        assert 1 in calls
