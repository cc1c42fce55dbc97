"""Re-reads from the store that put the hub's clients back on a known position: one
client's market after a gap only it saw, one market for all its clients after a gap on the
Redis -> node hop, and every market after a bus reconnect. No socket I/O; the hub owns the
state it resends, and a failed read is owed (:mod:`.owed`), never skipped."""

from __future__ import annotations

import logging

from ..core import wire
from ..core.errors import StoreError
from ..store import Gone
from . import metrics
from .client import Client, Held
from .delivery import hold, settle_held
from .hubview import HubView
from .runs import settle

log = logging.getLogger("oddsfeed.fanout")

# Markets per store read of the re-read after a bus reconnect.
REREAD_CHUNK = 500


class Repairs:
    """The hub's re-reads; at most one repair of a market runs at a time."""

    def __init__(self, hub: HubView) -> None:
        self._hub = hub
        self._repairing: set[str] = set()

    async def resync(self, client: Client, market: str) -> None:
        """Resend ``market`` to ``client`` (a delta it cannot apply: a gap or another
        epoch), unless it closed, dropped the market or a catch-up of it is running."""
        settle(client)  # what is held for it must not be advanced past by its run's cohort
        if client.closed or market in client.pending or market not in client.pos:
            return
        client.pending[market] = []
        try:
            await self._hub.catch_up(client, [market])
        finally:
            client.pending.pop(market, None)

    def repair(self, market: str) -> None:
        """A delta of ``market`` skipped a version on the Redis hop: re-read it for every
        client (once, however many deltas arrive meanwhile)."""
        if market in self._repairing:
            return
        self._repairing.add(market)
        metrics.GAPS_REPAIRED.inc()
        self._hub.spawn(self._repair_market(market))

    async def _repair_market(self, market: str) -> None:
        """Re-read one market after a gap on the Redis hop and resend it to its clients; if
        the read fails the market is owed to them (never a ``gone`` the store did not say)."""
        hub = self._hub
        clients = [c for c in hub.index.market_subscribers(market) if market not in c.pending]
        for c in clients:
            settle(c)  # held, not advanced by its run's cohort
            c.pending[market] = []
        try:
            snap = await hub.store.get(market)
        except StoreError as exc:
            log.warning("repair read failed for %s, owed: %s", market, exc)
            for c in clients:
                c.pending.pop(market, None)
                settle_held(c)
                if market in hub.index.markets_of(c):
                    hub.owed.add(c, (market,), ())
            return
        finally:
            self._repairing.discard(market)
        if snap is not None:
            hub.markets[market] = (snap.epoch, snap.version)
            out = wire.snapshot(snap)
        else:
            hub.markets.pop(market, None)
            out = wire.gone(market)
        for c in clients:
            if market not in hub.index.markets_of(c):
                c.pending.pop(market, None)
                settle_held(c)
                continue
            hub.deliver(c, market, snap if snap is not None else Gone(market), out)
            hub.release(c, market)

    async def reread_all(self) -> None:
        """After a bus reconnect: re-read every subscribed market, resend where a client's
        position cannot be vouched for, and pick up markets created under events meanwhile;
        then tell every client the feed is restored. What a failed read leaves undone is
        owed (see :class:`~oddsfeed.fanout.owed.Owed`), and ``restored`` waits for it."""
        hub = self._hub
        hub.owed.clear()  # this re-read covers every market and event of every client
        try:
            await self._reread()
        except StoreError as exc:
            log.warning("re-read after the bus reconnect failed, owed: %s", exc)
            for client in list(hub.clients):
                hub.owed.add(client, hub.index.markets_of(client), hub.index.events_of(client))
            return
        hub.restored()

    async def _reread(self) -> None:
        hub = self._hub
        markets = list(hub.index.markets())
        metrics.RESYNCS.inc(len(markets))
        for i in range(0, len(markets), REREAD_CHUNK):
            chunk = markets[i:i + REREAD_CHUNK]
            current = await hub.store.get_many(chunk)
            for m in chunk:
                snap = current.get(m)
                item: Held
                if snap is not None:
                    hub.markets[m] = (snap.epoch, snap.version)
                    item, out = snap, wire.snapshot(snap)
                else:
                    hub.markets.pop(m, None)
                    item, out = Gone(m), wire.gone(m)
                for client in list(hub.index.market_subscribers(m)):
                    held = client.pending.get(m)
                    if held is not None:
                        hold(client, held, item, out)
                    else:
                        hub.deliver(client, m, item, out)
        for e in list(hub.index.events()):
            ids = await hub.store.event_market_ids(e)
            for client in list(hub.index.event_subscribers(e)):
                new = hub.expand(client, e, ids)
                if new:
                    hub.spawn(hub.catch_up(client, new))
