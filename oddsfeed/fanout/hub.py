"""The node's hub: which local clients want which markets, what the node last forwarded for
each market, and the race-free path from the store to every client (protocol.md section 2).

Rules this module enforces:
- a market's Redis channel is subscribed only while a local client wants it;
- a client's catch-up (history or snapshot) is read only after the channel is subscribed,
  and live payloads that arrive meanwhile are held and released by version, so there is
  never a hole between catch-up and live;
- every delta is forwarded only on top of the version the client holds; a gap on the
  Redis -> node hop (pub/sub is at-most-once) is repaired with a snapshot, never skipped;
- each message is one shared :class:`~oddsfeed.core.wire.Outgoing`, encoded once per encoding;
- a subscription never waits silently: a catch-up whose store read fails leaves the market
  subscribed and owed (a snapshot or ``gone`` follows once the store answers), items held
  during a catch-up count against the connection's outbox limit, and every client is told
  when the node loses and regains the store (``status``, docs/protocol.md).
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
from ..store import Announced, Gone, decode_payload
from . import metrics
from .client import Client, Held, Sink
from .owed import Owed

__all__ = ["Client", "Held", "Hub", "Sink"]

log = logging.getLogger("oddsfeed.fanout")

# How many subscribers of one delta the hub hands to the sink's send_many at a time.
SEND_CHUNK = 128

KEPT = ("the store is unavailable: the subscription is kept and its markets follow when the "
        "store answers")


def _newer(pos: tuple[str, int] | None, market: Market) -> bool:
    """Whether a client at ``pos`` holds a later version of ``market``'s epoch."""
    return pos is not None and pos[0] == market.epoch and pos[1] > market.version


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
        self._repairing: set[str] = set()
        # catch-ups a failed store read left undone: retried with backoff (and covered by
        # the re-read after a bus reconnect)
        self.owed = Owed(self)
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

    def _spawn(self, coro: Any) -> None:
        self.track(asyncio.get_running_loop().create_task(coro))

    def track(self, task: asyncio.Task[Any]) -> None:
        """Keep ``task`` until it ends (cancelled by :meth:`stop`); log its failure."""
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def catch_up(self, client: Client, markets: list[str]) -> None:
        """Send ``client`` a snapshot (or ``gone``) of each of ``markets`` it is subscribed
        to, then their live deltas; a failed read owes them again."""
        await self._catch_up(client, markets, {}, reply=False)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("hub task failed", exc_info=task.exception())

    # ---- clients -------------------------------------------------------------------------

    def _sync_count(self, client: Client) -> None:
        n = self.index.count(client)
        if n != client.counted:
            metrics.SUBSCRIPTIONS.inc(n - client.counted)
            client.counted = n

    def add_client(self, client: Client) -> None:
        self.clients.add(client)

    async def remove_client(self, client: Client) -> None:
        client.closed = True
        self.clients.discard(client)
        self.owed.drop(client)
        markets, events = self.index.drop(client)
        self._sync_count(client)
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
        await self._catch_up(client, wanted, req.from_, reply_id=req.id, events=req.events,
                             named=req.markets)

    async def _catch_up(self, client: Client, markets: list[str],
                        from_: dict[str, wire.Position] | Any, *, reply_id: Any = None,
                        events: Iterable[str] = (), named: Iterable[str] = (),
                        reply: bool = True) -> tuple[list[str], list[str]]:
        """Subscribe the channels, read catch-up, reply, send catch-up, release held items.

        If a read fails the markets stay subscribed and owed (see :class:`.owed.Owed`),
        their held items are dropped (the snapshot that repays them supersedes them), and a
        request gets ``error`` ``internal``: nothing waits on a read that will not come."""
        for m in markets:
            client.pending.setdefault(m, [])
            if self.index.add_market(client, m):
                self.markets.pop(m, None)  # a (re)subscribed channel starts a new sequence
            # Awaited even when another client already asked for the channel: it returns once
            # the server confirmed the subscription, so the read below cannot overtake it.
            await self.bus.subscribe_market(m)
        self._sync_count(client)
        histories: dict[str, tuple[Market, list[Delta]] | None] = {}
        try:
            for m in markets:
                p = from_.get(m) if from_ else None
                if p is not None:
                    histories[m] = await self.store.history(m, p.epoch, p.version)
            need = [m for m in markets if histories.get(m) is None]
            current = await self.store.get_many(need) if need else {}
        except StoreError as exc:
            log.warning("catch-up read failed for %d market(s), owed: %s", len(markets), exc)
            mine = self.index.markets_of(client)
            kept = [m for m in markets if m in mine]
            for m in markets:
                client.pending.pop(m, None)
            for m in kept:
                # the client keeps what it holds; None: it holds nothing the node knows of
                client.pos.setdefault(m, None)
            self._settle_held(client)
            self.owed.add(client, kept, ())
            if reply:
                client.push(wire.error("internal", KEPT, reply_id))
            return [], []
        found = [m for m in markets if histories.get(m) is not None or current.get(m) is not None]
        missing = [m for m in named if m not in found]
        if reply:
            client.push(wire.reply("subscribed", reply_id, markets=found,
                                   events=list(events), missing=missing))
        for m in markets:
            if client.outbox.queued_bytes > client.outbox.high_water_bytes:
                await client.drained()
            if client.closed:
                return found, missing
            if m not in client.pending:
                continue  # unsubscribed meanwhile
            hist = histories.get(m)
            pos = client.pos.get(m)
            if hist is not None:
                market, deltas = hist
                for d in deltas:
                    client.push(wire.delta(d), market=m, delta=d)
                if not _newer(pos, market):
                    client.pos[m] = (market.epoch, market.version)
            else:
                snap = current.get(m)
                if snap is not None:
                    # another catch-up of this market (its read later than this one) may
                    # have gone out meanwhile: never send the client back to an older version
                    if not _newer(pos, snap):
                        client.push(wire.snapshot(snap), market=m)
                        client.pos[m] = (snap.epoch, snap.version)
                else:
                    if m in client.pos and client.pos[m] is not None:
                        client.push(wire.gone(m), market=m)
                    client.pos[m] = None
            self._release(client, m)
        return found, missing

    def _release(self, client: Client, market: str) -> None:
        held = client.pending.pop(market, None)
        self._settle_held(client)
        if not held:
            return
        for item in held:
            self._deliver(client, market, item)

    @staticmethod
    def _settle_held(client: Client) -> None:
        """Forget the held bytes once no catch-up of ``client`` is running (counted per
        connection, not per market: while several run, released bytes still count)."""
        if not client.pending:
            client.held_bytes = 0

    def _hold(self, client: Client, held: list[Held], item: Held, out: wire.Outgoing) -> None:
        """Hold a live item while the client's catch-up runs; its bytes count against the
        outbox's hard limit, and past it the client is closed as a slow consumer (4008)."""
        held.append(item)
        client.held_bytes += len(out.payload(client.encoding))
        if client.held_bytes + client.outbox.queued_bytes > client.outbox.max_bytes:
            client.closed = True
            if client.sink is not None:
                client.sink.slow(client)

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
        self._sync_count(client)
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
        self._sync_count(client)
        await self._release_channels(lost_m, lost_e)

    def _drop_market(self, client: Client, m: str, lost: list[str]) -> None:
        client.via_event.pop(m, None)
        client.pos.pop(m, None)
        client.pending.pop(m, None)
        self._settle_held(client)
        if m in self.index.markets_of(client) and self.index.remove_market(client, m):
            lost.append(m)

    # ---- live path ---------------------------------------------------------------------------

    def on_bus_message(self, kind: str, ident: str, payload: bytes) -> None:
        """Bus callback: decode once, check continuity, hand to every local subscriber."""
        self.deltas_in += 1
        try:
            item, t_us = decode_payload(payload)
        except InvalidInput as exc:
            log.warning("bad store payload on %s %s: %s", kind, ident, exc)
            return
        if isinstance(item, Announced):
            for client in list(self.index.event_subscribers(ident)):
                new = self.expand(client, ident, (item.market,))
                if new:
                    self._spawn(self._catch_up(client, new, {}, reply=False))
            return
        market = ident
        subscribers = self.index.market_subscribers(market)
        if not subscribers:
            return  # a late message of a channel being dropped: no continuity to keep
        if isinstance(item, Delta):
            known = self.markets.get(market)
            if known is not None and known[0] == item.epoch:
                if item.version <= known[1]:
                    return  # duplicate
                if item.base != known[1]:
                    self._repair(market)
                    return
            self.markets[market] = (item.epoch, item.version)
            out = wire.delta(item)
            out.t_us = t_us
            if t_us:
                # how far behind the store this node is: the server batches harder when late.
                # (t_us is the store server's clock: a skew between hosts only shifts how
                # soon that happens, never what is delivered)
                self.lateness_s = time.time() - t_us / 1e6
        elif isinstance(item, Market):
            self.markets[market] = (item.epoch, item.version)
            out = wire.snapshot(item)
        else:
            self.markets.pop(market, None)
            out = wire.gone(market)
        if isinstance(item, Delta):
            # The common case inlined (profiled: this loop runs once per delivery): a client
            # holding the delta's base takes it; anything else goes through _deliver. The
            # takers go to the sink SEND_CHUNK at a time, so that the first of 500
            # subscribers are written to before the last ones are looked at.
            epoch, base, pos_new = item.epoch, item.base, (item.epoch, item.version)
            now = time.monotonic()
            ready: list[Client] = []
            for client in subscribers:
                if client.pending:
                    held = client.pending.get(market)
                    if held is not None:
                        self._hold(client, held, item, out)
                        continue
                pos = client.pos.get(market)
                if pos is not None and pos[1] == base and pos[0] == epoch:
                    client.pos[market] = pos_new
                    ready.append(client)
                    if len(ready) == SEND_CHUNK:
                        self._send_many(ready, out, market, item, now)
                        ready = []
                else:
                    self._deliver(client, market, item, out)
            if ready:
                self._send_many(ready, out, market, item, now)
            return
        for client in subscribers:
            held = client.pending.get(market)
            if held is not None:
                self._hold(client, held, item, out)
            else:
                self._deliver(client, market, item, out)

    def _send_many(self, ready: list[Client], out: wire.Outgoing, market: str, item: Delta,
                   now: float) -> None:
        if self.sink is not None:
            self.sink.send_many(ready, out, market, item, now)
        else:
            for client in ready:
                client.push(out, market=market, delta=item, now=now)

    def _deliver(self, client: Client, market: str, item: Held,
                 out: wire.Outgoing | None = None) -> None:
        pos = client.pos.get(market)
        if isinstance(item, Delta):
            if pos is not None and pos[0] == item.epoch:
                if item.version <= pos[1]:
                    return
                if item.base == pos[1]:
                    client.push(out or wire.delta(item), market=market, delta=item)
                    client.pos[market] = (item.epoch, item.version)
                    return
            # a gap or another epoch for this client: resend the market
            self._spawn(self._resync(client, market))
        elif isinstance(item, Market):
            if pos is not None and pos[0] == item.epoch and pos[1] >= item.version:
                return  # holds it, or a later version (a re-read can lag a catch-up)
            client.push(out or wire.snapshot(item), market=market)
            client.pos[market] = (item.epoch, item.version)
        else:
            if pos is None:
                return
            client.push(out or wire.gone(market), market=market)
            client.pos[market] = None

    async def _resync(self, client: Client, market: str) -> None:
        if client.closed or market in client.pending or market not in client.pos:
            return
        client.pending[market] = []
        try:
            await self._catch_up(client, [market], {}, reply=False)
        finally:
            client.pending.pop(market, None)

    def _repair(self, market: str) -> None:
        if market in self._repairing:
            return
        self._repairing.add(market)
        metrics.GAPS_REPAIRED.inc()
        self._spawn(self._repair_market(market))

    async def _repair_market(self, market: str) -> None:
        """Re-read one market after a gap on the Redis hop and resend it to its clients; if
        the read fails the market is owed to them (never a ``gone`` the store did not say)."""
        clients = [c for c in self.index.market_subscribers(market) if market not in c.pending]
        for c in clients:
            c.pending[market] = []
        try:
            snap = await self.store.get(market)
        except StoreError as exc:
            log.warning("repair read failed for %s, owed: %s", market, exc)
            for c in clients:
                c.pending.pop(market, None)
                self._settle_held(c)
                if market in self.index.markets_of(c):
                    self.owed.add(c, (market,), ())
            return
        finally:
            self._repairing.discard(market)
        if snap is not None:
            self.markets[market] = (snap.epoch, snap.version)
            out = wire.snapshot(snap)
        else:
            self.markets.pop(market, None)
            out = wire.gone(market)
        for c in clients:
            if market not in self.index.markets_of(c):
                c.pending.pop(market, None)
                self._settle_held(c)
                continue
            self._deliver(c, market, snap if snap is not None else Gone(market), out)
            self._release(c, market)

    async def on_bus_reconnect(self) -> None:
        """After a bus reconnect: re-read every subscribed market, resend where a client's
        position cannot be vouched for, and pick up markets created under events meanwhile;
        then tell every client the feed is restored. What a failed read leaves undone is
        owed (see :class:`~oddsfeed.fanout.owed.Owed`), and ``restored`` waits for it."""
        self.owed.clear()  # this re-read covers every market and event of every client
        try:
            await self._reread()
        except StoreError as exc:
            log.warning("re-read after the bus reconnect failed, owed: %s", exc)
            for client in list(self.clients):
                self.owed.add(client, self.index.markets_of(client), self.index.events_of(client))
            return
        self.restored()

    async def _reread(self) -> None:
        markets = list(self.index.markets())
        metrics.RESYNCS.inc(len(markets))
        for i in range(0, len(markets), 500):
            chunk = markets[i:i + 500]
            current = await self.store.get_many(chunk)
            for m in chunk:
                snap = current.get(m)
                item: Held
                if snap is not None:
                    self.markets[m] = (snap.epoch, snap.version)
                    item, out = snap, wire.snapshot(snap)
                else:
                    self.markets.pop(m, None)
                    item, out = Gone(m), wire.gone(m)
                for client in list(self.index.market_subscribers(m)):
                    held = client.pending.get(m)
                    if held is not None:
                        self._hold(client, held, item, out)
                    else:
                        self._deliver(client, m, item, out)
        for e in list(self.index.events()):
            ids = await self.store.event_market_ids(e)
            for client in list(self.index.event_subscribers(e)):
                new = self.expand(client, e, ids)
                if new:
                    self._spawn(self._catch_up(client, new, {}, reply=False))
