"""Prometheus counters of bet-slip validations (the metrics port of the validation service)."""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client import Counter, Histogram

from ..tally import CounterTally, HistogramTally

LEGS = Counter("oddsfeed_validations_total", "bet-slip legs validated, by result and reason",
               ["result", "reason"])
SLIPS = Counter("oddsfeed_bet_slips_total", "bet slips validated, by result", ["result"])
SECONDS = Histogram("oddsfeed_validation_seconds",
                    "bet-slip validation time (store reads, plus the in-play delay if any)",
                    ["delayed"],
                    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 2.5,
                             5, 10, 30, 61))


# In-process tallies of the label children, flushed into them about once a second and
# before every scrape (oddsfeed.tally): a slip costs integer increments.
@functools.cache
def _legs(ok: bool, reason: str) -> CounterTally:
    return CounterTally(LEGS.labels("accepted" if ok else "rejected", reason))


@functools.cache
def _slips(ok: bool) -> CounterTally:
    return CounterTally(SLIPS.labels("accepted" if ok else "rejected"))


@functools.cache
def _seconds(delayed: bool) -> HistogramTally:
    return HistogramTally(SECONDS.labels("true" if delayed else "false"))


class PrometheusValidationMetrics:
    """Counts each slip's legs by result and reason, the slip by result, and its time."""

    def record(self, body: dict[str, Any], *, delayed: bool, seconds: float) -> None:
        ok = body["ok"]
        if ok:  # every leg accepted: one count of them all
            _legs(True, "").inc(len(body["legs"]))
        else:
            for leg in body["legs"]:
                _legs(leg["ok"], leg.get("reason", "")).inc()
        _slips(ok).inc()
        _seconds(delayed).observe(seconds)


VALIDATION_METRICS = PrometheusValidationMetrics()
