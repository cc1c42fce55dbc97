"""The feed runner: every adapter's updates go through here into the store's one atomic
apply path, with bad provider data logged, counted and skipped, and feed health. It must not
parse provider formats (the provider modules do) nor write anything but MarketUpdates.

Feed health: a market whose source has been silent longer than the staleness limit is
suspended (through ``store.apply``, source ``<source>:health``), and reopened by the next
good update or sign of life from that source, so no client is shown a dead price as live.
Only markets the source itself left open are suspended and reopened: a market the provider
suspended stays suspended.

Failover: every write carries the runner's feed rank (its source, ``priority`` and
staleness), and the store applies a feed's update only while no feed of a higher
priority was seen on the market within the staleness period; otherwise the answer is a
``Standby`` (counted as ``standby``; the source is alive). A silence sweep yields while
any other feed is live on the market, so a market is suspended for silence only when
every feed of it is silent.

The runner also publishes its health to the store's feed health
(``oddsfeed.store.feeds``) about once a second, for the trader console.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import structlog
from prometheus_client import Counter, Gauge

from oddsfeed.core.book import OUTCOME_NAMES, Changed, Created, NoOp, Rejected
from oddsfeed.core.errors import InvalidInput, ProviderDataError, StoreError
from oddsfeed.core.model import FeedRank, MarketUpdate
from oddsfeed.store import Applied, FeedHealth, Standby, Store, publish_feed_health

log = structlog.get_logger("oddsfeed.ingest")

MESSAGES = Counter("oddsfeed_ingest_messages_total",
                   "normalised updates by outcome (applied, noop, out_of_order, standby, rejected, "
                   "bad)",
                   ["source", "outcome"])
BAD = Counter("oddsfeed_ingest_bad_messages_total", "provider messages skipped as bad data",
              ["source"])
LAG = Gauge("oddsfeed_ingest_lag_seconds",
            "receive time minus provider time of the last applied update", ["source"],
            multiprocess_mode="max")
LAST = Gauge("oddsfeed_ingest_last_message_timestamp_seconds",
             "unix time of the last good message or heartbeat from the source", ["source"],
             multiprocess_mode="max")
STALE = Gauge("oddsfeed_ingest_stale_markets",
              "markets currently suspended because their source went silent", ["source"],
              multiprocess_mode="max")
LAGGING = Gauge("oddsfeed_ingest_provider_lagging",
                "1 while the provider's last message said its data is behind (a stream's "
                "status 503), else 0", ["source"], multiprocess_mode="max")
LAG_NOTICES = Counter("oddsfeed_ingest_provider_lag_notices_total",
                      "messages in which the provider said its data is behind", ["source"])
HEALTHY = Gauge("oddsfeed_ingest_healthy",
                "1 while the source is live (no market stale-suspended), else 0", ["source"],
                multiprocess_mode="min")

HEALTH_SOURCE_SUFFIX = ":health"
_STORE_RETRIES = 6
_T = TypeVar("_T")


class Applier(Protocol):
    """What the runner needs of the store (``oddsfeed.store.Store`` has it): ``apply`` one
    update, and ``apply_many`` (the outcomes in order, each update atomic as with ``apply``;
    on a StoreError any of them may have been applied)."""

    async def apply(self, update: MarketUpdate) -> Any: ...

    async def apply_many(self, updates: Sequence[MarketUpdate]) -> Sequence[Any]: ...


@dataclass(slots=True)
class _Prepared:
    """An update as the runner sends it: under its source, reopening what it suspended."""

    update: MarketUpdate
    reopening: bool  # the market was stale-suspended by this runner when prepared


def _sleep_default(s: float) -> Awaitable[None]:
    return asyncio.sleep(s)


@dataclass
class FeedRunner:
    """Applies one source's updates to the store and watches the source's health.

    Call :meth:`submit` per normalised update, :meth:`bad` per bad provider message,
    :meth:`alive` when the source shows it is live without new data (a heartbeat, a 304),
    and run :meth:`watch` as a task (or call :meth:`check_staleness`) for staleness.
    Call :meth:`lagging` with each stream message's lag state. ``clock`` returns unix
    seconds; inject one in tests. ``store_retries`` bounds how long a store outage blocks a
    submit (6: about 9 s of retries; 1: fail at once, for callers that answer a client).
    """

    store: Applier
    source: str
    staleness_s: float = 30.0
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], Awaitable[Any]] = _sleep_default
    last_seen: dict[str, float] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)  # market -> status in the store
    auto_suspended: set[str] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)
    last_message_s: float = 0.0
    source_alive_s: float = 0.0  # the whole source showed life (a stream's heartbeat)
    lag_s: float = 0.0
    store_retries: int = _STORE_RETRIES
    provider_lagging: bool = False
    lag_notices: int = 0
    priority: int = 0  # 0: a primary; a backup (1, 2, ...) yields to a live lower number
    _rank: FeedRank = field(init=False, repr=False)
    _sweep: FeedRank = field(init=False, repr=False)
    health_period_s: float = 1.0  # how often the health is published to the store
    _health_sent_s: float = field(default=float("-inf"), init=False, repr=False)
    # The source's metric children, looked up once (the source never changes).
    _messages: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _last: Any = field(default=None, init=False, repr=False)
    _lag: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.store_retries < 1:
            raise ValueError(f"store_retries must be at least 1, got {self.store_retries}")
        self._rank = FeedRank(self.source, self.priority, max(1, int(self.staleness_s * 1000)))
        self._sweep = FeedRank(self.source, self.priority, self._rank.stale_ms, sweep=True)
        self._last = LAST.labels(self.source)
        self._lag = LAG.labels(self.source)
        HEALTHY.labels(self.source).set(1)
        STALE.labels(self.source).set(0)
        LAGGING.labels(self.source).set(0)

    def lagging(self, behind: bool) -> None:
        """The provider said its data is behind (True) or sent a message without saying so
        (False): kept as a health field and metric, never counted as bad data."""
        if behind:
            self.lag_notices += 1
            LAG_NOTICES.labels(self.source).inc()
        if behind != self.provider_lagging:
            log.warning("provider lagging" if behind else "provider caught up",
                        source=self.source)
        self.provider_lagging = behind
        LAGGING.labels(self.source).set(1 if behind else 0)

    def _count(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        child = self._messages.get(outcome)
        if child is None:
            child = self._messages[outcome] = MESSAGES.labels(self.source, outcome)
        child.inc()

    def bad(self, exc: ProviderDataError | InvalidInput, raw: object = None) -> None:
        """Log (with the raw excerpt) and count one bad provider message; it is skipped."""
        self._count("bad")
        BAD.labels(self.source).inc()
        excerpt = getattr(exc, "raw", "") or (repr(raw)[:500] if raw is not None else "")
        log.warning("bad provider data skipped", source=self.source,
                    provider=getattr(exc, "provider", ""), error=str(exc), raw=excerpt)

    def _heard(self, now: float) -> None:
        self.last_message_s = now
        self._last.set(now)

    async def submit(self, update: MarketUpdate) -> Any:
        """Apply one normalised update under this runner's source (whatever source the
        update named); returns the store's outcome (None when the update was invalid and
        skipped as bad data).

        A market this runner suspended for staleness is reopened by the update unless the
        update sets a status itself. Raises StoreError when the store stays unreachable.
        """
        now = self.clock()
        item = self._prepare(update)
        if item is None:
            return None
        outcome = await self._apply(item.update)
        await self._record(item, outcome, now)
        await self.publish_health()
        return outcome

    async def submit_many(self, updates: Sequence[MarketUpdate], *, writer: str = ""
                          ) -> list[Any]:
        """:meth:`submit` each update in order, with the store writes pipelined: the
        outcomes in order, and the same outcomes, counts and health bookkeeping as
        submitting them one by one. With ``writer`` the updates go under the source
        ``<source>@<writer>``: their seqs are ordered apart from every other writer's (one
        pusher's seqs cannot hold back another's), while health and metrics stay the
        runner's. Raises StoreError when the store stays unreachable;
        the earlier round trips' updates are then applied and counted, and any of the
        failing one's may have been applied (uncounted).

        The updates go to ``store.apply_many`` in chunks (usually one): a chunk ends before
        an update that could not be retried safely with the rest (below), or that needs
        the outcome of an earlier one (a second update for a market waiting to be reopened).
        """
        # Retrying a chunk after a StoreError (as _apply retries) is safe because of what
        # apply.lua does with a repeat. apply_many may have applied any part of the chunk:
        # a prefix when the connection broke, all but the failing update when one script
        # call erred (the pipeline runs to the end).
        # - With a seq: created, changed and noop record the source's seq for the market,
        #   and an update whose seq is not above it is dropped as out_of_order, so an
        #   applied update is not applied twice (test_out_of_order_and_duplicates_never_bump
        #   in tests/store). A rejected one records nothing (test_rejections_change_nothing),
        #   so its repeat is judged again on the state the rest of the chunk left; with a
        #   higher seq after it, that repeat is out_of_order too.
        # - Without a seq nothing is recorded and a repeat is applied again. Prices are
        #   absolute, so repeating a market's only update is a noop, but repeating the first
        #   of two would publish its older prices again (a new version) before the second.
        # So a market has one update in a chunk, or several all with rising seqs. After a
        # retry the bookkeeping is what a lost reply to apply gives: an update the failed
        # attempt applied counts as out_of_order (or noop), without refreshing the market's
        # status or the lag.
        results: list[Any] = [None] * len(updates)
        i = 0
        while i < len(updates):
            now = self.clock()
            chunk: list[tuple[int, _Prepared]] = []
            last_seq: dict[str, int | None] = {}  # market -> seq of its last update here
            while i < len(updates):
                u = updates[i]
                mid = u.market
                if mid in last_seq:
                    prev = last_seq[mid]
                    if (prev is None or u.seq is None or u.seq <= prev
                            or mid in self.auto_suspended):
                        break
                item = self._prepare(u, writer)
                if item is not None:
                    chunk.append((i, item))
                    last_seq[mid] = item.update.seq
                i += 1
            if not chunk:
                continue
            outcomes = await self._apply_many([item.update for _, item in chunk])
            for (k, item), outcome in zip(chunk, outcomes):
                await self._record(item, outcome, now)
                results[k] = outcome
        await self.publish_health()
        return results

    def _prepare(self, update: MarketUpdate, writer: str = "") -> _Prepared | None:
        """The update under this runner's source, with ``status: open`` added when it
        reopens a market the runner suspended; None (counted as bad) when invalid."""
        reopening = update.market in self.auto_suspended
        try:
            # The feed spoke again: reopen what we suspended. The update was validated when
            # built; only the source is checked again.
            upd = update.under(f"{self.source}@{writer}" if writer else self.source,
                               self._rank, reopen=reopening)
        except InvalidInput as exc:
            self.bad(exc, update)
            return None
        return _Prepared(upd, reopening)

    async def _record(self, item: _Prepared, outcome: Any, now: float) -> None:
        """Counts, logs, health and lag for one applied update's outcome."""
        upd = item.update
        mid = upd.market
        self._heard(now)
        if isinstance(outcome, Rejected):
            self._count(OUTCOME_NAMES[Rejected])
            log.warning("update rejected", source=self.source, market=mid,
                        reason=outcome.reason, detail=outcome.message, path=outcome.path)
        elif isinstance(outcome, (Created, Changed, NoOp, Applied)):
            noop = isinstance(outcome, NoOp) or (
                isinstance(outcome, Applied) and outcome.kind == "noop")
            self._count(OUTCOME_NAMES[NoOp] if noop else "applied")
            self.last_seen[mid] = now
            self.status[mid] = outcome.market.status
            # Only when the update was prepared as a reopening: a market stale-suspended
            # while the update was on its way stays marked, for the next update to reopen.
            if item.reopening and mid in self.auto_suspended:
                self.auto_suspended.discard(mid)
                log.info("feed live again: market reopened", source=self.source, market=mid)
                self._publish_health()
            if upd.ts is not None:
                self.lag_s = max(0.0, now - upd.ts / 1000)
                self._lag.set(self.lag_s)
        elif isinstance(outcome, Standby):  # a higher-priority feed drives it: alive, idle
            self._count("standby")
            self.last_seen[mid] = now
            self.status[mid] = outcome.market.status
        elif outcome is None:
            self._count("recorded")
        else:  # OutOfOrder: a duplicate or replay, harmless; the source is still alive
            self._count("out_of_order")
            if mid in self.last_seen:
                self.last_seen[mid] = now
            if mid in self.auto_suspended:
                await self._reopen([mid])

    async def _apply(self, update: MarketUpdate) -> Any:
        store = self.store
        if isinstance(store, Store):  # the runner reads only the market's status back
            return await self._retrying(lambda: store.apply(update, short=True),
                                        market=update.market)
        return await self._retrying(lambda: store.apply(update), market=update.market)

    async def _apply_many(self, updates: list[MarketUpdate]) -> list[Any]:
        store = self.store
        if isinstance(store, Store):
            outcomes: Sequence[Any] = await self._retrying(
                lambda: store.apply_many(updates, short=True),
                market=updates[0].market, updates=len(updates))
        else:
            outcomes = await self._retrying(lambda: store.apply_many(updates),
                                            market=updates[0].market, updates=len(updates))
        return list(outcomes)

    async def _retrying(self, write: Callable[[], Awaitable[_T]], **what: Any) -> _T:
        # A store outage blocks the adapter (backpressure, no queue) for a bounded time.
        delay = 0.1
        for attempt in range(self.store_retries):
            try:
                return await write()
            except StoreError as exc:
                if attempt >= self.store_retries - 1:
                    self._count("store_error")
                    log.error("store write failed: giving up", source=self.source,
                              error=str(exc), **what)
                    raise
                log.warning("store write failed: retrying", source=self.source,
                            error=str(exc), retry_in_s=delay, **what)
                await self.sleep(delay)
                delay = min(delay * 3, 5.0)
        raise AssertionError("unreachable")  # pragma: no cover

    async def alive(self, markets: Iterable[str] | None = None) -> None:
        """The source is live (heartbeat, 304, unchanged data) though nothing changed:
        refresh ``markets`` (None: every market of this source, in O(1)) and reopen those
        that were suspended for staleness."""
        now = self.clock()
        self._heard(now)
        if markets is None:
            self.source_alive_s = now
            wanted = list(self.auto_suspended)
        else:
            wanted = [m for m in markets if m in self.last_seen]
            for m in wanted:
                self.last_seen[m] = now
        await self._reopen([m for m in wanted if m in self.auto_suspended])
        await self.publish_health()

    async def _reopen(self, markets: list[str]) -> None:
        for m in markets:
            out = await self._apply(MarketUpdate(market=m, fields={"status": "open"},
                                                 source=self.source + HEALTH_SOURCE_SUFFIX,
                                                 feed=self._sweep))
            self.auto_suspended.discard(m)
            if isinstance(out, (Created, Changed, NoOp, Applied)):
                self.status[m] = out.market.status
            log.info("feed live again: market reopened", source=self.source, market=m)
        if markets:
            self._publish_health()

    def _publish_health(self) -> None:
        STALE.labels(self.source).set(len(self.auto_suspended))
        HEALTHY.labels(self.source).set(0 if self.auto_suspended else 1)

    async def check_staleness(self) -> list[str]:
        """Suspend every open market this source has been silent on past the limit;
        returns the markets suspended by this call."""
        now = self.clock()
        alive = self.source_alive_s
        stale = [m for m, t in self.last_seen.items()
                 if now - max(t, alive) > self.staleness_s and m not in self.auto_suspended
                 and self.status.get(m) == "open"]
        for m in stale:
            out = await self._apply(MarketUpdate(market=m, fields={"status": "suspended"},
                                                 source=self.source + HEALTH_SOURCE_SUFFIX,
                                                 feed=self._sweep))
            if isinstance(out, Standby):  # another feed is live on it: ours gives it up
                self.auto_suspended.add(m)
                log.info("feed silent: market left to another feed", source=self.source,
                         market=m, driver=out.driver)
            elif isinstance(out, (Created, Changed, NoOp, Applied)):
                self.auto_suspended.add(m)
                self.status[m] = out.market.status
                log.warning("feed silent: market suspended", source=self.source, market=m,
                            silent_s=round(now - max(self.last_seen[m], alive), 1),
                            staleness_s=self.staleness_s)
        self._publish_health()
        return stale

    async def publish_health(self, *, force: bool = False) -> None:
        """Publish this source's health to the store's feed health, at most once per
        ``health_period_s`` unless ``force``; called by submits, :meth:`alive` and
        :meth:`watch`. Skipped when the store is a stand-in (not a Store); a store error is
        logged, never raised: health must not stop the feed."""
        now = self.clock()
        if not isinstance(self.store, Store) or (
                not force and now - self._health_sent_s < self.health_period_s):
            return
        self._health_sent_s = now  # before the await: concurrent lanes publish once
        entry = FeedHealth(source=self.source, last_message_ms=int(self.last_message_s * 1000),
                           lag_ms=int(self.lag_s * 1000), markets=len(self.last_seen),
                           suspended_for_silence=len(self.auto_suspended),
                           updated_ms=int(now * 1000),
                           # the source's failover priority where the runner knows it
                           priority=self.priority)
        try:
            await publish_feed_health(self.store, entry)
        except StoreError as exc:
            log.warning("feed health not published", source=self.source, error=str(exc))

    def health(self) -> dict[str, Any]:
        """A summary for logs: counts, lag, silence and stale markets."""
        now = self.clock()
        return {"source": self.source, "lag_s": round(self.lag_s, 3),
                "silent_s": round(now - self.last_message_s, 1) if self.last_message_s else None,
                "markets": len(self.last_seen), "stale_markets": len(self.auto_suspended),
                "provider_lagging": self.provider_lagging, "lag_notices": self.lag_notices,
                "counts": dict(self.counts)}

    async def watch(self, *, interval_s: float = 1.0, log_every_s: float = 60.0,
                    stop: asyncio.Event | None = None) -> None:
        """Check staleness and publish the health to the store every ``interval_s``, and
        log it every ``log_every_s``, until ``stop`` is set or the task is cancelled."""
        logged = self.clock()
        while stop is None or not stop.is_set():
            await self.sleep(interval_s)
            try:
                await self.check_staleness()
            except StoreError as exc:
                log.error("staleness check failed", source=self.source, error=str(exc))
            await self.publish_health(force=True)
            if self.clock() - logged >= log_every_s:
                logged = self.clock()
                log.info("feed health", **self.health())


