"""The node's hub: which local clients want which markets, what the node last forwarded for
each market, and the race-free path from the store to every client (protocol.md section 2).

Rules this module enforces:
- a market's Redis channel is subscribed only while a local client wants it;
- a client's catch-up (history or snapshot) is read only after the channel is subscribed,
  and live payloads that arrive meanwhile are held and released by version, so there is
  never a hole between catch-up and live;
- every delta is forwarded only on top of the version the client holds; a gap on the
  Redis -> node hop (pub/sub is at-most-once) is repaired with a snapshot, never skipped;
- each message is one shared :class:`~oddsfeed.wire.Outgoing`, encoded once per encoding.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any, Protocol

from .. import wire
from ..book import Delta
from ..errors import InvalidInput, StoreError
from ..model import Market
from ..session import FULL, SLOW, Outbox
from ..store import Announced, Gone, Store, decode_payload
from ..subscriptions import SubscriptionIndex
from . import metrics

log = logging.getLogger("oddsfeed.fanout")

# How many subscribers of one delta the hub hands to the sink's send_many at a time.
SEND_CHUNK = 128

# What a held (not yet released) live item can be.
Held = Delta | Market | Gone


class Sink(Protocol):
    """What the hub and its clients need from the I/O side; the server implements it and
    every client and the hub hold the one instance (no per-connection callbacks)."""

    def ready(self, client: Client, urgent: bool) -> None:
        """The client's outbox stopped being empty (or got an urgent message, or a frame's
        worth): write it now or at the end of the batching window."""

    def direct(self, client: Client, out: wire.Outgoing, now: float) -> bool:
        """Called while the client's outbox is empty: write ``out`` at once and return True,
        or return False to have it queued."""

    def slow(self, client: Client) -> None:
        """The client is past its slow-consumer limit: close it (4008)."""

    def send_many(self, clients: list[Client], out: wire.Outgoing, market: str,
                  delta: Delta, now: float) -> None:
        """One delta to every client of ``clients`` (the hub already moved their positions);
        must behave like ``client.push()`` for each of them, in order."""


class Client:
    """One WebSocket connection's protocol state; the I/O lives in the server module."""

    __slots__ = ("id", "encoding", "outbox", "pos", "pending", "via_event", "explicit",
                 "closed", "sink", "counted", "last_sent", "writer", "conn", "transport", "proto",
                 "fd", "received", "rate", "streak",
                 "__weakref__")

    def __init__(self, cid: int, encoding: str, outbox: Outbox) -> None:
        self.id = cid
        self.encoding = encoding
        self.outbox = outbox
        # market -> (epoch, version) the client holds, or None (subscribed, market absent)
        self.pos: dict[str, tuple[str, int] | None] = {}
        # market -> live items held while its catch-up is being read
        self.pending: dict[str, list[Held]] = {}
        self.via_event: dict[str, str] = {}  # market -> event it came in through
        self.explicit: set[str] = set()  # markets the client named itself
        self.closed = False
        # the server: decides when the writer wakes (batching window), may write a message
        # at once, closes a slow client
        self.sink: Sink | None = None
        self.last_sent = 0.0  # monotonic time of the last frame written
        # the writer task, only while the socket is backed up (memory: no idle task per
        # connection); while it runs, nothing else writes to this connection
        self.writer: asyncio.Task[None] | None = None
        self.conn: Any = None  # the server's connection object
        # its transport and protocol state machine (the hot path reads them per delivery)
        self.transport: Any = None
        self.proto: Any = None
        self.fd = -1  # its socket, where the server may write to it directly (else -1)
        self.counted = 0  # subscriptions this client holds in the metrics gauge
        # messages handed to this client since the server's ticker last visited it, and how
        # many it got in the visit period before (hot connections share frames when busy)
        self.received = 0
        self.rate = 0
        # deliveries in a row that came within the server's quiet period of its last frame,
        # up to the server's HOT_STREAK (a connection whose traffic jumps is known to be hot
        # within a few messages)
        self.streak = 0

    def __hash__(self) -> int:
        return self.id

    def __eq__(self, other: object) -> bool:
        return self is other

    def push(self, out: wire.Outgoing, *, market: str | None = None,
             delta: Delta | None = None, now: float | None = None,
             write_through: bool = True) -> None:
        """Queue a message; a slow verdict hands the client to ``sink.slow`` (close 4008).
        ``now`` (monotonic) may be passed by a caller pushing to many clients at once;
        ``write_through=False`` skips ``sink.direct`` (the caller already asked it)."""
        if self.closed:
            return
        self.received += 1
        outbox = self.outbox
        was_empty = not outbox.queued_bytes
        sink = self.sink
        if was_empty and write_through and sink is not None:
            if now is None:
                now = time.monotonic()
            if sink.direct(self, out, now):
                return
        before = outbox.conflations
        verdict = outbox.push(out, now=time.monotonic() if now is None else now,
                              market=market, delta=delta)
        if outbox.conflations != before:
            metrics.CONFLATIONS.inc(outbox.conflations - before)
        if verdict == SLOW:
            self.closed = True
            if sink is not None:
                sink.slow(self)
            return
        now_please = out.urgent or verdict == FULL
        if (was_empty or now_please) and sink is not None:
            # urgent, or a frame's worth queued: written now, not at the window's end
            sink.ready(self, now_please)


