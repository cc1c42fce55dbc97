"""The risk recorder: takes finished bet-slip verdicts off the validation path and, in one
background task, dates their stale legs from the history and adds the counts; it queues
every accepted leg in the store's beat queue, and a second task judges the legs whose beat
window has ended (a suspension or a shorter price within it counts ``beat``).

It never delays or changes a validation: :meth:`RiskQueue.offer` only appends to a bounded
queue (a full queue drops the slip and counts the drop) and returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ..core.errors import StoreError
from ..core.prices import from_decimal, to_float
from ..core.risk import (
    STALE_REASONS,
    Counts,
    DueGroup,
    HistoryEntry,
    beat_counts,
    first_adverse_ms,
    slip_counts,
    stale_since_ms,
)
from ..core.wire import Leg

T = TypeVar("T")


class RiskRecorder(Protocol):
    """Where an adapter hands each finished verdict (call after the answer is decided):
    ``at_ms`` when it was answered (its bucket; a beat window starts there), ``arrived_ms``
    when the slip arrived (stale times are measured to it: an in-play slip is answered a
    bet delay later)."""

    def offer(self, sub: str, legs: Sequence[Leg], body: Mapping[str, Any], at_ms: int,
              arrived_ms: int | None = None) -> None: ...


class RiskStore(Protocol):
    async def histories(self, legs: Sequence[tuple[str, int | None]]
                        ) -> list[list[HistoryEntry]]: ...

    async def add_many(self, items: Sequence[tuple[str, Counts, int]]) -> int: ...


class DueStore(Protocol):
    async def push(self, groups: Sequence[DueGroup]) -> int: ...

    async def pop(self, now_ms: int, limit: int) -> list[DueGroup]: ...


class RiskMetrics(Protocol):
    """Aggregate counters (no per-account labels)."""

    def recorded(self, slips: int, stale_ms: Sequence[int | None], reasons: Sequence[str]
                 ) -> None: ...

    def dropped(self, why: str) -> None: ...

    def judged(self, legs: int, beats: int) -> None: ...


class Watch(Protocol):
    """Told which accounts just got a signal that can raise their score."""

    async def check(self, subs: Sequence[str], at_ms: int) -> None: ...

    async def tick(self, at_ms: int) -> None: ...


@dataclass(frozen=True, slots=True)
class Beat:
    """The beat signal's part of the recorder: the store's queue, the window after an
    acceptance, and how often and how much a worker takes from the queue."""

    due: DueStore
    window_ms: int
    sweep_ms: int
    sweep_limit: int


MAX_BATCH = 256  # slips recorded in one pair of round trips
# After the first slip of a batch the recorder waits this long for more: each batch costs a
# few round trips and scripts whatever its size, so under load fewer, fuller batches cost
# less per slip; the counts only show up this much later.
LINGER_S = 0.05
# The longest one batch (or one sweep) may take: its store calls are bounded only by the
# client's own timeouts, which a caller may configure long or off, and a stuck batch would
# leave every slip offered after it queued (then dropped) with no error reported. Past it
# the batch fails as a store error and the worker goes on with the next one.
DEADLINE_S = 10.0


@dataclass(frozen=True, slots=True)
class _Slip:
    sub: str
    legs: tuple[Leg, ...]
    verdicts: tuple[Mapping[str, Any], ...]
    at_ms: int
    arrived_ms: int


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
    # One read per (market, version): a batch often holds many legs on the same market.
    reads = list(dict.fromkeys((legs[i].market, legs[i].version) for i in todo))
    found = dict(zip(reads, await store.histories(reads), strict=True))
    for i in todo:
        leg = legs[i]
        history = found[leg.market, leg.version]
        since = stale_since_ms(history, selection=leg.selection, price=leg.price,
                               version=leg.version, reason=str(verdicts[i]["reason"]))
        out[i] = None if since is None else max(ats[i] - since, 0)
    return out


class RiskQueue:
    """A :class:`RiskRecorder` with a bounded queue and one worker task.

    Call :meth:`start` inside the running loop and :meth:`stop` at shutdown; ``on_error``
    gets an error the worker survived (the adapter logs it); that slip is counted as dropped.
    A batch or sweep that takes longer than ``deadline_s`` fails as a StoreError.
    """

    def __init__(self, store: RiskStore, metrics: RiskMetrics, *, max_pending: int,
                 on_error: Callable[[Exception], None] = lambda exc: None,
                 beat: Beat | None = None, watch: Watch | None = None,
                 clock: Callable[[], int] | None = None,
                 on_stop: Callable[[], Awaitable[None]] | None = None,
                 deadline_s: float = DEADLINE_S) -> None:
        if not deadline_s > 0:
            raise ValueError(f"deadline_s {deadline_s} must be > 0")
        self.store = store
        self.deadline_s = deadline_s
        self.metrics = metrics
        self.on_error = on_error
        self.beat = beat
        self.watch = watch
        self.clock = clock
        self.on_stop = on_stop
        if (beat is not None or watch is not None) and clock is None:
            raise ValueError("clock is required with beat or watch")
        self._queue: asyncio.Queue[_Slip] = asyncio.Queue(max_pending)
        self._task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._stopping = False

    def offer(self, sub: str, legs: Sequence[Leg], body: Mapping[str, Any], at_ms: int,
              arrived_ms: int | None = None) -> None:
        try:
            self._queue.put_nowait(_Slip(sub, tuple(legs), tuple(body["legs"]), at_ms,
                                         at_ms if arrived_ms is None else arrived_ms))
        except asyncio.QueueFull:
            self.metrics.dropped("queue_full")

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = loop.create_task(self._run(), name="risk")
        if self._sweeper is None and (self.beat is not None or self.watch is not None):
            self._sweeper = loop.create_task(self._sweep_loop(), name="risk-beat")

    async def stop(self) -> None:
        """Stop the tasks; slips still queued are dropped (not counted as drops), legs in
        the store's beat queue stay for any worker to judge."""
        tasks = [t for t in (self._task, self._sweeper) if t is not None]
        self._task = self._sweeper = None
        if not tasks:
            return
        self._stopping = True
        # Cancel until they end: the store client may swallow a cancellation that lands in
        # the middle of its I/O, and the task would then wait on the queue for ever.
        while not all(t.done() for t in tasks):
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks, timeout=0.1)
        if self.on_stop is not None:
            await self.on_stop()

    async def drain(self) -> None:
        """Wait until every slip offered so far is recorded (tests, shutdown)."""
        await self._queue.join()

    async def _run(self) -> None:
        while not self._stopping:
            batch = [await self._queue.get()]
            if self._queue.qsize() < MAX_BATCH - 1:
                await asyncio.sleep(LINGER_S)
            # Whatever else is waiting goes in the same round trips.
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._bounded(self.record(batch), "risk record")
            except Exception as exc:  # the top of the task: count, report, go on
                why = "store_error" if isinstance(exc, StoreError) else "error"
                for _ in batch:
                    self.metrics.dropped(why)
                self.on_error(exc)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _bounded(self, work: Awaitable[T], what: str) -> T:
        """``work``'s result, or StoreError once it ran ``deadline_s`` (it is cancelled)."""
        deadline = asyncio.timeout(self.deadline_s)
        try:
            async with deadline:
                return await work
        except TimeoutError:
            if not deadline.expired():
                raise  # the work's own timeout, not the deadline
            raise StoreError(f"{what} did not finish within {self.deadline_s} s") from None

    async def record(self, batch: Sequence[_Slip]) -> None:
        """Date the batch's stale legs (one history round trip), add its counts (one counts
        round trip) and queue its accepted legs for the beat signal (one more, concurrent
        with the counts)."""
        legs = [leg for slip in batch for leg in slip.legs]
        verdicts = [v for slip in batch for v in slip.verdicts]
        ats = [slip.arrived_ms for slip in batch for _ in slip.legs]
        stale = await stale_ms_of(self.store, legs, verdicts, ats)
        items = []
        signalled = []
        start = 0
        for slip in batch:
            mine = stale[start:start + len(slip.legs)]
            start += len(slip.legs)
            counts = slip_counts(slip.verdicts, mine)
            items.append((slip.sub, counts, slip.at_ms))
            if any(late is not None for late in mine):
                signalled.append(slip.sub)
        self.metrics.recorded(len(batch), stale, [str(v.get("reason", "")) for v in verdicts
                                                  if not v.get("ok")])
        due = self._due_legs(batch) if self.beat is not None else []
        if due and self.beat is not None:
            full, refused = await asyncio.gather(self.store.add_many(items),
                                                 self.beat.due.push(due))
            for _ in range(refused):
                self.metrics.dropped("due_full")
        else:
            full = await self.store.add_many(items)
        for _ in range(full):
            self.metrics.dropped("bucket_full")
        if signalled and self.watch is not None:
            await self._check(signalled, batch[-1].at_ms)

    async def _check(self, subs: Sequence[str], at_ms: int) -> None:
        """Hand the accounts to the threshold watch; its failure is reported, not counted
        as a dropped slip (the counts are in by now)."""
        assert self.watch is not None
        try:
            await self.watch.check(subs, at_ms)
        except Exception as exc:  # the alert is best effort; the counts stand
            self.on_error(exc)

    def _due_legs(self, batch: Sequence[_Slip]) -> list[DueGroup]:
        assert self.beat is not None
        window = self.beat.window_ms
        groups: dict[tuple[str, str, int, int], list[tuple[str, int, int]]] = {}
        for slip in batch:
            for leg, verdict in zip(slip.legs, slip.verdicts, strict=True):
                version = verdict.get("version")
                if not verdict.get("ok") or version is None:
                    continue
                shown = verdict.get("price")
                # The price the bettor got: the leg's own unless accept allowed another.
                price = (leg.price if shown is None or to_float(leg.price) == shown
                         else from_decimal(shown))
                key = (leg.market, leg.selection, price, int(version))
                found = groups.get(key)
                if found is None:
                    found = groups[key] = []
                found.append((slip.sub, slip.at_ms, slip.at_ms + window))
        return [DueGroup(*key, legs) for key, legs in groups.items()]

    async def _sweep_loop(self) -> None:
        beat, clock = self.beat, self.clock
        assert clock is not None
        while not self._stopping:
            taken = 0
            try:
                if beat is not None:
                    taken = await self._bounded(self.sweep(clock()), "risk beat sweep")
                if self.watch is not None:
                    await self._bounded(self.watch.tick(clock()), "risk threshold tick")
            except Exception as exc:  # the top of the task: report, wait, go on
                self.metrics.dropped("store_error" if isinstance(exc, StoreError) else "error")
                self.on_error(exc)
            if beat is None or taken < beat.sweep_limit:
                await asyncio.sleep((beat.sweep_ms if beat else 1000) / 1000)

    async def sweep(self, now_ms: int) -> int:
        """Judge the queued legs whose beat window ended by ``now_ms`` (taken from the
        store's queue, so each by one worker only): read each (market, version)'s history
        once, count ``beat`` in the acceptance-time bucket of the legs that beat a
        suspension or a shorter price. Returns how many legs it took."""
        assert self.beat is not None
        due = await self.beat.due.pop(now_ms, self.beat.sweep_limit)
        if not due:
            return 0
        reads = list(dict.fromkeys((g.market, g.version) for g in due))
        histories = dict(zip(reads, await self.store.histories(reads), strict=True))
        items = []
        judged = 0
        for g in due:
            judged += len(g.legs)
            turned = first_adverse_ms(histories[g.market, g.version], selection=g.selection,
                                      price=g.price)
            if turned is not None:
                items += [(sub, beat_counts(), at) for sub, at, until in g.legs
                          if turned <= until]
        self.metrics.judged(judged, len(items))
        if items:
            for _ in range(await self.store.add_many(items)):
                self.metrics.dropped("bucket_full")
            if self.watch is not None:
                await self._check(list(dict.fromkeys(s for s, _, _ in items)), now_ms)
        return judged
