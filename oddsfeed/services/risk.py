"""The risk recorder: takes finished bet-slip verdicts off the validation path and, in one
background task, dates their stale legs from the history and adds the counts.

It never delays or changes a validation: :meth:`RiskQueue.offer` only appends to a bounded
queue (a full queue drops the slip and counts the drop) and returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..core.errors import StoreError
from ..core.risk import STALE_REASONS, Counts, HistoryEntry, slip_counts, stale_since_ms
from ..core.wire import Leg


class RiskRecorder(Protocol):
    """Where an adapter hands each finished verdict (call after the answer is decided)."""

    def offer(self, sub: str, legs: Sequence[Leg], body: Mapping[str, Any], at_ms: int
              ) -> None: ...


class RiskStore(Protocol):
    async def histories(self, legs: Sequence[tuple[str, int | None]]
                        ) -> list[list[HistoryEntry]]: ...

    async def add_many(self, items: Sequence[tuple[str, Counts, int]]) -> int: ...


class RiskMetrics(Protocol):
    """Aggregate counters (no per-account labels)."""

    def recorded(self, stale_ms: Sequence[int | None], reasons: Sequence[str]) -> None: ...

    def dropped(self, why: str) -> None: ...


MAX_BATCH = 256  # slips recorded in one pair of round trips


@dataclass(frozen=True, slots=True)
class _Slip:
    sub: str
    legs: tuple[Leg, ...]
    verdicts: tuple[Mapping[str, Any], ...]
    at_ms: int


async def stale_ms_of(store: RiskStore, legs: Sequence[Leg],
                      verdicts: Sequence[Mapping[str, Any]], at_ms: int | Sequence[int]
                      ) -> list[int | None]:
    """Per leg, how long before ``at_ms`` (one for all legs, or one per leg) its price or
    version stopped being current (None: accepted, not applicable, or older than the
    history read). One round trip."""
    ats = [at_ms] * len(legs) if isinstance(at_ms, int) else list(at_ms)
    todo = [i for i, v in enumerate(verdicts)
            if not v.get("ok") and v.get("reason") in STALE_REASONS]
    out: list[int | None] = [None] * len(legs)
    if not todo:
        return out
    histories = await store.histories([(legs[i].market, legs[i].version) for i in todo])
    for i, history in zip(todo, histories, strict=True):
        leg = legs[i]
        since = stale_since_ms(history, selection=leg.selection, price=leg.price,
                               version=leg.version, reason=str(verdicts[i]["reason"]))
        out[i] = None if since is None else max(ats[i] - since, 0)
    return out


class RiskQueue:
    """A :class:`RiskRecorder` with a bounded queue and one worker task.

    Call :meth:`start` inside the running loop and :meth:`stop` at shutdown; ``on_error``
    gets an error the worker survived (the adapter logs it); that slip is counted as dropped.
    """

    def __init__(self, store: RiskStore, metrics: RiskMetrics, *, max_pending: int,
                 on_error: Callable[[Exception], None] = lambda exc: None) -> None:
        self.store = store
        self.metrics = metrics
        self.on_error = on_error
        self._queue: asyncio.Queue[_Slip] = asyncio.Queue(max_pending)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def offer(self, sub: str, legs: Sequence[Leg], body: Mapping[str, Any], at_ms: int
              ) -> None:
        try:
            self._queue.put_nowait(_Slip(sub, tuple(legs), tuple(body["legs"]), at_ms))
        except asyncio.QueueFull:
            self.metrics.dropped("queue_full")

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="risk")

    async def stop(self) -> None:
        """Stop the worker; slips still queued are dropped (not counted as drops)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        # Cancel until it ends: the store client may swallow a cancellation that lands in
        # the middle of its I/O, and the task would then wait on the queue for ever.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.1)

    async def drain(self) -> None:
        """Wait until every slip offered so far is recorded (tests, shutdown)."""
        await self._queue.join()

    async def _run(self) -> None:
        while not self._stopping:
            batch = [await self._queue.get()]
            # Whatever else is waiting goes in the same round trips.
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self.record(batch)
            except Exception as exc:  # the top of the task: count, report, go on
                why = "store_error" if isinstance(exc, StoreError) else "error"
                for _ in batch:
                    self.metrics.dropped(why)
                self.on_error(exc)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def record(self, batch: Sequence[_Slip]) -> None:
        """Date the batch's stale legs (one history round trip) and add its counts (one
        counts round trip)."""
        legs = [leg for slip in batch for leg in slip.legs]
        verdicts = [v for slip in batch for v in slip.verdicts]
        ats = [slip.at_ms for slip in batch for _ in slip.legs]
        stale = await stale_ms_of(self.store, legs, verdicts, ats)
        items = []
        start = 0
        for slip in batch:
            mine = stale[start:start + len(slip.legs)]
            start += len(slip.legs)
            items.append((slip.sub, slip_counts(slip.verdicts, mine), slip.at_ms))
            self.metrics.recorded(mine, [str(v.get("reason", "")) for v in slip.verdicts
                                         if not v.get("ok")])
        for _ in range(await self.store.add_many(items)):
            self.metrics.dropped("bucket_full")
