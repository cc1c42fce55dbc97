"""The store's pub/sub bus: market and event channels subscribed on demand, raw payloads
handed to a callback, reconnect with backoff, and a report of every reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from redis import exceptions as redis_errors
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot

from .codec import event_channel, market_channel, parse_channel

log = logging.getLogger("oddsfeed.store.bus")

_ERRORS = (redis_errors.RedisError, OSError, asyncio.TimeoutError)
CONFIRM_S = 5.0  # how long a subscribe waits for the server's confirmation
# How often a connected bus pings the store: a node with no channel subscribed has no
# pub/sub connection to lose, and must still notice (and report) a lost store.
PROBE_S = 1.0


class _Shard:
    """One pub/sub connection to one server (a cluster primary, or the single server)."""

    def __init__(self, connection_class: type[Connection] | type[UnixDomainSocketConnection],
                 connection_kwargs: dict[str, Any], sharded: bool) -> None:
        # The store's own connection settings (password, username, TLS, socket path), with
        # no retries of its own: a failure goes to the supervisor, which reconnects.
        kwargs = {**connection_kwargs, "retry": Retry(NoBackoff(), 0),
                  "socket_connect_timeout": 2.0, "socket_timeout": None}
        self.client = Redis(connection_pool=ConnectionPool(
            connection_class=connection_class, max_connections=2, **kwargs))
        # Subscribe confirmations are read (not ignored): subscribe() waits for them.
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=False)
        self.sharded = sharded
        self.channels: set[str] = set()
        self._confirming: dict[str, asyncio.Future[None]] = {}

    async def subscribe(self, *channels: str) -> None:
        """Subscribe and return once the server confirmed it, so that a read made after this
        call is followed by every later publication on the channels (without the wait, a
        catch-up read could overtake the SUBSCRIBE and the node would see a gap). Raises
        TimeoutError when no confirmation comes within CONFIRM_S."""
        loop = asyncio.get_running_loop()
        waits = []
        for channel in channels:
            fut = self._confirming.get(channel)
            if fut is None:
                fut = self._confirming[channel] = loop.create_future()
            waits.append(fut)
        if self.sharded:
            await self.pubsub.ssubscribe(*channels)
        else:
            await self.pubsub.subscribe(*channels)
        self.channels.update(channels)  # only now may the reader read the connection
        try:
            await asyncio.wait_for(asyncio.gather(*waits), CONFIRM_S)
        finally:
            for channel in channels:
                self._confirming.pop(channel, None)

    def confirmed(self, channel: str) -> None:
        """The reader saw the server confirm ``channel``'s subscription."""
        fut = self._confirming.pop(channel, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def unsubscribe(self, channel: str) -> None:
        self.channels.discard(channel)
        if self.sharded:
            await self.pubsub.sunsubscribe(channel)
        else:
            await self.pubsub.unsubscribe(channel)

    async def close(self) -> None:
        with contextlib.suppress(*_ERRORS):
            # Typed through a variable: redis-py < 8.2 leaves aclose unannotated, newer
            # releases annotate it, and the call must type-check against both.
            aclose: Callable[[], Awaitable[object]] = self.pubsub.aclose
            await aclose()
        with contextlib.suppress(*_ERRORS):
            await self.client.aclose()


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
        self._readers: list[asyncio.Task[None]] = []
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
            shard = self._shards[name] = _Shard(connection_class, kwargs, self._store.sharded)
            self._readers.append(asyncio.create_task(self._read(shard), name=f"bus-read-{name}"))
        return shard

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

    async def _read(self, shard: _Shard) -> None:
        try:
            while True:
                if not shard.channels:
                    await asyncio.sleep(0.05)
                    continue
                msg = await shard.pubsub.get_message(timeout=1.0)
                if msg is None:
                    continue
                kind = msg.get("type")
                channel = msg["channel"]
                name = channel.decode() if isinstance(channel, bytes) else str(channel)
                if kind in ("subscribe", "ssubscribe"):
                    shard.confirmed(name)
                    continue
                if kind not in ("message", "smessage"):
                    continue
                parsed = parse_channel(name)
                if parsed is None:
                    continue
                try:
                    self._on_message(parsed[0], parsed[1], msg["data"])
                except Exception:  # the callback's bug must not kill the bus
                    log.exception("bus callback failed")
        except asyncio.CancelledError:
            raise
        except _ERRORS as exc:
            log.warning("bus connection lost: %s", exc)
            self._broken.set()

    async def _teardown(self) -> None:
        readers, self._readers = self._readers, []
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
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
