"""The WebSocket server: handshake (path, auth, subprotocol, limits), one reader and one
writer per connection, heartbeats, slow-consumer and token-expiry closes. It only moves
bytes; the protocol state lives in :mod:`oddsfeed.fanout.hub` and :mod:`oddsfeed.session`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .. import __version__, wire
from ..auth import ANONYMOUS, READ, VALIDATE, Authenticator, AuthError, Principal
from ..errors import ProtocolViolation, StoreError
from ..session import Outbox
from ..settings import FanoutSettings
from . import metrics
from .hub import Client, Hub

log = logging.getLogger("oddsfeed.fanout")

ValidateFn = Callable[[Sequence[wire.Leg], str], Awaitable[dict[str, Any]]]
MAX_VALIDATIONS_IN_FLIGHT = 8


class TokenBucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst`` saved up."""

    __slots__ = ("rate", "burst", "tokens", "at")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class FanoutServer:
    """Serves ``ws://host:port/ws`` for one worker process; call :meth:`start`, then
    :meth:`close` on shutdown (clients get 1001)."""

    def __init__(self, hub: Hub, *, fanout: FanoutSettings, auth: Authenticator,
                 host: str = "127.0.0.1", port: int = 0,
                 validate: ValidateFn | None = None, reuse_port: bool = True) -> None:
        self.hub = hub
        self.cfg = fanout
        self.auth = auth
        self.host = host
        self.port = port
        self.validate = validate
        self.reuse_port = reuse_port
        self._server: Server | None = None
        self._principals: dict[ServerConnection, Principal] = {}
        self._ids = itertools.count(1)
        self._ip_buckets: dict[str, TokenBucket] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.session_prefix = f"{int(time.time() * 1000):x}"

    async def start(self) -> None:
        self._server = await serve(
            self._handler, self.host, self.port,
            reuse_port=self.reuse_port,
            compression=None,  # per-connection deflate would defeat encode-once
            max_size=self.cfg.max_inbound_bytes,
            max_queue=16,
            ping_interval=self.cfg.ping_interval_s,
            ping_timeout=self.cfg.ping_timeout_s,
            close_timeout=2.0,
            process_request=self._process_request,
            select_subprotocol=self._select_subprotocol,
            server_header=f"oddsfeed/{__version__}",
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]

    async def close(self) -> None:
        """Stop accepting and close every client with 1001."""
        if self._server is None:
            return
        self._server.close(close_connections=True)
        try:
            await asyncio.wait_for(self._server.wait_closed(), 5.0)
        except TimeoutError:
            log.warning("some connections did not close in time")

    # ---- handshake ---------------------------------------------------------------------

    def _select_subprotocol(self, connection: ServerConnection,
                            subprotocols: Sequence[str]) -> Any:
        name, _ = wire.parse_subprotocols(subprotocols)
        return name

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path != "/ws":
            return connection.respond(HTTPStatus.NOT_FOUND, "not found: use /ws\n")
        ip = str(connection.remote_address[0]) if connection.remote_address else "?"
        now = time.monotonic()
        bucket = self._ip_buckets.get(ip)
        if bucket is None:
            if len(self._ip_buckets) > 100_000:
                self._ip_buckets.clear()  # bounded: forget old peers wholesale
            rate = self.cfg.ip_connect_per_s
            bucket = self._ip_buckets[ip] = TokenBucket(rate, max(1.0, rate), now)
        if not bucket.take(now):
            return connection.respond(HTTPStatus.TOO_MANY_REQUESTS, "too many connections\n")
        token = (parse_qs(url.query).get("token") or [""])[0]
        header = request.headers.get("Authorization", "")
        if not token and header.lower().startswith("bearer "):
            token = header[7:].strip()
        if token:
            try:
                principal = self.auth.verify(token)
            except AuthError as exc:
                return connection.respond(HTTPStatus.UNAUTHORIZED, f"unauthorized: {exc}\n")
        elif self.auth.anonymous_read:
            principal = ANONYMOUS
        else:
            return connection.respond(HTTPStatus.UNAUTHORIZED, "unauthorized: token required\n")
        self._principals[connection] = principal
        return None

    # ---- connection ----------------------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        principal = self._principals.pop(ws, ANONYMOUS)
        if len(self.hub.clients) >= self.cfg.max_connections:
            await ws.close(1013, "overloaded")
            return
        encoding = wire.SUBPROTOCOLS.get(ws.subprotocol or "", wire.JSON)
        cid = next(self._ids)
        client = Client(cid, encoding, Outbox(
            encoding=encoding, high_water_bytes=self.cfg.high_water_bytes,
            max_bytes=self.cfg.max_outbox_bytes, max_lag_s=self.cfg.max_lag_s))
        client.on_slow = lambda c: self._close_later(ws, 4008, "slow consumer", slow=True)
        self.hub.add_client(client)
        metrics.CONNECTIONS.inc()
        loop = asyncio.get_running_loop()
        expiry = None
        if principal.exp:
            delay = max(0.0, principal.exp - time.time())
            expiry = loop.call_later(delay, self._close_later, ws, 4001, "token expired")
        client.push(wire.hello(server=f"oddsfeed/{__version__}",
                               session=f"{self.session_prefix}-{cid}",
                               heartbeat_ms=self.cfg.heartbeat_ms, encoding=encoding))
        writer = loop.create_task(self._writer(ws, client))
        try:
            await self._reader(ws, client, principal)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("connection handler failed")
            await ws.close(1011, "internal error")
        finally:
            if expiry is not None:
                expiry.cancel()
            client.closed = True
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            await self.hub.remove_client(client)
            metrics.CONNECTIONS.dec()

    def _close_later(self, ws: ServerConnection, code: int, reason: str, *,
                     slow: bool = False) -> None:
        if slow:
            metrics.SLOW_CLOSES.inc()
        task = asyncio.get_running_loop().create_task(ws.close(code, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reader(self, ws: ServerConnection, client: Client, principal: Principal) -> None:
        loop = asyncio.get_running_loop()
        bucket = TokenBucket(self.cfg.rate_limit_per_s, self.cfg.rate_limit_burst, loop.time())
        strikes = 0
        in_flight: set[asyncio.Task[Any]] = set()
        async for message in ws:
            if not bucket.take(loop.time()):
                strikes += 1
                if strikes >= self.cfg.rate_limit_strikes:
                    await ws.close(1008, "message rate limit exceeded")
                    return
                client.push(wire.error("rate_limited", "too many messages; slow down"))
                continue
            try:
                req = wire.decode_request(message, client.encoding)
            except ProtocolViolation as exc:
                metrics.BAD_FRAMES.inc()
                client.push(wire.error(exc.code, exc.message, exc.request_id))
                continue
            try:
                await self._dispatch(client, principal, req, in_flight)
            except StoreError as exc:
                log.warning("store error serving a request: %s", exc)
                client.push(wire.error("internal", "the store is unavailable; retry",
                                       getattr(req, "id", None)))
        for task in in_flight:
            task.cancel()

    async def _dispatch(self, client: Client, principal: Principal, req: wire.Request,
                        in_flight: set[asyncio.Task[Any]]) -> None:
        if isinstance(req, wire.Ping):
            client.push(wire.reply("pong", req.id, ts=int(time.time() * 1000)))
        elif isinstance(req, wire.Subscribe):
            if not principal.can(READ):
                client.push(wire.error("forbidden", "the token lacks scope odds:read", req.id))
                return
            await self.hub.subscribe(client, req)
        elif isinstance(req, wire.Unsubscribe):
            await self.hub.unsubscribe(client, req)
        elif isinstance(req, wire.Validate):
            if not principal.can(VALIDATE):
                client.push(wire.error("forbidden", "the token lacks scope bets:validate", req.id))
                return
            if self.validate is None:
                client.push(wire.error("internal", "validation is not available here", req.id))
                return
            if len(in_flight) >= MAX_VALIDATIONS_IN_FLIGHT:
                client.push(wire.error("rate_limited", "too many validations in flight", req.id))
                return
            task = asyncio.get_running_loop().create_task(self._validate(client, req))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)

    async def _validate(self, client: Client, req: wire.Validate) -> None:
        assert self.validate is not None
        try:
            body = await self.validate(req.legs, req.accept)
        except StoreError:
            client.push(wire.error("internal", "the store is unavailable; retry", req.id))
            return
        client.push(wire.reply("validation", req.id, **body))

    async def _writer(self, ws: ServerConnection, client: Client) -> None:
        """Write what the outbox holds, a frame at a time; heartbeat when idle."""
        heartbeat_s = self.cfg.heartbeat_ms / 1000
        window_s = self.cfg.batch_window_ms / 1000
        text = client.encoding == wire.JSON
        outbox = client.outbox
        while not client.closed:
            if not outbox:
                client.wake.clear()
                try:
                    async with asyncio.timeout(heartbeat_s):
                        await client.wake.wait()
                except TimeoutError:
                    client.push(wire.heartbeat(int(time.time() * 1000)))
                    continue
            if window_s and not outbox.urgent:
                await asyncio.sleep(window_s)
            n = min(len(outbox), 512)
            t_us = outbox.oldest_t_us()
            frame = outbox.frame(512)
            if frame is None:
                continue
            await ws.send(frame, text=text)
            metrics.FRAMES_OUT.inc()
            metrics.MESSAGES_OUT.inc(n)
            metrics.BYTES_OUT.inc(len(frame))
            if t_us:
                metrics.DELIVERY_LATENCY.observe(max(0.0, time.time() - t_us / 1e6))
