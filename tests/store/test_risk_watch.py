"""The threshold watch on a real Valkey (single server and cluster): one alert per crossing
even with several workers checking the same account at once."""

from __future__ import annotations

import asyncio
from typing import Any

from oddsfeed.clock import now_ms
from oddsfeed.core.risk import slip_counts
from oddsfeed.services.risk_alerts import ThresholdWatch
from oddsfeed.store import RiskCounts, Store


class Alerts:
    """The watch's alert port, remembering the crossings."""

    def __init__(self) -> None:
        self.crossed_: list[tuple[str, int, float]] = []

    def crossed(self, sub: str, window_s: int, score: float, counts: Any) -> None:
        self.crossed_.append((sub, window_s, score))

    def overflow(self) -> None:
        raise AssertionError("no overflow expected")


async def test_a_crossing_alerts_once_across_workers_and_again_after_falling_back(
        store: Store) -> None:
    """Four watches (four workers) check the same accounts at once: each window's crossing
    alerts exactly once; an account under the threshold never; once seen under it again,
    the next crossing alerts again."""
    at = now_ms()
    counts = RiskCounts(store.client, windows_s=[60, 3600], buckets=12, max_accounts=100,
                        history_scan=10)
    stale = slip_counts([{"ok": False, "reason": "price_changed"}], [10])
    fine = slip_counts([{"ok": True}], [None])
    await counts.add_many([("sharp", stale, at)] * 10 + [("calm", stale, at)]
                          + [("calm", fine, at)] * 20)
    alerts = [Alerts() for _ in range(4)]
    watches = [ThresholdWatch(counts, a, windows_s=[60, 3600], threshold=50,
                              min_interval_ms=1) for a in alerts]
    await asyncio.gather(*(w.check(["sharp", "calm"], at + 1) for w in watches))
    got = sorted(c for a in alerts for c in a.crossed_)
    assert [(sub, w) for sub, w, _ in got] == [("sharp", 60), ("sharp", 3600)]
    assert got[0][2] == round(100 * 10 / 15, 2)
    await counts.add_many([("sharp", fine, at)] * 100)
    await watches[0].check(["sharp"], at + 2)  # 10 / 115: under the threshold now
    await counts.add_many([("sharp", stale, at)] * 200)
    await asyncio.gather(*(w.check(["sharp"], at + 3) for w in watches))
    again = sorted(c for a in alerts for c in a.crossed_)
    assert [(sub, w) for sub, w, _ in again] == [("sharp", 60), ("sharp", 60),
                                                   ("sharp", 3600), ("sharp", 3600)]
