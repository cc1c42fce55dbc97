"""The risk recorder: takes finished bet-slip verdicts off the validation path and, in one
background task, dates their stale legs from the history and adds the counts; it queues
every accepted leg in the store's beat queue, and a second task judges the legs whose beat
window has ended (a suspension or a shorter price within it counts ``beat``).

It never delays or changes a validation: :meth:`RiskQueue.offer` appends the verdict's
plain values to the current batch in memory (an all-accepted slip: its account, time and
leg count; an accepted leg: its market, selection, prices, version, account and time; an
all-accepted one-leg slip, the common one: only its leg's values, in a list of its own; a
slip with a rejected leg is summed into its account's count vector at once; a full batch
drops the slip and counts the drop), wakes the task once per batch, and returns; the task
sums the batch in one pass. Nothing of the request is kept but those values (and a
rejected leg, until it is dated), and the store work of a batch grows with its accounts and
markets, not with its slips.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Protocol, TypeVar

from ..core.errors import StoreError
from ..core.prices import from_decimal, to_float
from ..core.risk import (
    FIELDS,
    STALE_REASONS,
    Counts,
    DueGroup,
    HistoryEntry,
    beat_counts,
    beats_of,
    count_accepted,
    count_slip,
    count_stale,
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
    @property
    def grain_ms(self) -> int:
        """Times in the same ``at_ms // grain_ms`` share every bucket of the counts."""
        ...

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

    def dropped(self, why: str, n: int = 1) -> None:
        """``n`` slips (or beat legs, or count adds) left out, for ``why``."""

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


# A batch is recorded this long after its first slip (at once when it holds MAX_BATCH):
# each batch costs a few round trips and scripts whatever its size, so under load fewer,
# fuller batches cost less per slip; the counts only show up this much later.
LINGER_S = 0.5
MAX_BATCH = 4096
# The longest one batch (or one sweep) may take: its store calls are bounded only by the
# client's own timeouts, which a caller may configure long or off, and a stuck batch would
# leave every slip offered after it queued (then dropped) with no error reported. Past it
# the batch fails as a store error and the worker goes on with the next one.
DEADLINE_S = 10.0

# A rejected leg waiting for its stale time: (its account's count vector, sub, leg, reason,
# arrived_ms).
_Dating = tuple[list[int], str, Leg, str, int]
# Accepted legs by (market, selection, asked price, answered price, version, account).
_DueKey = tuple[str, str, int, Any, int, str]
# Strides of the batch's flat lists: with the beat signal, an all-accepted slip of one
# leg with a version is (market, selection, asked price, answered price, version, sub,
# at_ms) in ``one`` (the common slip: one append on the request's turn); any other
# all-accepted slip is (sub, at_ms, legs) in ``accepted``; any other accepted leg is laid
# out as ``one``'s in ``due``.
_SLIP = 3
_LEG = 7
# What a recorder runs, cumulatively (anything but "all" only to measure its parts apart):
# "offer" takes each batch and drops it, "fold" also sums it, "writes" also writes its
# counts and beat-queue legs, "all" also sweeps the beat queue and checks thresholds.
PARTS = ("offer", "fold", "writes", "all")


