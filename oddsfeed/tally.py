"""In-process tallies in front of prometheus_client metrics, for the hot request paths.

Updating a prometheus_client child costs a lock and, under multiprocess mode, a write to a
shared mmap per call; a tally costs an integer increment (a histogram tally a bisect too).
Tallies are flushed into their metric children by :func:`flush_all`: about once a second
while they are dirty (a timer on the running event loop, armed by the first update after
a flush), before every scrape (``webkit.metrics`` calls it) and at exit. Flushing adds the
exact counts and bucket counts, so a scrape after a flush shows what direct updates would
have shown (the histogram's sum up to float rounding of the order of additions).

Single-threaded by design: tallies are updated and flushed from the event loop's thread
(``atexit`` runs after it stopped).
"""

from __future__ import annotations

import asyncio
import atexit
import bisect
from typing import Any

__all__ = ["FLUSH_EVERY_S", "CounterTally", "HistogramTally", "flush_all"]

FLUSH_EVERY_S = 1.0

_dirty: list[CounterTally | HistogramTally] = []
_armed: list[asyncio.AbstractEventLoop | None] = [None]  # the loop a flush is due on


class CounterTally:
    """Counts for one Counter child (``Counter.labels(...)`` or an unlabelled Counter)."""

    __slots__ = ("_child", "_n")

    def __init__(self, child: Any) -> None:
        self._child = child
        self._n = 0

    def inc(self, n: int = 1) -> None:
        """Add ``n`` (a non-negative int) to the count flushed next."""
        was, self._n = self._n, self._n + n
        if not was:
            _mark(self)

    def flush(self) -> None:
        """Add the pending count to the child."""
        n, self._n = self._n, 0
        if n:
            self._child.inc(n)


class HistogramTally:
    """Observations for one Histogram child: per-bucket counts and their sum."""

    __slots__ = ("_bounds", "_buckets", "_child", "_counts", "_n", "_sum")

    def __init__(self, child: Any) -> None:
        self._child = child
        # The child's own bounds (ending at +Inf) and value cells, one per bucket: a flush
        # adds to each what Histogram.observe would have added, observation by observation.
        self._bounds: list[float] = list(child._upper_bounds)
        self._buckets: list[Any] = child._buckets
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        self._n = 0

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose bound is >= it, as the child does."""
        self._n += 1
        self._sum += value
        i = bisect.bisect_left(self._bounds, value)
        if i < len(self._counts):  # NaN falls in no bucket, as with the child
            self._counts[i] += 1
        if self._n == 1:
            _mark(self)

    def flush(self) -> None:
        """Add the pending bucket counts and sum to the child."""
        if not self._n:
            return
        counts, total = self._counts, self._sum
        self._counts, self._sum, self._n = [0] * len(counts), 0.0, 0
        self._child._sum.inc(total)
        for cell, n in zip(self._buckets, counts):
            if n:
                cell.inc(n)


def _mark(tally: CounterTally | HistogramTally) -> None:
    """Note a tally that just turned dirty (its update already made); arm the timer."""
    _dirty.append(tally)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        flush_all()  # no loop to flush later from (a script, sync code): flush now
        return
    if _armed[0] is not loop:  # not armed, or armed on a loop that has gone since
        _armed[0] = loop
        loop.call_later(FLUSH_EVERY_S, flush_all)


def flush_all() -> None:
    """Flush every dirty tally into its prometheus_client child."""
    _armed[0] = None
    dirty = _dirty[:]
    _dirty.clear()
    for tally in dirty:
        tally.flush()


atexit.register(flush_all)
