"""The node's hub: which local clients want which markets, what the node last forwarded for
each market, and the race-free path from the store to every client (protocol.md section 2).

Rules the hub enforces (with the modules that hold them):
- a market's Redis channel is subscribed only while a local client wants it;
- a client's catch-up (history or snapshot) is read only after the channel is subscribed,
  and live payloads that arrive meanwhile are held and released by version, so there is
  never a hole between catch-up and live (:mod:`.catchup`);
- every delta is forwarded only on top of the version the client holds (:mod:`.delivery`);
  a gap on the Redis -> node hop (pub/sub is at-most-once) is repaired with a snapshot,
  never skipped (:mod:`.repair`);
- each message is one shared :class:`~oddsfeed.core.wire.Outgoing`, encoded once per encoding;
  a live delta arrives encoded from the store (:mod:`oddsfeed.store.published`) and is
  forwarded as it came;
- a subscription never waits silently: a catch-up whose store read fails leaves the market
  subscribed and owed (:mod:`.owed`: a snapshot or ``gone`` follows once the store
  answers), items held during a catch-up count against the connection's outbox limit, and
  every client is told when the node loses and regains the store (``status``,
  docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from ..core import wire
from ..core.book import Delta
from ..core.errors import InvalidInput, StoreError
from ..core.model import Market
from ..core.ports import MarketSource
from ..core.subscriptions import SubscriptionIndex
from ..store import PUBLISHED_MARK, Announced, decode_payload, live_delta
from . import metrics
from .catchup import catch_up
from .client import Client, Held, Sink
from .delivery import deliver, hold, settle_held
from .owed import Owed
from .repair import Repairs
from .runs import COHORT, settle

__all__ = ["Client", "Held", "Hub", "Sink"]

log = logging.getLogger("oddsfeed.fanout")

# How many subscribers of one delta the hub hands to the sink's send_many at a time.
SEND_CHUNK = 128



class Hub:
    """The per-process fan-out state between the store's bus and local clients."""

    def __init__(self, store: MarketSource, *, max_subscriptions: int = 10_000,
                 max_missing: int = 100) -> None:
        self.store = store
        self.index: SubscriptionIndex[Client] = SubscriptionIndex()
        # ids (markets, event-expanded markets included, and events) per connection
        self.max_subscriptions = max_subscriptions
        # markets without state and events without markets per connection: each is a store
        # channel the client could otherwise open for nothing
        self.max_missing = max_missing
        # market -> (epoch, version) last forwarded by this node from the bus (or re-read
        # for every client at once). A client's own catch-up read must not move it: that read
        # can be ahead of the bus, and the versions in between are still owed to the others.
        self.markets: dict[str, tuple[str, int]] = {}
        self.clients: set[Client] = set()
        self.bus = store.bus(self.on_bus_message, self.on_bus_reconnect, self.on_bus_lost)
        self._tasks: set[asyncio.Task[Any]] = set()
        # catch-ups a failed store read left undone: retried with backoff (and covered by
        # the re-read after a bus reconnect)
        self.owed = Owed(self)
        # re-reads that put clients back on a known position (gaps, bus reconnects)
        self.repairs = Repairs(self)
        # True from the bus losing the store until everything was re-read after it came back
        self.feed_interrupted = False
        # payloads received, handed to prometheus by flush_metrics() (cheap hot path)
        self.deltas_in = 0
        # seconds between the store's apply and this node reading the last delta
        self.lateness_s = 0.0
        # set by the server: its send_many() hands one delta to every client that holds its
        # base in one call
        self.sink: Sink | None = None

    def flush_metrics(self) -> None:
        """Add what was counted since the last call to the prometheus metrics."""
        if self.deltas_in:
            metrics.DELTAS_IN.inc(self.deltas_in)
            self.deltas_in = 0

    async def start(self) -> None:
        await self.bus.start()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.bus.stop()

    @property
    def ready(self) -> bool:
        return self.bus.connected

    def spawn(self, coro: Any) -> None:
        self.track(asyncio.get_running_loop().create_task(coro))

    def track(self, task: asyncio.Task[Any]) -> None:
        """Keep ``task`` until it ends (cancelled by :meth:`stop`); log its failure."""
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def catch_up(self, client: Client, markets: list[str]) -> None:
        """Send ``client`` a snapshot (or ``gone``) of each of ``markets`` it is subscribed
        to, then their live deltas; a failed read owes them again."""
        await catch_up(self, client, markets, {}, reply=False)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("hub task failed", exc_info=task.exception())

    # ---- clients -------------------------------------------------------------------------

    def sync_count(self, client: Client) -> None:
        n = self.index.count(client)
        if n != client.counted:
            metrics.SUBSCRIPTIONS.inc(n - client.counted)
            client.counted = n

    def add_client(self, client: Client) -> None:
        self.clients.add(client)

    async def remove_client(self, client: Client) -> None:
        settle(client)  # a cohort counts subscribers of its market: it must lose this one too
        client.closed = True
        self.clients.discard(client)
        self.owed.drop(client)
        markets, events = self.index.drop(client)
        self.sync_count(client)
        await self._release_channels(markets, events)

    async def _release_channels(self, markets: Iterable[str], events: Iterable[str]) -> None:
        for m in markets:
            if any(True for _ in self.index.market_subscribers(m)):
                continue  # wanted again meanwhile
            self.markets.pop(m, None)
            await self.bus.unsubscribe_market(m)
        for e in events:
            await self.bus.unsubscribe_event(e)

    # ---- subscribe / unsubscribe ---------------------------------------------------------

    def missing(self, client: Client) -> int:
        """How many of ``client``'s subscriptions hold nothing: markets without state (or
        whose catch-up is still running) and events none of its markets came through."""
        markets = self.index.markets_of(client)
        pos = client.pos
        n = sum(1 for m in markets if pos.get(m) is None)
        events = self.index.events_of(client)
        if events:
            n += len(events - set(client.via_event.values()))
        return n

    async def subscribe(self, client: Client, req: wire.Subscribe) -> None:
        """Handle ``subscribe``: reply ``subscribed`` then each market's catch-up, then live.

        The limits are checked on what the request would add, event-expanded markets
        included, before anything changes: a refused request (``limit_exceeded``)
        subscribes nothing. While the store does not answer, every new market and event
        counts as missing (nothing is known to exist), and what is subscribed is owed: a
        snapshot of each market follows when the store answers."""
        mine = self.index.markets_of(client)
        new_events = [e for e in req.events if e not in self.index.events_of(client)]
        new_named = [m for m in req.markets if m not in mine]
        expanded: dict[str, list[str]] = {}
        existing: set[str] = set()
        try:
            for e in new_events:
                expanded[e] = await self.store.event_market_ids(e)
            existing = await self.store.existing(new_named) if new_named else set()
        except StoreError as exc:
            log.warning("store read failed before a subscribe, counted as missing: %s", exc)
            expanded.clear()
        named = set(req.markets)
        new_via = {m for ids in expanded.values() for m in ids if m not in mine and m not in named}
        adding = len(new_named) + len(new_via) + len(new_events)
        if self.index.count(client) + adding > self.max_subscriptions:
            client.push(wire.error(
                "limit_exceeded",
                f"at most {self.max_subscriptions} subscriptions per connection (markets, "
                f"the markets of subscribed events, and events); this request adds {adding} "
                f"to {self.index.count(client)}", req.id))
            return
        empty = (len(new_named) - len(existing)
                 + sum(1 for e in new_events if not expanded.get(e)))
        if empty and self.missing(client) + empty > self.max_missing:
            client.push(wire.error(
                "limit_exceeded",
                f"at most {self.max_missing} subscriptions per connection to markets or "
                f"events not known to exist; this request adds {empty}", req.id))
            return
        for e in req.events:
            if self.index.add_event(client, e):
                await self.bus.subscribe_event(e)
        via: dict[str, str] = {}
        for e in req.events:
            # read again now that the channel is subscribed: a market created since the
            # first read is either in this read or announced on the channel
            try:
                ids = await self.store.event_market_ids(e)
            except StoreError:
                ids = expanded.get(e, [])
                self.owed.add(client, (), (e,))
            for m in ids:
                if m not in named:
                    via.setdefault(m, e)
        client.explicit.update(req.markets)
        wanted = list(dict.fromkeys([*req.markets, *via]))
        for m in wanted:
            if m in via and m not in client.explicit:
                client.via_event[m] = via[m]
        await catch_up(self, client, wanted, req.from_, reply_id=req.id, events=req.events,
                       named=req.markets)

    def release(self, client: Client, market: str) -> None:
        held = client.pending.pop(market, None)
        settle_held(client)
        if not held:
            return
        for item in held:
            self.deliver(client, market, item)

    # ---- owed catch-ups and the store's status -------------------------------------------

    def expand(self, client: Client, event: str, ids: Iterable[str]) -> list[str]:
        """Subscribe ``client`` to the markets of ``event`` (read from the store) it does not
        hold yet, as coming through it, and return them: the caller runs their catch-up.
        Past the subscription limit the rest are refused with an ``error``
        ``limit_exceeded`` naming the event."""
        mine = self.index.markets_of(client)
        new = [m for m in ids if m not in mine and m not in client.pending]
        room = self.max_subscriptions - self.index.count(client)
        if len(new) > room:
            client.push(wire.error(
                "limit_exceeded",
                f"event {event} has {len(new) - max(room, 0)} more market(s) than the "
                f"{self.max_subscriptions} subscriptions a connection may hold; not subscribed"))
            new = new[:max(room, 0)]
        for m in new:
            client.via_event.setdefault(m, event)
            # subscribed now, not when the caller's catch-up task runs: the next expansion
            # counts it (the catch-up finds it pending and subscribed)
            client.pending.setdefault(m, [])
            if self.index.add_market(client, m):
                self.markets.pop(m, None)
        self.sync_count(client)
        return new

    def _broadcast(self, out: wire.Outgoing) -> None:
        for client in list(self.clients):
            client.push(out)

    def on_bus_lost(self) -> None:
        """Bus callback: the store connection is lost; every client is told at once."""
        if not self.feed_interrupted:
            self.feed_interrupted = True
            metrics.FEED_INTERRUPTED.set(1)
            self._broadcast(wire.status(wire.FEED_INTERRUPTED))

    def restored(self) -> None:
        """Tell every client the feed is back, once the bus is connected again and every
        market it holds was re-read (sent or owed to nobody)."""
        if self.feed_interrupted and self.bus.connected and not self.owed:
            self.feed_interrupted = False
            metrics.FEED_INTERRUPTED.set(0)
            self._broadcast(wire.status(wire.FEED_RESTORED))

    async def unsubscribe(self, client: Client, req: wire.Unsubscribe) -> None:
        """Handle ``unsubscribe``: reply with what this request removed."""
        removed_m: list[str] = []
        removed_e: list[str] = []
        lost_m: list[str] = []
        lost_e: list[str] = []
        for e in req.events:
            if e in self.index.events_of(client):
                removed_e.append(e)
                if self.index.remove_event(client, e):
                    lost_e.append(e)
                for m, ev in list(client.via_event.items()):
                    if ev == e and m not in client.explicit:
                        self._drop_market(client, m, lost_m)
        for m in req.markets:
            if m in self.index.markets_of(client):
                removed_m.append(m)
                client.explicit.discard(m)
                self._drop_market(client, m, lost_m)
        client.push(wire.reply("unsubscribed", req.id, markets=removed_m, events=removed_e))
        self.sync_count(client)
        await self._release_channels(lost_m, lost_e)

    def _drop_market(self, client: Client, m: str, lost: list[str]) -> None:
        settle(client)
        client.via_event.pop(m, None)
        client.pos.pop(m, None)
        client.pending.pop(m, None)
        settle_held(client)
        if m in self.index.markets_of(client) and self.index.remove_market(client, m):
            lost.append(m)

    # ---- live path ---------------------------------------------------------------------------

    def on_bus_message(self, kind: str, ident: str, payload: bytes) -> None:
        """Bus callback: check continuity, hand to every local subscriber. A delta arrives
        already encoded for the wire (:mod:`oddsfeed.store.published`): only its header is
        read here; anything else is decoded once."""
        self.deltas_in += 1
        try:
            if payload[:1] == PUBLISHED_MARK:
                item = live_delta(ident, payload)
                self._live(ident, item, item.out)
                return
            decoded, t_us = decode_payload(payload)
        except InvalidInput as exc:
            log.warning("bad store payload on %s %s: %s", kind, ident, exc)
            return
        if isinstance(decoded, Announced):
            for client in list(self.index.event_subscribers(ident)):
                new = self.expand(client, ident, (decoded.market,))
                if new:
                    self.spawn(catch_up(self, client, new, {}, reply=False))
            return
        market = ident
        if isinstance(decoded, Delta):
            out = wire.delta(decoded)
            out.t_us = t_us
            self._live(market, decoded, out)
            return
        subscribers = self.index.market_subscribers(market)
        if not subscribers:
            return  # a late message of a channel being dropped: no continuity to keep
        if isinstance(decoded, Market):
            self.markets[market] = (decoded.epoch, decoded.version)
            out = wire.snapshot(decoded)
        else:
            self.markets.pop(market, None)
            out = wire.gone(market)
        for client in subscribers:
            held = client.pending.get(market)
            if held is not None:
                hold(client, held, decoded, out)
            else:
                self.deliver(client, market, decoded, out)

    def _live(self, market: str, item: Delta, out: wire.Outgoing) -> None:
        """One live delta of ``market``: the node's continuity check, then every subscriber."""
        subscribers = self.index.market_subscribers(market)
        if not subscribers:
            return  # a late message of a channel being dropped: no continuity to keep
        epoch, base, version = item.epoch, item.base, item.version
        known = self.markets.get(market)
        checked = known is not None and known[0] == epoch
        if checked:
            assert known is not None
            if version <= known[1]:
                return  # duplicate
            if base != known[1]:
                self.repairs.repair(market)
                return
        pos_new = (epoch, version)
        self.markets[market] = pos_new
        t_us = out.t_us
        if t_us:
            # how far behind the store this node is: the server batches harder when late.
            # (t_us is the store server's clock: a skew between hosts only shifts how
            # soon that happens, never what is delivered)
            self.lateness_s = time.time() - t_us / 1e6
        # The common case inlined (this loop runs once per delivery): a client holding the
        # delta's base takes it; anything else goes through deliver(). The takers go to the
        # sink SEND_CHUNK at a time, so that the first of 500 subscribers are written to
        # before the last ones are looked at.
        # A run's cohort (members holding every delta of the window so far) takes the delta
        # at once, as one; the loop below then skips its members.
        sink = self.sink
        cohort = sink.advance(market, out, item, checked) if sink is not None else 0
        if cohort:
            if cohort >= len(subscribers):  # type: ignore[arg-type]  # the index's sets
                return
            subscribers = [c for c in subscribers if c.run_end != COHORT
                           or c.run is None or c.run.market != market]
        now = time.monotonic()
        ready: list[Client] = []
        for client in subscribers:
            if client.pending:
                held = client.pending.get(market)
                if held is not None:
                    hold(client, held, item, out)
                    continue
            pos = client.pos.get(market)
            if pos is not None and pos[1] == base and pos[0] == epoch:
                client.pos[market] = pos_new
                ready.append(client)
                if len(ready) == SEND_CHUNK:
                    self._send_many(ready, out, market, item, now)
                    ready = []
            else:
                self.deliver(client, market, item, out)
        if ready:
            self._send_many(ready, out, market, item, now)

    def _send_many(self, ready: list[Client], out: wire.Outgoing, market: str, item: Delta,
                   now: float) -> None:
        if self.sink is not None:
            self.sink.send_many(ready, out, market, item, now)
        else:
            for client in ready:
                client.push(out, market=market, delta=item, now=now)

    def deliver(self, client: Client, market: str, item: Held,
                out: wire.Outgoing | None = None) -> None:
        """Hand a live item to one client (see :func:`.delivery.deliver`), or resend it the
        market where the item does not apply on top of what it holds."""
        if not deliver(client, market, item, out):
            self.spawn(self.repairs.resync(client, market))

    async def on_bus_reconnect(self) -> None:
        """Bus callback: the store is back; re-read everything (see :class:`.repair.Repairs`)."""
        await self.repairs.reread_all()