class Lanes:
    """Applies updates concurrently across markets and in order within each market.

    An update goes to lane ``crc32(market) % lanes``; each lane hands what is waiting in
    its queue (up to ``batch`` updates, in order) to ``submit_many`` (usually
    :meth:`FeedRunner.submit_many`: one pipelined round trip) and waits for it before
    taking more, so per-market (and so per-source-and-market) order is kept while round
    trips to the store overlap across lanes. Each lane holds at most ``depth`` waiting
    updates besides the batch in flight: :meth:`put` waits when the lane is full
    (backpressure, no unbounded queue). Call :meth:`close` at the end; it waits for every
    lane and re-raises the first error a lane hit.
    """

    def __init__(self, submit_many: Callable[[list[MarketUpdate]], Awaitable[Any]], *,
                 lanes: int = 8, depth: int = 64, batch: int = 64) -> None:
        if lanes < 1 or depth < 1 or batch < 1:
            raise ValueError("lanes, depth and batch must be at least 1")
        self._submit_many = submit_many
        self._batch = batch
        self._queues: list[asyncio.Queue[MarketUpdate | None]] = [
            asyncio.Queue(maxsize=depth) for _ in range(lanes)]
        self._tasks = [asyncio.create_task(self._lane(q), name=f"ingest lane {i}")
                       for i, q in enumerate(self._queues)]
        self._error: BaseException | None = None

    async def _lane(self, queue: asyncio.Queue[MarketUpdate | None]) -> None:
        closing = False
        while not closing:
            first = await queue.get()
            batch = [] if first is None else [first]
            closing = first is None
            while not closing and len(batch) < self._batch and not queue.empty():
                update = queue.get_nowait()
                if update is None:
                    closing = True
                else:
                    batch.append(update)
            if batch and self._error is None:
                try:
                    await self._submit_many(batch)
                except Exception as exc:  # the top of a task: handed to the producer
                    self._error = exc

    async def put(self, update: MarketUpdate) -> None:
        """Queue one update on its market's lane; raises the first error a lane hit."""
        if self._error is not None:
            raise self._error
        lane = zlib.crc32(update.market.encode()) % len(self._queues)
        await self._queues[lane].put(update)

    async def close(self) -> None:
        """Apply everything queued, stop the lanes, and re-raise a lane's error."""
        try:
            for q in self._queues:
                await q.put(None)
            await asyncio.gather(*self._tasks)
        finally:
            for t in self._tasks:
                t.cancel()
        if self._error is not None:
            raise self._error