class Hub:
    """The per-process fan-out state between the store's bus and local clients."""

    def __init__(self, store: Store, *, max_subscriptions: int = 10_000) -> None:
        self.store = store
        self.index: SubscriptionIndex[Client] = SubscriptionIndex()
        self.max_subscriptions = max_subscriptions
        # market -> (epoch, version) last forwarded by this node from the bus (or re-read
        # for every client at once). A client's own catch-up read must not move it: that read
        # can be ahead of the bus, and the versions in between are still owed to the others.
        self.markets: dict[str, tuple[str, int]] = {}
        self.clients: set[Client] = set()
        self.bus = store.bus(self.on_bus_message, self.on_bus_reconnect)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._repairing: set[str] = set()
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
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

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

    async def subscribe(self, client: Client, req: wire.Subscribe) -> None:
        """Handle ``subscribe``: reply ``subscribed`` then each market's catch-up, then live."""
        new_ids = [m for m in req.markets if m not in self.index.markets_of(client)]
        new_events = [e for e in req.events if e not in self.index.events_of(client)]
        if self.index.count(client) + len(new_ids) + len(new_events) > self.max_subscriptions:
            client.push(wire.error("limit_exceeded",
                                   f"at most {self.max_subscriptions} subscriptions per connection",
                                   req.id))
            return
        for e in req.events:
            if self.index.add_event(client, e):
                await self.bus.subscribe_event(e)
        via: dict[str, str] = {}
        for e in req.events:
            for m in await self.store.event_market_ids(e):
                if m not in req.markets:
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
        """Subscribe the channels, read catch-up, reply, send catch-up, release held items."""
        for m in markets:
            client.pending.setdefault(m, [])
            if self.index.add_market(client, m):
                self.markets.pop(m, None)  # a (re)subscribed channel starts a new sequence
            # Awaited even when another client already asked for the channel: it returns once
            # the server confirmed the subscription, so the read below cannot overtake it.
            await self.bus.subscribe_market(m)
        self._sync_count(client)
        histories: dict[str, tuple[Market, list[Delta]] | None] = {}
        for m in markets:
            p = from_.get(m) if from_ else None
            if p is not None:
                histories[m] = await self.store.history(m, p.epoch, p.version)
        need = [m for m in markets if histories.get(m) is None]
        current = await self.store.get_many(need) if need else {}
        found = [m for m in markets if histories.get(m) is not None or current.get(m) is not None]
        missing = [m for m in named if m not in found]
        if reply:
            client.push(wire.reply("subscribed", reply_id, markets=found,
                                   events=list(events), missing=missing))
        for m in markets:
            if client.outbox.queued_bytes > client.outbox.high_water_bytes:
                await self._drained(client)
            if client.closed:
                return found, missing
            if m not in client.pending:
                continue  # unsubscribed meanwhile
            hist = histories.get(m)
            if hist is not None:
                market, deltas = hist
                for d in deltas:
                    client.push(wire.delta(d), market=m, delta=d)
                client.pos[m] = (market.epoch, market.version)
            else:
                snap = current.get(m)
                if snap is not None:
                    client.push(wire.snapshot(snap), market=m)
                    client.pos[m] = (snap.epoch, snap.version)
                else:
                    if m in client.pos and client.pos[m] is not None:
                        client.push(wire.gone(m), market=m)
                    client.pos[m] = None
            self._release(client, m)
        return found, missing

    @staticmethod
    async def _drained(client: Client) -> None:
        """Wait while the client's outbox is past its high-water mark, so that a large
        catch-up (snapshots do not conflate) goes out at the pace the client reads instead of
        being queued at once and cut as slow. The slow-consumer checks still apply meanwhile:
        a client that does not read is closed, which ends the wait."""
        # A poll, not an event: the outbox is drained by the server's writer, which has no
        # hook into the hub, and this only runs while a catch-up is past the high-water mark.
        outbox = client.outbox
        while outbox.queued_bytes > outbox.high_water_bytes and not client.closed:  # noqa: ASYNC110
            await asyncio.sleep(0.005)

    def _release(self, client: Client, market: str) -> None:
        held = client.pending.pop(market, None)
        if not held:
            return
        for item in held:
            self._deliver(client, market, item)

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
                if item.market not in self.index.markets_of(client):
                    client.via_event.setdefault(item.market, ident)
                    self._spawn(self._catch_up(client, [item.market], {}, reply=False))
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
                        held.append(item)
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
                held.append(item)
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
            if pos is not None and pos == (item.epoch, item.version):
                return
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
        """Re-read one market after a gap on the Redis hop and resend it to its clients."""
        clients = [c for c in self.index.market_subscribers(market) if market not in c.pending]
        for c in clients:
            c.pending[market] = []
        try:
            snap = await self.store.get(market)
        except StoreError:
            snap = None
            log.warning("repair read failed for %s", market)
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
                continue
            self._deliver(c, market, snap if snap is not None else Gone(market), out)
            self._release(c, market)

    async def on_bus_reconnect(self) -> None:
        """After a bus reconnect: re-read every subscribed market, resend where a client's
        position cannot be vouched for, and pick up markets created under events meanwhile."""
        markets = list(self.index.markets())
        metrics.RESYNCS.inc(len(markets))
        for i in range(0, len(markets), 500):
            chunk = markets[i:i + 500]
            current = await self.store.get_many(chunk)
            for m in chunk:
                snap = current.get(m)
                if snap is not None:
                    self.markets[m] = (snap.epoch, snap.version)
                else:
                    self.markets.pop(m, None)
                item: Held = snap if snap is not None else Gone(m)
                for client in list(self.index.market_subscribers(m)):
                    held = client.pending.get(m)
                    if held is not None:
                        held.append(item)
                    else:
                        self._deliver(client, m, item)
        for e in list(self.index.events()):
            ids = await self.store.event_market_ids(e)
            for client in list(self.index.event_subscribers(e)):
                new = [m for m in ids if m not in self.index.markets_of(client)]
                for m in new:
                    client.via_event.setdefault(m, e)
                if new:
                    self._spawn(self._catch_up(client, new, {}, reply=False))
