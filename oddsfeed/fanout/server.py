"""The WebSocket server: handshake (path, auth, subprotocol, limits), one reader and one
writer per connection, heartbeats, slow-consumer and token-expiry closes. It only moves
bytes; the protocol state lives in :mod:`oddsfeed.fanout.hub` and :mod:`oddsfeed.core.session`.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from .. import __version__
from ..auth import ANONYMOUS, READ, VALIDATE, Authenticator, AuthError, Principal
from ..core import wire
from ..core.book import Delta
from ..core.errors import ProtocolViolation, StoreError
from ..core.session import Outbox, adaptive_window
from ..settings import FanoutSettings
from . import metrics
from .admission import Admission, TokenBucket
from .hub import Client, Hub

SendAll = Callable[[Sequence[int], bytes], list[tuple[int, int]]]


def _load_send_all() -> SendAll | None:
    """The C send loop (oddsfeed/fanout/_send.c), or None where it was not built (no C
    compiler at install): then every frame goes through its transport."""
    try:
        from ._send import send_all
    except ImportError:  # pragma: no cover - built by `pip install` where a compiler is
        return None
    return send_all


send_all = _load_send_all()

log = logging.getLogger("oddsfeed.fanout")

# Past this many bytes buffered in a connection's transport, frames go through the writer
# task (which awaits drain) instead of being written directly.
TRANSPORT_HIGH_WATER = 64 * 1024

# A connection is quiet after this many batching windows without a frame.
QUIET_WINDOWS = 10

# Past this lateness (store apply -> node) the node is behind: hot connections get the
# widest window, as if the worker were fully busy.
BEHIND_S = 0.02

# The ticker wakes this often and visits a slice of the clients each time, VISIT_CHUNK
# clients at a time with a turn of the event loop in between (~0.4 ms each at 10,000
# connections).
TICK_S = 0.1
VISIT_CHUNK = 200

# A connection is hot when it gets at least this many messages per hot window on average.
HOT_MESSAGES = 1.0

# ...or when this many deliveries in a row each came within the quiet period (QUIET_WINDOWS
# windows) of its last frame: the per-period counts lag a jump in traffic. When the load of
# the saturation benchmark switched on (1,000 connections from 0 to 200 messages/s each),
# a connection reached the counts' hot threshold only after 50 messages (~250 ms), nearly
# every message went out in its own frame until then, and the worker fell 100-180 ms
# behind the store. At 5 messages/s, three gaps under 20 ms in a row happen to ~0.1% of
# the messages.
HOT_STREAK = 3

# A connection is cold when it gets at most this many messages per batching window on
# average (25 a second with 2 ms windows), over the ticker's last visit period and so far in
# this one, and is not on a streak (HOT_STREAK): its messages are written at once even when
# it got a frame within the last QUIET_WINDOWS windows, since they would hardly ever share a
# frame. (So far in this period too: a connection whose traffic jumps is warm again after
# that many messages, not up to a period later; judged on the last period alone, 1,000
# connections jumping from 0 to 150 messages/s were written one frame per message for a
# second and the worker fell behind.)
# At 10,000 connections getting 5 messages/s each, the ~10% of messages that met a
# connection written to in the last 20 ms were queued and went out one per frame after the
# update's other writes; writing them at once took ~5% less CPU and ~0.4 ms off p99 (the
# same as no batching there, 3 runs each).
COLD_MESSAGES = 0.05

# Below this busy share (smoothed, and over the last tick alone) the worker is idle enough
# to run the collector's middle generation itself (at most once every IDLE_GC_EVERY_S),
# instead of the next automatic one stalling a loaded loop: after 10,000 connections arrive,
# that collection scans their objects (155 ms measured). The smoothed share alone lags: in
# the 10k benchmark a 158 ms collection started 1 s into the load, on a tick already 75% busy.
IDLE_GC_BUSY = 0.25
IDLE_GC_EVERY_S = 1.0

# Batching stops when the busy share falls this far below fanout.batch_min_busy (so that a
# worker near the threshold does not switch at every tick).
BATCH_HYSTERESIS = 0.1

# Weight of the newest tick in the worker's smoothed busy share.
BUSY_SMOOTHING = 0.3

# A streak no connection reaches (HOT_STREAK applies only while the hot window is widened).
NEVER = 1 << 62

# CPU seconds of this process (user + system: the send syscalls are most of it).
cpu_time = time.process_time

# A ping frame with an empty payload, built once (server frames are not masked).
PING_FRAME = b"\x89\x00"


class Connection(ServerConnection):
    """A websockets server connection that notes when its peer last sent anything, so one
    ticker per worker (instead of a keepalive task per connection) can ping idle peers and
    drop dead ones."""

    last_rx = 0.0
    pinged = False

    def data_received(self, data: bytes) -> None:
        self.last_rx = self.loop.time()
        self.pinged = False
        super().data_received(data)


_NO_HEADERS = Headers()
_HANDSHAKE_DONE = Request("/ws", _NO_HEADERS)

ValidateFn = Callable[[Sequence[wire.Leg], str], Awaitable[dict[str, Any]]]
MAX_VALIDATIONS_IN_FLIGHT = 8


class _Batch:
    """Clients waiting for one shared batching-window timer."""

    __slots__ = ("clients", "handle")

    def __init__(self) -> None:
        self.clients: set[Client] = set()
        self.handle: asyncio.TimerHandle | None = None


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
        self.admission = Admission(connect_per_s=fanout.ip_connect_per_s,
                                   per_ip=fanout.max_connections_per_ip,
                                   per_subject=fanout.max_connections_per_subject)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.session_prefix = f"{int(time.time() * 1000):x}"
        # batching: clients with something to send wait for one shared timer per window
        self._batch = _Batch()
        self._window_s = fanout.batch_window_ms / 1000
        # hot clients (many messages a second) of a busy worker share a wider window, sized
        # by adaptive_window() from the busy share the ticker measures; 0 = no batching
        self._max_window_s = (max(self._window_s, fanout.batch_window_max_ms / 1000)
                              if self._window_s else 0.0)
        self._hot_window_s = self._window_s
        # messages per ticker period from which a connection is hot: at least one per hot
        # window on average, so that waiting for the window shares frames (inf: nobody)
        self._hot_min = float("inf")
        self._hot_streak = NEVER  # HOT_STREAK while the hot window is widened
        # messages per ticker period up to which a connection is cold (see COLD_MESSAGES)
        self._cold_max = 0.0
        self._period = 1.0  # the ticker's visit period, set by _tick
        self._hot_batch = _Batch()
        self.busy = 0.0  # smoothed CPU seconds per second of this worker
        self.tick_busy = 0.0  # the same over the last tick alone
        self._idle_gc_at = -IDLE_GC_EVERY_S  # loop time of the last idle collection
        # a connection that got no frame for this long is quiet: its next message is written
        # at once (see direct); one that did is busy and its messages share frames
        self._busy_quiet_s = QUIET_WINDOWS * self._window_s
        # Below batch_min_busy nothing batches: on a worker with CPU to spare the batching
        # path (queue, timer, flush) saved almost no frames (1,000 connections, 500-1,000
        # updates/s: 1.0-1.05 messages per frame) and added latency (1,000/s: p99 29.8 ->
        # 8.8 ms without it)
        self._min_busy = fanout.batch_min_busy
        self._set_batching(bool(self._window_s) and self._min_busy <= 0)
        # reading deltas later than this after their apply, the node is behind: hot
        # connections get the widest window (fewer syscalls when it matters most). Not the
        # others: one message per window gains nothing from a batch and costs more to queue
        # than to write (at 10,000 connections batching everyone made the node fall further
        # behind)
        self._behind_s = max(BEHIND_S, self._window_s) if self._window_s else float("inf")
        # metrics are summed here and handed to prometheus once a second (cheap hot path)
        self._frames = self._messages = self._bytes = 0
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._server = await serve(
            self._handler, self.host, self.port,
            reuse_port=self.reuse_port,
            compression=None,  # per-connection deflate would defeat encode-once
            max_size=self.cfg.max_inbound_bytes,
            max_queue=16,
            # keepalive runs from the shared ticker (see Connection), not a task per connection
            ping_interval=None,
            ping_timeout=None,
            create_connection=Connection,
            close_timeout=2.0,
            process_request=self._process_request,
            select_subprotocol=self._select_subprotocol,
            server_header=f"oddsfeed/{__version__}",
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        self.hub.sink = self

    async def close(self) -> None:
        """Stop accepting and close every client with 1001."""
        if self._server is None:
            return
        if self._ticker is not None:
            self._ticker.cancel()
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
        if not self.admission.rate_ok(ip, time.monotonic()):
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
        refused = self.admission.refusal(ip, principal)
        if refused:
            metrics.CONNECTIONS_REFUSED.labels(refused).inc()
            what = "address" if refused == "ip" else "token subject"
            return connection.respond(HTTPStatus.TOO_MANY_REQUESTS,
                                      f"too many connections for this {what}\n")
        self._principals[connection] = principal
        return None

    # ---- connection ----------------------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        principal = self._principals.pop(ws, ANONYMOUS)
        # the handshake's request and response (headers) are not used again: ~3 KB per
        # connection. websockets only checks that ``request`` is set once the handshake is done.
        # websockets' parser generator keeps the Request object for the connection's life:
        # empty its headers too (~1.5 KB per connection, measured with tracemalloc)
        if ws.request is not None:
            ws.request.headers = _NO_HEADERS
        ws.request = _HANDSHAKE_DONE
        ws.response = None
        # websockets only appends to, removes from and iterates over drain_waiters: an empty
        # list costs 56 bytes where an empty deque costs 632 (tests/fanout cover backpressure)
        ws.drain_waiters = []  # type: ignore[assignment]
        if len(self.hub.clients) >= self.cfg.max_connections:
            await ws.close(1013, "overloaded")
            return
        ip = str(ws.remote_address[0]) if ws.remote_address else "?"
        refused = self.admission.opened(ip, principal)
        if refused:
            metrics.CONNECTIONS_REFUSED.labels(refused).inc()
            await ws.close(1013, "too many connections")
            return
        try:
            await self._serve(ws, principal)
        finally:
            self.admission.closed(ip, principal)

    async def _serve(self, ws: ServerConnection, principal: Principal) -> None:
        encoding = wire.SUBPROTOCOLS.get(ws.subprotocol or "", wire.JSON)
        cid = next(self._ids)
        client = Client(cid, encoding, Outbox(
            encoding=encoding, high_water_bytes=self.cfg.high_water_bytes,
            max_bytes=self.cfg.max_outbox_bytes, max_lag_s=self.cfg.max_lag_s))
        client.sink = self
        client.last_sent = time.monotonic()
        client.conn = ws
        client.transport = ws.transport
        client.proto = ws.protocol
        client.fd = _plain_fd(ws)
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
        if self.hub.feed_interrupted:
            client.push(wire.status(wire.FEED_INTERRUPTED))
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
            writer = client.writer
            if writer is not None:
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
            self._leave_batches(client)
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
                    # what is queued (the rate_limited errors among it) goes out before the
                    # close frame instead of waiting for a batching window that never comes
                    self._leave_batches(client)
                    self._write_or_wake(client)
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

    def _writable(self, client: Client, now: float) -> Any:
        """The transport to write a message straight to, or None to queue it instead.

        Write-through needs a quiet connection: nothing queued, no writer, its socket keeping
        up, no frame written to it for QUIET_WINDOWS batching windows (unless it is cold:
        too few messages a second to ever share a frame), and not hot while the hot window
        is widened. Otherwise the message is queued and coalesced at the
        window's end (like Nagle: the first message of a burst goes at once, the rest share
        frames).

        Runs once per delivery: it reads the transport and the protocol state through the
        client's own references (set when the connection opens), not through the
        connection object, which would be two more objects to fetch from memory per
        delivery at 10,000 connections.

        It also counts the connection's streak (see HOT_STREAK): every delivery passes here
        before it is written or queued."""
        gap = now - client.last_sent
        # the streak counts whether the worker batches or not: when it starts to (_widen),
        # the connections whose traffic jumped are hot at once. It stops at HOT_STREAK (all
        # that is ever asked of it), so a hot connection's deliveries write nothing here
        if gap < self._busy_quiet_s:
            if client.streak < HOT_STREAK:
                client.streak += 1
        else:
            client.streak = 0
        recent = gap < self._quiet_s
        transport = client.transport
        if (transport is None or client.closed or client.outbox.queued_bytes
                or client.writer is not None
                or (recent and (client.rate > self._cold_max or client.received > self._cold_max
                                or client.streak >= HOT_STREAK))
                or self._hot(client)):
            return None
        if (transport.get_write_buffer_size() > TRANSPORT_HIGH_WATER
                or client.proto.state is not State.OPEN or transport.is_closing()):
            return None
        return transport

    # ---- the hub's Sink -------------------------------------------------------------------

    def slow(self, client: Client) -> None:
        """Past its slow-consumer limit: close with 4008 (the client resumes with ``from``)."""
        if client.conn is not None:
            self._close_later(client.conn, 4008, "slow consumer", slow=True)

    def direct(self, client: Client, out: wire.Outgoing, now: float) -> bool:
        """Client.push's write-through: write ``out`` at once if the connection is quiet
        (see _writable); returns True if written."""
        transport = self._writable(client, now)
        if transport is None:
            return False
        frame = out.ws_frame(client.encoding)
        transport.write(frame)
        client.last_sent = now
        self._count(len(frame), 1, out.t_us)
        return True

    def send_many(self, clients: list[Client], out: wire.Outgoing, market: str,
                  delta: Delta, now: float) -> None:
        """One delta to many clients: written through to each quiet one (see _writable),
        the others queue it (client.push without a second write-through check).

        This loop runs once per delivery (profiled: at 10,000 connections it is most of the
        worker's time, the send syscall most of that): the frame is looked up once per
        encoding. Sockets whose transport holds nothing are written by one C call per
        encoding (``send_all``: no interpreter or event-loop work per socket); what a socket
        did not take goes back through its transport, in order."""
        if self.hub.lateness_s > self._behind_s and self._hot_window_s < self._max_window_s:
            self._widen()  # fell behind within a tick: do not wait for the ticker
        frames: dict[str, bytes] = {}
        direct: dict[str, tuple[list[int], list[Any]]] = {}
        sent = nbytes = 0
        for client in clients:
            transport = self._writable(client, now)
            if transport is None:
                client.push(out, market=market, delta=delta, now=now, write_through=False)
                continue
            enc = client.encoding
            frame = frames.get(enc)
            if frame is None:
                frame = frames[enc] = out.ws_frame(enc)
            client.last_sent = now
            client.received += 1
            sent += 1
            nbytes += len(frame)
            fd = client.fd
            if fd >= 0 and not transport.get_write_buffer_size():
                group = direct.get(enc)
                if group is None:
                    group = direct[enc] = ([], [])
                group[0].append(fd)
                group[1].append(transport)
            else:
                transport.write(frame)
        for enc, (fds, transports) in direct.items():
            frame = frames[enc]
            assert send_all is not None  # client.fd is -1 without it
            try:
                short = send_all(fds, frame)
            except Exception:  # MemoryError, in practice: fall back to every transport
                # (a frame already sent arrives twice: the client rule drops the repeat)
                log.exception("send_all failed; writing through the transports")
                short = [(i, -1) for i in range(len(fds))]
            for i, took in short:
                # a short write's rest, or the whole frame after an error (EAGAIN: buffered;
                # anything else: the transport's own write reports it and closes)
                transports[i].write(frame[took:] if took > 0 else frame)
        if sent:
            self._count(nbytes, sent, out.t_us, frames=sent)

    def ready(self, client: Client, urgent: bool) -> None:
        """A client has something to send: write it now (urgent, or the worker is not
        batching) or at the end of the shared batching window."""
        if urgent or not self._batching:
            self._write_or_wake(client)
            return
        hot = self._hot(client)
        batch = self._hot_batch if hot else self._batch
        batch.clients.add(client)
        if batch.handle is None:
            batch.handle = asyncio.get_running_loop().call_later(
                self._hot_window_s if hot else self._window_s, self._flush, batch)

    def _hot(self, client: Client) -> bool:
        """Whether ``client`` waits for the (widened) hot window: hot over the last visit
        period, already in this one, or by its streak (see HOT_STREAK: the counts lag a
        jump in traffic by up to a period)."""
        return (client.rate >= self._hot_min or client.received >= self._hot_min
                or client.streak >= self._hot_streak)

    def _flush(self, batch: _Batch) -> None:
        batch.handle = None
        clients, batch.clients = batch.clients, set()
        for client in clients:
            self._write_or_wake(client)

    def _adapt(self, cpu_s: float, wall_s: float) -> None:
        """Fold one tick's CPU share into the busy share; size the hot window from it (the
        widest while the node is behind the store) and the rate from which a connection is
        hot from the window.

        The share that sizes the window rises with the last tick alone and falls with the
        smoothed one: a load that jumps gets batching 100 ms after it starts, not after the
        two or three ticks the smoothed share needs to reach batch_min_busy (interleaved
        A/B at 1,000 connections, 3,000 updates/s: p99 43-69 ms against 53-93 ms; 4,000/s:
        65 and 77 ms against 93-117 ms, and one run of each side slowed by the VM)."""
        if wall_s <= 0:
            return
        self.tick_busy = min(1.0, cpu_s / wall_s)
        self.busy += BUSY_SMOOTHING * (self.tick_busy - self.busy)
        share = (1.0 if self.hub.lateness_s > self._behind_s
                 else max(self.busy, self.tick_busy))
        if self._window_s:
            if share >= self._min_busy:
                self._set_batching(True)
            elif share < self._min_busy - BATCH_HYSTERESIS:
                self._set_batching(False)
        self._set_hot_window(adaptive_window(share, self._window_s, self._max_window_s))
        self._cold_max = (COLD_MESSAGES * self._period / self._window_s
                          if self._window_s else 0.0)

    def _set_hot_window(self, window: float) -> None:
        self._hot_window_s = window
        widened = self._batching and window > self._window_s
        self._hot_min = HOT_MESSAGES * self._period / window if widened else float("inf")
        self._hot_streak = HOT_STREAK if widened else NEVER

    def _widen(self) -> None:
        """The node read a delta later than _behind_s after its apply: batch with the widest
        hot window now, not at the next tick (up to 100 ms later, more on an overloaded
        loop); the ticker's next _adapt sizes it again from lateness and busy share."""
        self._set_batching(True)
        self._set_hot_window(self._max_window_s)

    def _set_batching(self, on: bool) -> None:
        # _quiet_s is read once per delivery (_writable): kept here, never derived there
        self._batching = on
        self._quiet_s = self._busy_quiet_s if on else 0.0

    def _leave_batches(self, client: Client) -> None:
        self._batch.clients.discard(client)
        self._hot_batch.clients.discard(client)

    def _write_or_wake(self, client: Client) -> None:
        """Fast path: when the connection is open, no writer task running and its socket
        keeping up, write the prebuilt frames straight to the transport (no task switch).
        Otherwise a writer task sends with backpressure (awaiting drain)."""
        ws = client.conn
        if ws is None or client.writer is not None or client.closed:
            return  # a running writer picks the new messages up
        transport = ws.transport
        if (ws.protocol.state is not State.OPEN
                or transport.get_write_buffer_size() > TRANSPORT_HIGH_WATER):
            self._start_writer(ws, client)
            return
        outbox = client.outbox
        while True:
            t_us = outbox.oldest_t_us()
            framed = outbox.ws_frame()
            if framed is None:
                break
            frame, n = framed
            transport.write(frame)
            self._count(len(frame), n, t_us)
            if not outbox.queued_bytes:
                break  # the common case: one frame took everything
            if transport.get_write_buffer_size() > TRANSPORT_HIGH_WATER:
                self._start_writer(ws, client)
                break
        client.last_sent = time.monotonic()

    def _start_writer(self, ws: ServerConnection, client: Client) -> None:
        if client.writer is None and not client.closed:
            client.writer = asyncio.get_running_loop().create_task(self._writer(ws, client))

    def _count(self, nbytes: int, messages: int, t_us: int, frames: int = 1) -> None:
        self._frames += frames
        self._messages += messages
        self._bytes += nbytes
        if t_us and self._frames % 64 < frames:  # a sample is enough for the histogram
            metrics.DELIVERY_LATENCY.observe(max(0.0, time.time() - t_us / 1e6))

    async def _tick(self) -> None:
        """Heartbeats for idle clients, keepalive pings, slow-consumer age checks, metrics.

        Every client is visited once per ``period``, in slices every ``TICK_S``: one pass over
        10,000 clients at once would stall the loop for milliseconds (the p99)."""
        heartbeat_s = self.cfg.heartbeat_ms / 1000
        ping_s, pong_s = self.cfg.ping_interval_s, self.cfg.ping_timeout_s
        period = min(1.0, heartbeat_s / 4, ping_s / 2, pong_s / 2)
        slices = max(1, round(period / TICK_S))
        self._period = period
        sweep: list[Client] = []
        at = 0
        per_slice = 1
        n = 0
        loop = asyncio.get_running_loop()
        cpu0, wall0 = cpu_time(), loop.time()
        while True:
            await asyncio.sleep(period / slices)
            cpu, wall = cpu_time(), loop.time()
            self._adapt(cpu - cpu0, wall - wall0)
            cpu0, wall0 = cpu, wall
            self._idle_collect(wall)
            if at >= len(sweep):
                sweep, at = list(self.hub.clients), 0
                per_slice = -(-len(sweep) // slices)
            end = at + per_slice
            while at < end:
                # a slice of 1,000 clients took 1.6-2.9 ms; in chunks, a delta arriving
                # meanwhile waits for one chunk at most, not for the whole slice
                self._visit(sweep[at:min(end, at + VISIT_CHUNK)], heartbeat_s, ping_s, pong_s)
                at += VISIT_CHUNK
                if at < end:
                    await asyncio.sleep(0)
            at = end
            n += 1
            if n % slices == 0:
                self._flush_metrics()

    def _idle_collect(self, now: float) -> None:
        """Collect generations 0 and 1 now if the worker is idle (smoothed and over the last
        tick), a young collection happened since the last one (objects of new connections
        wait there to be promoted) and the last such collection is IDLE_GC_EVERY_S old; a
        loaded worker leaves it to the automatic collector. ``now`` is the loop's time."""
        if (gc.isenabled() and max(self.busy, self.tick_busy) < IDLE_GC_BUSY
                and now - self._idle_gc_at >= IDLE_GC_EVERY_S and gc.get_count()[1] > 0):
            self._idle_gc_at = now
            gc.collect(1)

    def _visit(self, clients: list[Client], heartbeat_s: float, ping_s: float,
               pong_s: float) -> None:
        now = time.monotonic()
        lnow = asyncio.get_running_loop().time()
        heartbeat: wire.Outgoing | None = None
        for client in clients:
            if client.closed:
                continue
            client.rate, client.received = client.received, 0
            ws = client.conn
            if isinstance(ws, Connection) and ws.protocol.state is State.OPEN:
                # keepalive: ping a peer silent for ping_interval_s; drop it if it stays
                # silent ping_timeout_s more (protocol.md section 2)
                silent = lnow - (ws.last_rx or lnow)
                if ws.last_rx == 0.0:
                    ws.last_rx = lnow
                elif silent > ping_s + pong_s:
                    client.closed = True
                    self._close_later(ws, 1011, "keepalive ping timeout")
                    continue
                elif silent > ping_s and not ws.pinged and client.writer is None:
                    ws.pinged = True
                    ws.transport.write(PING_FRAME)
            if not client.outbox and now - client.last_sent >= heartbeat_s:
                if heartbeat is None:  # one shared message for this slice
                    heartbeat = wire.heartbeat(int(time.time() * 1000))
                client.push(heartbeat)
            elif client.outbox and client.outbox.verdict(now) != "ok":
                client.closed = True
                self.slow(client)

    def _flush_metrics(self) -> None:
        self.hub.flush_metrics()
        metrics.WORKER_BUSY.set(round(self.busy, 3))
        metrics.HOT_WINDOW.set(self._hot_window_s)
        if self._frames:
            metrics.FRAMES_OUT.inc(self._frames)
            metrics.MESSAGES_OUT.inc(self._messages)
            metrics.BYTES_OUT.inc(self._bytes)
            self._frames = self._messages = self._bytes = 0

    async def _writer(self, ws: ServerConnection, client: Client) -> None:
        """The slow path: send what the outbox holds with backpressure (awaiting drain);
        ends when the outbox is empty. A slow client only ever blocks its own writer."""
        text = client.encoding == wire.JSON
        outbox = client.outbox
        try:
            while outbox and not client.closed:
                n = min(len(outbox), 512)
                t_us = outbox.oldest_t_us()
                frame = outbox.frame(512)
                if frame is None:
                    break
                await ws.send(frame, text=text)
                client.last_sent = time.monotonic()
                self._count(len(frame), n, t_us)
        except ConnectionClosed:
            pass
        finally:
            client.writer = None


def _plain_fd(ws: ServerConnection) -> int:
    """The socket's file descriptor for send_many's C loop, or -1 (write through the
    transport): without the C module, or where the transport is not a plain socket (TLS)."""
    if send_all is None:
        return -1
    transport = ws.transport
    sock = transport.get_extra_info("socket")
    if sock is None or transport.get_extra_info("sslcontext") is not None:
        return -1
    try:
        return int(sock.fileno())
    except (OSError, ValueError):
        return -1
