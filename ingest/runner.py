"""The feed runner: every adapter's updates go through here into the store's one atomic
apply path, with bad provider data counted and skipped, and feed health: a market whose
source went silent past the staleness limit is suspended, and reopened by the next good
update from that source. No dead price is ever shown as live."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from prometheus_client import Counter, Gauge

from oddsfeed.book import Changed, Created, NoOp, Rejected
from oddsfeed.errors import InvalidInput, ProviderDataError, StoreError
from oddsfeed.model import MarketUpdate

log = structlog.get_logger("oddsfeed.ingest")

MESSAGES = Counter("oddsfeed_ingest_messages_total", "provider messages by outcome",
                   ["source", "outcome"])
BAD = Counter("oddsfeed_ingest_bad_messages_total", "provider messages skipped as bad",
              ["source"])
LAG = Gauge("oddsfeed_ingest_lag_seconds", "receive time minus provider time of the last "
            "update", ["source"], multiprocess_mode="max")
STALE = Gauge("oddsfeed_ingest_stale_markets", "markets suspended for a silent feed",
              ["source"], multiprocess_mode="max")


class Applier(Protocol):
    async def apply(self, update: MarketUpdate) -> Any: ...


@dataclass
class FeedRunner:
    """Applies one source's updates; call :meth:`submit` per update, :meth:`bad` per bad
    message, and run :meth:`watch` as a task for staleness. ``clock`` returns seconds."""

    store: Applier
    source: str
    staleness_s: float = 30.0
    clock: Callable[[], float] = time.time
    last_seen: dict[str, float] = field(default_factory=dict)
    auto_suspended: set[str] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)

    def _count(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        MESSAGES.labels(self.source, outcome).inc()

    def bad(self, exc: ProviderDataError | InvalidInput, raw: object = None) -> None:
        """Log and count a bad provider message; it is skipped."""
        self._count("bad")
        BAD.labels(self.source).inc()
        excerpt = getattr(exc, "raw", None) or (repr(raw)[:300] if raw is not None else "")
        log.warning("bad provider message skipped", source=self.source, error=str(exc),
                    raw=excerpt)

    async def submit(self, update: MarketUpdate) -> Any:
        """Apply one normalised update (adding this runner's source); returns the outcome."""
        now = self.clock()
        fields = dict(update.fields)
        mid = update.market
        if mid in self.auto_suspended and "status" not in fields:
            fields["status"] = "open"  # the feed spoke again: reopen what we suspended
        try:
            upd = MarketUpdate(market=mid, fields=fields, selections=update.selections,
                               replace=update.replace, create=update.create, ts=update.ts,
                               source=update.source or self.source, seq=update.seq)
        except InvalidInput as exc:
            self.bad(exc, update)
            return None
        try:
            outcome = await self.store.apply(upd)
        except StoreError as exc:
            self._count("store_error")
            log.error("store write failed", source=self.source, market=mid, error=str(exc))
            raise
        if isinstance(outcome, Rejected):
            self._count("rejected")
            log.warning("update rejected", source=self.source, market=mid,
                        reason=outcome.reason, detail=outcome.message)
        elif isinstance(outcome, (Created, Changed, NoOp)):
            self._count("applied" if not isinstance(outcome, NoOp) else "noop")
            self.last_seen[mid] = now
            self.auto_suspended.discard(mid)
            if upd.ts is not None:
                LAG.labels(self.source).set(max(0.0, now - upd.ts / 1000))
        elif outcome is None:
            self._count("recorded")
        else:
            self._count("out_of_order")
        return outcome

    def touch(self, markets: Iterable[str]) -> None:
        """The source is alive for these markets (a heartbeat) though nothing changed."""
        now = self.clock()
        for m in markets:
            if m in self.last_seen:
                self.last_seen[m] = now

    async def check_staleness(self) -> list[str]:
        """Suspend every market this source has been silent on past the limit."""
        now = self.clock()
        stale = [m for m, t in self.last_seen.items()
                 if now - t > self.staleness_s and m not in self.auto_suspended]
        for m in stale:
            out = await self.store.apply(MarketUpdate(
                market=m, fields={"status": "suspended"}, source=f"{self.source}:health"))
            if not isinstance(out, Rejected):
                self.auto_suspended.add(m)
                log.warning("feed silent: market suspended", source=self.source, market=m,
                            silent_s=round(now - self.last_seen[m], 1))
        STALE.labels(self.source).set(len(self.auto_suspended))
        return stale

    async def watch(self, interval_s: float = 1.0) -> None:
        """Check staleness forever (run as a task)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.check_staleness()
            except StoreError as exc:
                log.error("staleness check failed", source=self.source, error=str(exc))
