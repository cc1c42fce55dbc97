"""Cohorts end to end: a batching worker whose one-market clients share market runs keeps
every client gap-free and equal to the store while members resume, unsubscribe and
subscribe again mid-window, and suspensions cut the windows."""

from __future__ import annotations

import asyncio
import random

from .builders import create, random_update
from .conftest import WorkerFactory, ws_url
from .mirror import Mirror, wait_until

MARKETS = ["m1", "m2"]
PER_MARKET = 6
UPDATES = 400


async def test_cohort_members_resuming_and_leaving_mid_stream_stay_gap_free(
        start_worker: WorkerFactory) -> None:
    """12 clients on one of two markets, 400 random updates (suspensions among them) through
    the store with the worker batching every window: clients resubscribing with ``from``
    and unsubscribing then subscribing again mid-stream end equal to the store, none ever
    resynced, and the steady ones saw every version once, in order, in shared frames."""
    async with start_worker(**{"fanout.batch_min_busy": 0.0, "fanout.batch_window_ms": 10,
                               "fanout.batch_window_max_ms": 40}) as w:
        store = w.store
        for m in MARKETS:
            await store.apply(create(m))
        clients = await asyncio.gather(*(Mirror.open(ws_url(w))
                                         for _ in range(PER_MARKET * len(MARKETS))))
        mine = [MARKETS[i % len(MARKETS)] for i in range(len(clients))]
        await asyncio.gather(*(c.request({"op": "subscribe", "markets": [m]})
                               for c, m in zip(clients, mine)))
        resumers, churners = clients[:3], clients[3:5]
        steady = clients[5:]
        applied = 0

        async def writer() -> None:
            nonlocal applied
            rng = random.Random(6)
            for i in range(UPDATES):
                await store.apply(random_update(rng, MARKETS[i % len(MARKETS)]))
                applied += 1
                if i % 20 == 0:
                    await asyncio.sleep(0.005)  # let windows close between bursts

        async def resume(c: Mirror, m: str) -> None:
            await wait_until(lambda: applied >= 100, 20, "writer under way")
            for _ in range(3):
                local = c.markets[m]
                await c.request({"op": "subscribe", "markets": [m], "from": {
                    m: {"epoch": local.epoch, "version": local.version}}})
                await asyncio.sleep(0.01)

        async def churn(c: Mirror, m: str) -> None:
            await wait_until(lambda: applied >= 150, 20, "writer under way")
            for _ in range(3):
                await c.request({"op": "unsubscribe", "markets": [m]})
                await c.request({"op": "subscribe", "markets": [m]})
                await asyncio.sleep(0.01)

        await asyncio.gather(
            writer(),
            *(resume(c, mine[i]) for i, c in enumerate(resumers)),
            *(churn(c, mine[3 + i]) for i, c in enumerate(churners)))
        assert applied == UPDATES
        truth = await store.get_many(MARKETS)

        def converged() -> bool:
            return all(c.markets.get(m) == truth[m] for c, m in zip(clients, mine))

        try:
            await wait_until(converged, 20, "every client equal to the store")
        finally:
            await asyncio.gather(*(c.close() for c in clients))
        for c in clients:
            c.check_clean()
        for c, m in zip(steady, mine[5:]):
            assert c.book.duplicates == 0
            got = c.book.delta_versions(m)
            assert got == list(range(got[0], got[0] + len(got)))
        assert max(size for c in steady for size in c.batch_sizes) >= 2
