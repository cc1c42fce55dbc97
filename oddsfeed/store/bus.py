"""The store's pub/sub bus: market and event channels subscribed on demand, raw payloads
handed to a callback, reconnect with backoff, and a report of every reconnect."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

import hiredis
from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.crc import key_slot

from .codec import event_channel, market_channel, parse_channel
from .rawconn import auth_command, open_stream, pack

log = logging.getLogger("oddsfeed.store.bus")

_ERRORS = (redis_errors.RedisError, OSError, asyncio.TimeoutError)
CONFIRM_S = 5.0  # how long a subscribe waits for the server's confirmation
CONNECT_S = 2.0  # how long opening a pub/sub connection may take
# How often a connected bus pings the store: a node with no channel subscribed has no
# pub/sub connection to lose, and must still notice (and report) a lost store.
PROBE_S = 1.0


class _Shard(asyncio.Protocol):
    """One pub/sub connection to one server (a cluster primary, or the single server): a
    plain asyncio protocol whose bytes go through one ``hiredis.Reader``, each published
    message handed to the bus's callback from ``data_received`` (no task, no per-message
    timeout or retry wrapper: what a push stream needs is parsing and dispatch).

    The connection is opened by the first :meth:`subscribe`; its loss (not caused by
    :meth:`close`) calls ``on_lost`` once, and the bus's supervisor reconnects."""

    def __init__(self, connection_class: type[Connection] | type[UnixDomainSocketConnection],
                 connection_kwargs: dict[str, Any], sharded: bool,
                 on_message: Callable[[str, str, bytes], None],
                 on_lost: Callable[[], None]) -> None:
        self._connection_class = connection_class
        self._kwargs = connection_kwargs
        self.sharded = sharded
        self._on_message = on_message
        self._on_lost = on_lost
        self.channels: set[str] = set()
        self._confirming: dict[str, asyncio.Future[None]] = {}
        # channel name as published -> (kind, id), parsed once per channel, not per message
        self._routes: dict[bytes, tuple[str, str] | None] = {}
        self._replies: collections.deque[asyncio.Future[object]] = collections.deque()
        self._reader = hiredis.Reader()
        self._transport: asyncio.Transport | None = None
        self._connecting: asyncio.Future[None] | None = None
        self._closed = False

    # -- connection ---------------------------------------------------------------------------

    async def _connect(self) -> None:
        """Open the connection and authenticate with the store's own settings."""
        kw = self._kwargs
        ssl_context = None
        if not kw.get("path") and issubclass(self._connection_class, SSLConnection):
            ssl_context = SSLConnection(**kw).ssl_context.get()
        await open_stream(self, host=kw.get("host", "localhost"), port=int(kw.get("port", 6379)),
                          path=kw.get("path") or "", ssl_context=ssl_context, limit_s=CONNECT_S)
        auth = await auth_command(kw.get("username"), kw.get("password"),
                                  kw.get("credential_provider"))
        if auth is not None:
            reply = await asyncio.wait_for(self._request(*auth), CONFIRM_S)
            if isinstance(reply, Exception):
                raise redis_errors.AuthenticationError(f"pub/sub connection: {reply}")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        lost = ConnectionError(f"pub/sub connection lost: {exc}")
        waiting: list[asyncio.Future[Any]] = [*self._replies, *self._confirming.values()]
        for fut in waiting:
            if not fut.done():
                fut.set_exception(lost)
        self._replies.clear()
        if not self._closed:
            self._closed = True
            self._on_lost()

    def _send(self, *args: str | bytes) -> None:
        if self._transport is None or self._closed:
            raise ConnectionError("pub/sub connection is closed")
        self._transport.write(pack(args))

    def _request(self, *args: str) -> asyncio.Future[object]:
        """Send a command whose reply is not a pub/sub push (before any subscribe)."""
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._send(*args)
        self._replies.append(fut)
        return fut

    # -- the stream ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        try:
            while True:
                reply = reader.gets()
                if reply is False:
                    return
                if type(reply) is list and len(reply) == 3:
                    kind = reply[0]
                    if kind == b"smessage" or kind == b"message":
                        self._dispatch(reply[1], reply[2])
                        continue
                    if kind == b"subscribe" or kind == b"ssubscribe":
                        self.confirmed(reply[1].decode())
                        continue
                    if kind == b"unsubscribe" or kind == b"sunsubscribe":
                        continue
                if self._replies:
                    fut = self._replies.popleft()
                    if not fut.done():
                        fut.set_result(reply)
                elif isinstance(reply, Exception):
                    # a refused (s)subscribe (e.g. MOVED: the slot moved): resubscribe anew
                    log.warning("bus: the store refused a command: %s", reply)
                    self._fail()
                    return
        except hiredis.ProtocolError as exc:
            log.warning("bus: bad reply stream: %s", exc)
            self._fail()

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        route = self._routes.get(channel, _UNSEEN)
        if route is _UNSEEN:
            route = self._routes[channel] = parse_channel(channel.decode())
        if route is None:
            return
        try:
            self._on_message(route[0], route[1], data)
        except Exception:  # the callback's bug must not kill the bus
            log.exception("bus callback failed")

    def _fail(self) -> None:
        if self._transport is not None:
            self._transport.abort()  # connection_lost follows and reports it

    # -- subscriptions ------------------------------------------------------------------------

    async def subscribe(self, *channels: str) -> None:
        """Subscribe and return once the server confirmed it, so that a read made after this
        call is followed by every later publication on the channels (without the wait, a
        catch-up read could overtake the SUBSCRIBE and the node would see a gap). Raises
        TimeoutError when no confirmation comes within CONFIRM_S."""
        if self._closed:
            raise ConnectionError("pub/sub connection is closed")
        if self._transport is None:
            if self._connecting is None:
                self._connecting = asyncio.ensure_future(self._connect())
            await asyncio.shield(self._connecting)
        loop = asyncio.get_running_loop()
        waits = []
        for channel in channels:
            fut = self._confirming.get(channel)
            if fut is None:
                fut = self._confirming[channel] = loop.create_future()
            waits.append(fut)
        self._send("SSUBSCRIBE" if self.sharded else "SUBSCRIBE", *channels)
        self.channels.update(channels)
        try:
            await asyncio.wait_for(asyncio.gather(*waits), CONFIRM_S)
        finally:
            for channel in channels:
                self._confirming.pop(channel, None)

    def confirmed(self, channel: str) -> None:
        """The server confirmed ``channel``'s subscription."""
        fut = self._confirming.pop(channel, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def unsubscribe(self, channel: str) -> None:
        self.channels.discard(channel)
        self._routes.pop(channel.encode(), None)
        if self._transport is not None:
            self._send("SUNSUBSCRIBE" if self.sharded else "UNSUBSCRIBE", channel)

    async def close(self) -> None:
        self._closed = True
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
        if self._transport is not None:
            self._transport.close()
            self._transport = None


_UNSEEN: Any = object()


class BusSource(Protocol):
    """What a bus reads from the store it serves: the command client (whose connection
    settings each pub/sub connection copies), the topology, and a liveness probe."""

    client: Redis | RedisCluster
    cluster: bool
    sharded: bool

    async def ping(self) -> bool: ...


class Bus:
    """Subscribes channels on demand and hands every payload to ``on_message(kind, id, data)``
    (kind is ``"market"`` or ``"event"``), in order per channel.

    Call :meth:`start` once. Pub/sub is at-most-once: when the connection to any server is
    lost, the bus reconnects with jittered backoff, resubscribes every channel, and then
    awaits ``on_reconnect()`` so the caller can re-read what it may have missed.
    ``connected`` is False meanwhile; ``on_lost()`` is called when it turns False.
    """

    def __init__(self, store: BusSource, on_message: Callable[[str, str, bytes], None],
                 on_reconnect: Callable[[], Awaitable[None]] | None = None,
                 on_lost: Callable[[], None] | None = None, *,
                 max_backoff_s: float = 2.0) -> None:
        self._store = store
        self._on_message = on_message
        self._on_reconnect = on_reconnect
        self._on_lost = on_lost
        self._channels: set[str] = set()
        self._shards: dict[str, _Shard] = {}
        self._broken = asyncio.Event()
        self._lock = asyncio.Lock()
        self._supervisor: asyncio.Task[None] | None = None
        self._prober: asyncio.Task[None] | None = None
        self._max_backoff_s = max_backoff_s
        self.connected = False
        self.reconnects = 0

    # -- topology ---------------------------------------------------------------------------

    def _shard_for(self, channel: str) -> tuple[str, Any, dict[str, Any]]:
        """(name, connection class, connection kwargs) of the server serving ``channel``."""
        client = self._store.client
        if self._store.cluster:
            node = client.nodes_manager.get_node_from_slot(  # type: ignore[union-attr]
                key_slot(channel.encode()))
            return str(node.name), node.connection_class, dict(node.connection_kwargs)
        pool = client.connection_pool  # type: ignore[union-attr]
        kw = dict(pool.connection_kwargs)
        name = f"unix:{kw['path']}" if kw.get("path") else f"{kw.get('host')}:{kw.get('port')}"
        return name, pool.connection_class, kw

    def _shard(self, channel: str) -> _Shard:
        name, connection_class, kwargs = self._shard_for(channel)
        shard = self._shards.get(name)
        if shard is None:
            shard = self._shards[name] = _Shard(connection_class, kwargs, self._store.sharded,
                                                self._on_message, self._shard_lost)
        return shard

    def _shard_lost(self) -> None:
        log.warning("bus connection lost")
        self._broken.set()

    # -- public -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and start the supervisor; raises nothing (a down store reconnects later)."""
        self.connected = True
        self._supervisor = asyncio.create_task(self._supervise(), name="bus-supervisor")
        self._prober = asyncio.create_task(self._probe(), name="bus-probe")
        # Probe once so an unreachable store is noticed now, not at the first subscribe.
        if not await self._store.ping():
            self._broken.set()

    async def stop(self) -> None:
        tasks = [t for t in (self._supervisor, self._prober) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._teardown()
        self.connected = False

    async def subscribe_market(self, market: str) -> None:
        await self._subscribe(market_channel(market))

    async def unsubscribe_market(self, market: str) -> None:
        await self._unsubscribe(market_channel(market))

    async def subscribe_event(self, event: str) -> None:
        await self._subscribe(event_channel(event))

    async def unsubscribe_event(self, event: str) -> None:
        await self._unsubscribe(event_channel(event))

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(self._channels)

    # -- internals ----------------------------------------------------------------------------

    async def _subscribe(self, channel: str) -> None:
        async with self._lock:
            if channel in self._channels:
                return
            self._channels.add(channel)
            if not self.connected:
                return  # the reconnect resubscribes it
            try:
                await self._shard(channel).subscribe(channel)
            except _ERRORS:
                self._broken.set()

    async def _unsubscribe(self, channel: str) -> None:
        async with self._lock:
            if channel not in self._channels:
                return
            self._channels.discard(channel)
            if not self.connected:
                return
            try:
                await self._shard(channel).unsubscribe(channel)
            except _ERRORS:
                self._broken.set()

    async def _teardown(self) -> None:
        shards, self._shards = self._shards, {}
        await asyncio.gather(*(s.close() for s in shards.values()), return_exceptions=True)

    async def _resubscribe(self) -> None:
        if self._store.cluster:
            await self._store.client.initialize()  # type: ignore[union-attr,unused-ignore]
        by_shard: dict[int, tuple[_Shard, list[str]]] = {}
        for channel in sorted(self._channels):
            shard = self._shard(channel)
            by_shard.setdefault(id(shard), (shard, []))[1].append(channel)
        for shard, channels in by_shard.values():
            for i in range(0, len(channels), 1000):
                await shard.subscribe(*channels[i:i + 1000])

    async def _probe(self) -> None:
        """Ping the store every PROBE_S while connected; a failed ping breaks the bus."""
        while True:
            await asyncio.sleep(PROBE_S)
            if self.connected and not self._broken.is_set() and not await self._store.ping():
                log.warning("store probe failed")
                self._broken.set()

    async def _supervise(self) -> None:
        while True:
            await self._broken.wait()
            async with self._lock:
                self.connected = False
                await self._teardown()
            if self._on_lost is not None:
                try:
                    self._on_lost()
                except Exception:  # the callback's bug must not stop the reconnects
                    log.exception("bus on_lost failed")
            backoff = 0.05
            while True:
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, self._max_backoff_s)
                if not await self._store.ping():
                    continue
                async with self._lock:
                    self._broken.clear()
                    try:
                        await self._resubscribe()
                    except _ERRORS:
                        await self._teardown()
                        continue
                    self.connected = True
                break
            self.reconnects += 1
            log.warning("bus reconnected (%d channels)", len(self._channels))
            if self._on_reconnect is not None:
                try:
                    await self._on_reconnect()
                except Exception:
                    log.exception("bus on_reconnect failed")