class _Batch:
    """The slips offered since the last batch. A slip with a rejected leg is summed at once
    (``totals`` per (account, time grain): the first ``at_ms`` seen and a count vector, by
    :func:`count_slip`; ``dating``: its legs whose stale bucket waits for the history). An
    all-accepted slip, and every accepted leg for the beat signal (``due`` None: no beat
    signal), is only appended as plain values to the flat lists ``one``, ``accepted`` and
    ``due`` and summed by :meth:`fold` when the batch is recorded: one pass over the whole
    batch costs less CPU than the same work spread over the requests, and no container is
    made per slip. Nothing of a request is kept but these values (the market and selection
    names among them) and a rejected leg to date."""

    __slots__ = ("slips", "totals", "dating", "one", "accepted", "due", "last_at",
                 "grain_ms")

    def __init__(self, beat: bool, grain_ms: int) -> None:
        self.slips = 0
        self.totals: dict[tuple[str, int], tuple[int, list[int]]] = {}
        self.dating: list[_Dating] = []
        self.one: list[Any] = []
        self.accepted: list[Any] = []
        self.due: list[Any] | None = [] if beat else None
        self.last_at = 0
        self.grain_ms = grain_ms

    def total(self, sub: str, at_ms: int) -> list[int]:
        """The count vector of ``sub`` in ``at_ms``'s time grain."""
        key = (sub, at_ms // self.grain_ms)
        found = self.totals.get(key)
        if found is None:
            found = self.totals[key] = (at_ms, [0] * len(FIELDS))
        return found[1]

    def fold(self) -> dict[_DueKey, list[int]]:
        """Add the all-accepted slips to ``totals`` (:func:`count_accepted`) and return the
        accepted legs' acceptance times by group and account (empty without the beat
        signal)."""
        one, acc = self.one, self.accepted
        self._add_runs(zip(one[5::_LEG], one[6::_LEG], repeat(1)))
        self._add_runs(zip(acc[0::_SLIP], acc[1::_SLIP], acc[2::_SLIP], strict=True))
        self.one = self.accepted = []
        due: dict[_DueKey, list[int]] = {}
        if self.due is None:
            return due
        for flat in (one, self.due):
            keys: Iterator[_DueKey] = zip(flat[0::_LEG], flat[1::_LEG], flat[2::_LEG],
                                          flat[3::_LEG], flat[4::_LEG], flat[5::_LEG],
                                          strict=True)
            for group, at in zip(keys, flat[6::_LEG], strict=True):
                ats = due.get(group)
                if ats is None:
                    due[group] = [at]
                else:
                    ats.append(at)
        self.due = []
        return due

    def _add_runs(self, slips_of: Iterable[tuple[str, int, int]]) -> None:
        """Add all-accepted slips, given as (sub, at_ms, legs), to ``totals``."""
        grain = self.grain_ms
        total: list[int] = []
        last: str | None = None
        lo = hi = slips = legs = 0
        # Runs of slips of one account and time grain (the common case under load) are
        # summed first and added once.
        for sub, at_ms, n in slips_of:
            if sub != last or not lo <= at_ms < hi:
                if slips:
                    count_accepted(total, legs, slips)
                total, last, slips, legs = self.total(sub, at_ms), sub, 0, 0
                lo = at_ms - at_ms % grain
                hi = lo + grain
            slips += 1
            legs += n
        if slips:
            count_accepted(total, legs, slips)


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
    found = await _histories(store, [(legs[i].market, legs[i].version) for i in todo])
    for i in todo:
        leg = legs[i]
        out[i] = _late(found[leg.market, leg.version], leg, str(verdicts[i]["reason"]), ats[i])
    return out


async def _histories(store: RiskStore, wanted: Sequence[tuple[str, int | None]]
                     ) -> dict[tuple[str, int | None], list[HistoryEntry]]:
    """One history read per distinct (market, version): a batch often holds many legs on
    the same market."""
    reads = list(dict.fromkeys(wanted))
    return dict(zip(reads, await store.histories(reads), strict=True))


def _late(history: Sequence[HistoryEntry], leg: Leg, reason: str, at_ms: int) -> int | None:
    since = stale_since_ms(history, selection=leg.selection, price=leg.price,
                           version=leg.version, reason=reason)
    return None if since is None else max(at_ms - since, 0)


class RiskQueue:
    """A :class:`RiskRecorder` with a bounded list of offered slips and one worker task.

    Call :meth:`start` inside the running loop and :meth:`stop` at shutdown; ``on_error``
    gets an error the worker survived (the adapter logs it); that batch's slips are counted
    as dropped. A batch or sweep that takes longer than ``deadline_s`` fails as a
    StoreError. A batch takes at most ``max_pending`` slips; past that a slip is dropped
    (counted). A batch is recorded ``linger_s`` after its first slip.
    """

    def __init__(self, store: RiskStore, metrics: RiskMetrics, *, max_pending: int,
                 on_error: Callable[[Exception], None] = lambda exc: None,
                 beat: Beat | None = None, watch: Watch | None = None,
                 clock: Callable[[], int] | None = None,
                 on_stop: Callable[[], Awaitable[None]] | None = None,
                 deadline_s: float = DEADLINE_S, linger_s: float = LINGER_S,
                 parts: str = "all") -> None:
        if not deadline_s > 0:
            raise ValueError(f"deadline_s {deadline_s} must be > 0")
        if parts not in PARTS:
            raise ValueError(f"parts {parts!r} must be one of {', '.join(PARTS)}")
        self.parts = parts
        self.linger_s = linger_s
        self.store = store
        self.deadline_s = deadline_s
        self.metrics = metrics
        self.on_error = on_error
        self.beat = beat
        self.watch = watch
        self.clock = clock
        self.on_stop = on_stop
        self.max_pending = max_pending
        if (beat is not None or watch is not None) and clock is None:
            raise ValueError("clock is required with beat or watch")
        self._grain = store.grain_ms
        self._batch = _Batch(beat is not None, self._grain)
        self._wake: asyncio.Future[None] | None = None
        self._offered = 0  # slips taken in (not dropped) so far
        self._done = 0  # of those, recorded or failed
        self._drained: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._stopping = False

    def offer(self, sub: str, legs: Sequence[Leg], body: Mapping[str, Any], at_ms: int,
              arrived_ms: int | None = None) -> None:
        batch = self._batch
        if batch.slips >= self.max_pending:
            self.metrics.dropped("queue_full")
            return
        slips = batch.slips = batch.slips + 1
        # Slips of the same millisecond keep one time object, not one each.
        if at_ms == batch.last_at:
            at_ms = batch.last_at
        else:
            batch.last_at = at_ms
        self._offered += 1
        verdicts = body["legs"]
        ok = body.get("ok")
        if ok and len(verdicts) == 1:
            leg, verdict = legs[0], verdicts[0]
            version = verdict.get("version")
            if version is not None and batch.due is not None:
                batch.one += (leg.market, leg.selection, leg.price, verdict.get("price"),
                              version, sub, at_ms)
            else:  # nothing to judge later: the counts need only the slip
                batch.accepted += (sub, at_ms, 1)
            if slips == 1 or slips >= MAX_BATCH:
                self._wake_up()
            return
        if ok:
            batch.accepted += (sub, at_ms, len(verdicts))
        else:
            total = batch.total(sub, at_ms)
            for i in count_slip(total, verdicts):
                batch.dating.append((total, sub, legs[i], str(verdicts[i].get("reason")),
                                     at_ms if arrived_ms is None else arrived_ms))
        due = batch.due
        if due is not None:
            for leg, verdict in zip(legs, verdicts, strict=True):
                if not ok and not verdict.get("ok"):
                    continue
                version = verdict.get("version")
                if version is not None:
                    due += (leg.market, leg.selection, leg.price, verdict.get("price"),
                            version, sub, at_ms)
        if slips == 1 or slips >= MAX_BATCH:
            self._wake_up()

    def _wake_up(self) -> None:
        """Wake the task (at a batch's first slip its linger starts, at its last the
        batch is recorded at once)."""
        wake = self._wake
        if wake is not None:
            self._wake = None
            if not wake.done():
                wake.set_result(None)

    @property
    def pending(self) -> int:
        return self._batch.slips

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = loop.create_task(self._run(), name="risk")
        if self._sweeper is None and self.parts == "all" and (
                self.beat is not None or self.watch is not None):
            self._sweeper = loop.create_task(self._sweep_loop(), name="risk-beat")

    async def stop(self) -> None:
        """Stop the tasks; slips still waiting are dropped (not counted as drops), legs in
        the store's beat queue stay for any worker to judge."""
        tasks = [t for t in (self._task, self._sweeper) if t is not None]
        self._task = self._sweeper = None
        if not tasks:
            return
        self._stopping = True
        # Cancel until they end: the store client may swallow a cancellation that lands in
        # the middle of its I/O, and the task would then wait for slips for ever.
        while not all(t.done() for t in tasks):
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks, timeout=0.1)
        if self.on_stop is not None:
            await self.on_stop()

    async def drain(self) -> None:
        """Wait until every slip offered so far is recorded (tests, shutdown)."""
        target = self._offered
        while self._done < target:
            waiter = asyncio.get_running_loop().create_future()
            self._drained.append(waiter)
            await waiter

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            if not self._batch.slips:  # woken by the first slip
                self._wake = loop.create_future()
                await self._wake
            if self._batch.slips < MAX_BATCH:  # woken early by the MAX_BATCH-th
                self._wake = loop.create_future()
                try:
                    async with asyncio.timeout(self.linger_s):
                        await self._wake
                except TimeoutError:
                    pass
                self._wake = None
            batch, self._batch = self._batch, _Batch(self.beat is not None, self._grain)
            try:
                if self.parts in ("all", "writes"):
                    await self._bounded(self.record(batch), "risk record")
                elif self.parts == "fold":
                    batch.fold()
            except Exception as exc:  # the top of the task: count, report, go on
                why = "store_error" if isinstance(exc, StoreError) else "error"
                self.metrics.dropped(why, batch.slips)
                self.on_error(exc)
            finally:
                self._done += batch.slips
                waiters, self._drained = self._drained, []
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)

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

    async def record(self, batch: _Batch) -> None:
        """Date the batch's stale legs (one history round trip, only if it has any), add
        its counts (one counts round trip) and queue its accepted legs for the beat signal
        (one more, concurrent with the counts)."""
        due = batch.fold()
        stale, signalled = await self._date(batch.dating)
        self.metrics.recorded(batch.slips, stale, [d[3] for d in batch.dating])
        items = [(sub, tuple(total), at_ms)
                 for (sub, _), (at_ms, total) in batch.totals.items()]
        groups = self._groups(due) if due else []
        if groups and self.beat is not None:
            full, refused = await asyncio.gather(self.store.add_many(items),
                                                 self.beat.due.push(groups))
            if refused:
                self.metrics.dropped("due_full", refused)
        else:
            full = await self.store.add_many(items)
        if full:
            self.metrics.dropped("bucket_full", full)
        if signalled and self.watch is not None:
            await self._check(signalled, batch.last_at)

    async def _date(self, dating: Sequence[_Dating]) -> tuple[list[int | None], list[str]]:
        """Add each rejected leg's stale bucket to its account's counts; returns the stale
        times (None: undated) and the accounts with a dated leg (their score may rise)."""
        if not dating:
            return [], []
        found = await _histories(self.store, [(d[2].market, d[2].version) for d in dating])
        stale: list[int | None] = []
        signalled: dict[str, None] = {}
        for total, sub, leg, reason, arrived_ms in dating:
            late = _late(found[leg.market, leg.version], leg, reason, arrived_ms)
            count_stale(total, late)
            stale.append(late)
            if late is not None:
                signalled[sub] = None
        return stale, list(signalled)

    def _groups(self, due: Mapping[_DueKey, list[int]]) -> list[DueGroup]:
        assert self.beat is not None
        window = self.beat.window_ms
        by_group: dict[tuple[str, str, int, Any, int], list[tuple[str, list[int]]]] = {}
        for (market, selection, asked, shown, version, sub), ats in due.items():
            found = by_group.get((market, selection, asked, shown, version))
            if found is None:
                by_group[market, selection, asked, shown, version] = [(sub, ats)]
            else:
                found.append((sub, ats))
        out = []
        for (market, selection, asked, shown, version), accepted in by_group.items():
            # The price the bettor got: the leg's own unless accept allowed another.
            price = (asked if shown is None or to_float(asked) == shown
                     else from_decimal(shown))
            out.append(DueGroup(market, selection, price, int(version), window, accepted))
        return out

    async def _check(self, subs: Sequence[str], at_ms: int) -> None:
        """Hand the accounts to the threshold watch; its failure is reported, not counted
        as a dropped slip (the counts are in by now)."""
        assert self.watch is not None
        try:
            await self.watch.check(subs, at_ms)
        except Exception as exc:  # the alert is best effort; the counts stand
            self.on_error(exc)

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
        histories = await _histories(self.store, [(g.market, g.version) for g in due])
        items = []
        judged = 0
        for g in due:
            judged += g.size()
            items += [(sub, beat_counts(), at)
                      for sub, at in beats_of(g, histories[g.market, g.version])]
        self.metrics.judged(judged, len(items))
        if items:
            full = await self.store.add_many(items)
            if full:
                self.metrics.dropped("bucket_full", full)
            if self.watch is not None:
                await self._check(list(dict.fromkeys(s for s, _, _ in items)), now_ms)
        return judged
