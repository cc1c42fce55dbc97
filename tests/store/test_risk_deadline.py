"""The risk recorder never waits on the store for ever: a batch or sweep stuck on a store that
stopped answering (a client with a long socket timeout) fails at the recorder's deadline as a
reported, counted store error, and the worker records the next slips once the store answers."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator

import pytest

from oddsfeed.clock import now_ms
from oddsfeed.core.errors import StoreError
from oddsfeed.core.risk import as_map
from oddsfeed.core.wire import Leg
from oddsfeed.embedded import EmbeddedValkey
from oddsfeed.services.risk import Beat, RiskQueue
from oddsfeed.store import RiskCounts, Store
from oddsfeed.store.risk_due import DueQueue
from tests.riskports import RiskMetrics

DEADLINE_S = 0.3
REJECTED = {"ok": False, "legs": [{"ok": False, "reason": "unknown_market"}]}


class Errors:
    """The recorder's ``on_error``: keeps the errors and wakes a waiter on each."""

    def __init__(self) -> None:
        self.seen: list[Exception] = []
        self.event = asyncio.Event()

    def __call__(self, exc: Exception) -> None:
        self.seen.append(exc)
        self.event.set()

    async def first(self) -> Exception:
        await asyncio.wait_for(self.event.wait(), timeout=5 * DEADLINE_S + 2)
        return self.seen[0]


@pytest.fixture
def server() -> Iterator[EmbeddedValkey]:
    with EmbeddedValkey() as vk:
        try:
            yield vk
        finally:
            os.kill(vk.pid, signal.SIGCONT)  # a test that failed while it was stopped


@pytest.fixture
async def store(server: EmbeddedValkey) -> AsyncIterator[Store]:
    """A store whose client would wait 60 s for a reply: only the deadline ends a stuck call."""
    s = await Store.connect(server.url, socket_timeout=60)
    try:
        yield s
    finally:
        await s.close()


def counts_of(store: Store) -> RiskCounts:
    return RiskCounts(store.client, windows_s=[60], buckets=12, max_accounts=100,
                      history_scan=10)


async def test_a_stuck_batch_fails_at_the_deadline_and_the_next_one_records(
        server: EmbeddedValkey, store: Store) -> None:
    """With the store stopped, a batch fails as a store error within the deadline (counted,
    reported); once the store answers again the next slip is recorded, with correct counts."""
    counts, metrics, errors = counts_of(store), RiskMetrics(), Errors()
    queue = RiskQueue(counts, metrics, max_pending=100, on_error=errors,
                      deadline_s=DEADLINE_S)
    at = now_ms()  # a live bucket (an old one expires at once)
    queue.start()
    try:
        os.kill(server.pid, signal.SIGSTOP)
        queue.offer("s1", [Leg("zz", "h", 25000)], REJECTED, at)
        exc = await errors.first()
        assert isinstance(exc, StoreError)
        assert f"risk record did not finish within {DEADLINE_S} s" in str(exc)
        assert metrics.why == ["store_error"]
        os.kill(server.pid, signal.SIGCONT)
        queue.offer("s2", [Leg("zz", "h", 25000)], REJECTED, at)
        await asyncio.wait_for(queue.drain(), 5)
        assert len(errors.seen) == 1
        assert metrics.why == ["store_error"]
        got = await counts.account("s2", 60, at)
        assert got is not None
        assert as_map(got)["rejected_unknown_market"] == 1
    finally:
        await asyncio.wait_for(queue.stop(), 5)


async def test_a_stuck_beat_sweep_fails_at_the_deadline_and_stops_promptly(
        server: EmbeddedValkey, store: Store) -> None:
    """With the store stopped, the beat sweep fails as a store error within the deadline and
    the recorder still stops at once."""
    metrics, errors = RiskMetrics(), Errors()
    due = DueQueue(store.client, shards=2, max_due=100)
    queue = RiskQueue(counts_of(store), metrics, max_pending=100, on_error=errors,
                      beat=Beat(due, 1_000, 20, 100), clock=lambda: 2**50,
                      deadline_s=DEADLINE_S)
    os.kill(server.pid, signal.SIGSTOP)
    queue.start()
    try:
        exc = await errors.first()
        assert isinstance(exc, StoreError)
        assert f"risk beat sweep did not finish within {DEADLINE_S} s" in str(exc)
        assert metrics.why[0] == "store_error"
    finally:
        await asyncio.wait_for(queue.stop(), 5)


async def test_a_deadline_must_be_positive(store: Store) -> None:
    """A deadline of 0 or less is refused, naming the value."""
    with pytest.raises(ValueError, match="deadline_s 0 must be > 0"):
        RiskQueue(counts_of(store), RiskMetrics(), max_pending=1, deadline_s=0)
