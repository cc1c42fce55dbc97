"""What the risk recorder costs per slip and per accepted leg, in-process, phase by phase:
``offer`` (on the request's turn), the batch's fold (summing it), the batch's store writes
(counts and the beat queue: process CPU and Valkey CPU) and the sweeps that judge the
beats later (pop, history reads, judging). One embedded Valkey with the request bench's
20 markets; a batch is the slips of half a second at ``BENCH_RATE`` slips/s (9,000: the
WebSocket row's rate), one account, every leg accepted; ``BENCH_MOVED`` of the markets
(default 2) move after the batches (a shorter price), so their legs are judged one by one
and some beat. Each figure is the median over ``BENCH_ROUNDS`` rounds (5). The collector
is tuned as in a worker.

    python -m bench.risk_legs [--quick] [--json PATH]

``offer`` is timed in a tight loop: on a real request's turn it costs about twice that
(cold caches), so compare figures of this harness with each other, not with a server's.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from typing import Any

from oddsfeed.core.model import MarketUpdate
from oddsfeed.core.wire import Leg
from oddsfeed.embedded import EmbeddedValkey
from oddsfeed.services.risk import Beat, RiskQueue
from oddsfeed.store import DueQueue, RiskCounts, Store
from oddsfeed.worker import tune_gc

from .common import cli

MARKETS = 20
WINDOW_MS = 1000


class _Metrics:
    def recorded(self, slips: int, stale_ms: Any, reasons: Any) -> None:
        pass

    def dropped(self, why: str, n: int = 1) -> None:
        raise AssertionError(f"dropped {n} for {why}")

    def judged(self, legs: int, beats: int) -> None:
        self.legs = getattr(self, "legs", 0) + legs
        self.beats = getattr(self, "beats", 0) + beats


def _slips(n: int, legs: int, versions: dict[str, int], rate: int, t0: int
           ) -> list[tuple[tuple[Leg, ...], dict[str, Any], int]]:
    """``n`` all-accepted slips of ``legs`` legs over the markets, ``rate`` a second from
    ``t0``: (legs, the validation body, at_ms)."""
    out = []
    for i in range(n):
        ls, vs = [], []
        for j in range(legs):
            m = f"m{(i * legs + j) % MARKETS}"
            sel = "h" if (i + j) % 2 else "a"
            price = 25000 if sel == "h" else 30000
            ls.append(Leg(m, sel, price))
            vs.append({"market": m, "selection": sel, "ok": True, "price": price / 10000,
                       "version": versions[m]})
        out.append((tuple(ls), {"ok": True, "legs": vs}, t0 + i * 1000 // rate))
    return out


async def _round(url: str, legs: int, rate: int, batches: int, moved: int
                 ) -> dict[str, float]:
    store = await Store.connect(url)

    async def vk_s() -> float:
        """Valkey's time in commands so far (``INFO commandstats``: finer than the
        process's CPU ticks)."""
        stats = await store.client.info("commandstats")
        return float(sum(v["usec"] for v in stats.values())) / 1e6

    try:
        await store.client.flushall()
        for i in range(MARKETS):
            await store.apply(MarketUpdate(
                market=f"m{i}", fields={"event": f"e{i % 4}", "sport": "s", "name": "n"},
                selections={"h": {"name": "H", "price": 25000},
                            "a": {"name": "A", "price": 30000}}, create=True))
        versions = {f"m{i}": (await store.get(f"m{i}")).version  # type: ignore[union-attr]
                    for i in range(MARKETS)}
        counts = RiskCounts(store.client, windows_s=(60, 3600, 86400), buckets=60,
                            max_accounts=100_000, history_scan=64)
        due = DueQueue(store.client, shards=4, max_due=1_000_000)
        metrics = _Metrics()
        queue = RiskQueue(counts, metrics, max_pending=1_000_000,
                          beat=Beat(due, WINDOW_MS, 500, 1_000_000), clock=lambda: 0)
        per_batch = rate // 2
        t0 = int(time.time() * 1000)
        offer_s = fold_s = record_s = record_vk = 0.0
        for b in range(batches):
            slips = _slips(per_batch, legs, versions, rate, t0 + b * 500)
            # Once to time offer and the fold alone, once to time the whole record.
            started = time.perf_counter()
            for ls, body, at in slips:
                queue.offer("bench", ls, body, at)
            offer_s += time.perf_counter() - started
            batch, queue._batch = queue._batch, type(queue._batch)(True, counts.grain_ms)
            started = time.process_time()
            batch.fold()
            fold_s += time.process_time() - started
            for ls, body, at in slips:
                queue.offer("bench", ls, body, at)
            batch, queue._batch = queue._batch, type(queue._batch)(True, counts.grain_ms)
            started, vk0 = time.process_time(), await vk_s()
            await queue.record(batch)
            record_s += time.process_time() - started
            record_vk += await vk_s() - vk0
        for i in range(moved):  # a shorter price: the legs on "h" beat it
            await store.apply(MarketUpdate(market=f"m{i}", selections={"h": {"price": 20000}}))
        started, vk0 = time.process_time(), await vk_s()
        now = t0 + batches * 500 + 10 * WINDOW_MS
        while await queue.sweep(now):
            pass
        sweep_s, sweep_vk = time.process_time() - started, await vk_s() - vk0
        n = per_batch * batches
        total_legs = n * legs
        assert getattr(metrics, "legs", 0) == total_legs, (metrics.__dict__, total_legs)
        return {"offer_us_per_slip": offer_s / n * 1e6,
                "fold_us_per_slip": fold_s / n * 1e6,
                "writes_us_per_slip": (record_s - fold_s) / n * 1e6,
                "writes_valkey_us_per_slip": record_vk / n * 1e6,
                "sweep_us_per_slip": sweep_s / n * 1e6,
                "sweep_valkey_us_per_slip": sweep_vk / n * 1e6,
                "beats": float(getattr(metrics, "beats", 0))}
    finally:
        await store.close()


def run(quick: bool) -> dict[str, Any]:
    rounds = int(os.environ.get("BENCH_ROUNDS", 3 if quick else 5))
    rate = int(os.environ.get("BENCH_RATE", 9000))
    moved = int(os.environ.get("BENCH_MOVED", 2))
    batches = 2 if quick else 4
    rows = []
    tune_gc(10_000)  # as a worker does (server.gc_threshold's default)
    with EmbeddedValkey() as vk:
        for legs in (1, 5):
            got = [asyncio.run(_round(vk.url, legs, rate, batches, moved))
                   for _ in range(rounds)]
            row: dict[str, Any] = {"legs": legs}
            for key in got[0]:
                row[key] = round(statistics.median(g[key] for g in got), 2)
            row["total_us_per_slip"] = round(sum(
                v for k, v in row.items() if k.endswith("_us_per_slip")), 2)
            rows.append(row)
    return {"rate": rate, "moved": moved, "rounds": rounds, "rows": rows,
            "columns": list(rows[0])}


if __name__ == "__main__":
    cli("risk_legs", run, __doc__)
