"""The WebSocket server of one worker: its connections' lives (admission, reader, request
dispatch, closes), the batching windows, and the ticker (heartbeats, keepalive,
slow-consumer age checks, the batching policy's clock, idle collection, metrics).

It implements the hub's :class:`~oddsfeed.fanout.client.Sink` by asking the
:class:`~oddsfeed.fanout.batching.BatchingPolicy` and handing frames to the
:class:`~oddsfeed.fanout.writer.Writer`; the handshake is :mod:`.handshake`, the protocol
state :mod:`.hub` and :mod:`oddsfeed.core.session`.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from .. import __version__
from ..auth import ANONYMOUS, READ, VALIDATE, Authenticator, Principal
from ..clock import now_ms
from ..core import wire
from ..core.book import Delta
from ..core.errors import ProtocolViolation, StoreError
from ..core.session import Outbox
from ..settings import FanoutSettings
from . import metrics
from .admission import Admission, TokenBucket
from .batching import BatchingPolicy
from .close import (
    INTERNAL_ERROR,
    KEEPALIVE_TIMEOUT,
    OVERLOADED,
    RATE_LIMITED,
    SLOW_CONSUMER,
    TOKEN_EXPIRED,
    TOO_MANY_CONNECTIONS,
    Close,
)
from .handshake import peer_ip, process_request, select_subprotocol
from .hub import Client, Hub
from .runs import Run, leave, settle
from .writer import Writer
from .wsinternals import Connection, attach, is_open, ping, shed_handshake

log = logging.getLogger("oddsfeed.fanout")

# The Server header of the handshake response: no version (a banner only helps someone
# matching a deployment against known flaws). The hello message names the version.
SERVER_NAME = "oddsfeed"

# The ticker wakes this often and visits a slice of the clients each time, VISIT_CHUNK
# clients at a time with a turn of the event loop in between: a delta arriving meanwhile
# waits for one chunk at most, not for a whole pass.
TICK_S = 0.1
VISIT_CHUNK = 200

# Below this busy share (smoothed, and over the last tick alone) the worker is idle enough
# to run the collector's middle generation itself (at most once every IDLE_GC_EVERY_S):
# otherwise the next automatic one, which scans every new connection's objects, may stall a
# loaded loop. Both shares, since the smoothed one lags a load that just started.
IDLE_GC_BUSY = 0.25
IDLE_GC_EVERY_S = 1.0

# CPU seconds of this process (user + system: the send syscalls are most of it).
cpu_time = time.process_time

# (legs, accept, the caller's token subject) -> the validation body
ValidateFn = Callable[[Sequence[wire.Leg], str, str], Awaitable[dict[str, Any]]]
MAX_VALIDATIONS_IN_FLIGHT = 8


class _Batch:
    """Clients and market runs waiting for one shared batching-window timer."""

    __slots__ = ("clients", "runs", "handle")

    def __init__(self) -> None:
        self.clients: set[Client] = set()
        self.runs: list[Run[Client]] = []
        self.handle: asyncio.TimerHandle | None = None


class FanoutServer:
    """Serves ``ws://host:port/ws`` for one worker process; call :meth:`start`, then
    :meth:`close` on shutdown (clients get :data:`~oddsfeed.fanout.close.GOING_AWAY`)."""

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
        self._ids = itertools.count(1)
        self.admission = Admission(connect_per_s=fanout.ip_connect_per_s,
                                   per_ip=fanout.max_connections_per_ip,
                                   per_subject=fanout.max_connections_per_subject)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.session_prefix = f"{now_ms():x}"
        self.policy = BatchingPolicy(window_ms=fanout.batch_window_ms,
                                     max_window_ms=fanout.batch_window_max_ms,
                                     min_busy=fanout.batch_min_busy)
        self.writer = Writer()
        # clients with something to send wait for one shared timer per window
        self._batch = _Batch()
        self._hot_batch = _Batch()
        # market -> its run of the open window (see :mod:`.runs`)
        self._runs: dict[str, Run[Client]] = {}
        self._idle_gc_at = -IDLE_GC_EVERY_S  # loop time of the last idle collection
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
            process_request=process_request(self.auth, self.admission),
            select_subprotocol=select_subprotocol,
            server_header=SERVER_NAME,
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        self.hub.sink = self

    async def close(self) -> None:
        """Stop accepting and close every client (websockets sends GOING_AWAY)."""
        if self._server is None:
            return
        if self._ticker is not None:
            self._ticker.cancel()
        self._server.close(close_connections=True)
        try:
            await asyncio.wait_for(self._server.wait_closed(), 5.0)
        except TimeoutError:
            log.warning("some connections did not close in time")

    # ---- connection ----------------------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        principal = ws.principal if isinstance(ws, Connection) else ANONYMOUS
        shed_handshake(ws)
        if len(self.hub.clients) >= self.cfg.max_connections:
            await ws.close(*OVERLOADED)
            return
        ip = peer_ip(ws)
        refused = self.admission.opened(ip, principal)
        if refused:
            metrics.CONNECTIONS_REFUSED.labels(refused).inc()
            await ws.close(*TOO_MANY_CONNECTIONS)
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
        attach(client, ws)
        self.hub.add_client(client)
        metrics.CONNECTIONS.inc()
        loop = asyncio.get_running_loop()
        expiry = None
        if principal.exp:
            delay = max(0.0, principal.exp - time.time())
            expiry = loop.call_later(delay, self._close_later, ws, TOKEN_EXPIRED)
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
            await ws.close(*INTERNAL_ERROR)
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

    def _close_later(self, ws: ServerConnection, why: Close) -> None:
        if why is SLOW_CONSUMER:
            metrics.SLOW_CLOSES.inc()
        task = asyncio.get_running_loop().create_task(ws.close(*why))
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
                    self.writer.write_or_wake(client)
                    await ws.close(*RATE_LIMITED)
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
            client.push(wire.reply("pong", req.id, ts=now_ms()))
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
            task = asyncio.get_running_loop().create_task(
                self._validate(client, req, principal.sub))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)

    async def _validate(self, client: Client, req: wire.Validate, sub: str) -> None:
        assert self.validate is not None
        try:
            body = await self.validate(req.legs, req.accept, sub)
        except StoreError:
            client.push(wire.error("internal", "the store is unavailable; retry", req.id))
            return
        except Exception:  # every validate is answered: the client waits for its id
            log.exception("validate %s failed", req.id)
            client.push(wire.error("internal", "the validation failed", req.id))
            return
        client.push(wire.reply("validation", req.id, **body))

    # ---- the hub's Sink -------------------------------------------------------------------

    def slow(self, client: Client) -> None:
        """Past its slow-consumer limit: close (the client resumes with ``from``)."""
        if client.conn is not None:
            self._close_later(client.conn, SLOW_CONSUMER)

    def direct(self, client: Client, out: wire.Outgoing, now: float) -> bool:
        """Client.push's write-through: write ``out`` at once if the policy allows it and
        the socket keeps up; returns True if written."""
        return self.policy.write_now(client, now) and self.writer.direct(client, out, now)

    def send_many(self, clients: list[Client], out: wire.Outgoing, market: str,
                  delta: Delta, now: float) -> None:
        """One delta to many clients, each written at once or queued (see Writer)."""
        policy = self.policy
        if policy.behind(self.hub.lateness_s):
            policy.widen()  # fell behind within a tick: do not wait for the ticker
        run = self._runs.get(market)
        if run is not None:
            if out.urgent or not policy.batching:
                # a suspension leaves at once, behind what its market's run holds
                self._close_run(run)
            else:
                clients = run.take(clients, run.index(out, delta))
                if not clients:
                    if run.full():
                        self._write_run(run)
                    return
        self.writer.send_many(clients, out, market, delta, now, policy.write_now, self._queue)
        run = self._runs.get(market)
        if run is not None and run.full():
            self._write_run(run)

    def advance(self, market: str, out: wire.Outgoing, delta: Delta, checked: bool) -> int:
        """The market's run takes the delta for its whole cohort at once (see
        :meth:`.runs.Run.advance`); an urgent delta, or a worker that stopped batching,
        closes the run instead (every member's slice to its outbox, its position its own),
        and a delta the hub could not check against the node's position (a new epoch, a
        new sequence) dissolves the cohort: each member's own position decides. The run's
        bound is checked here: written at once, it holds the delta for its cohort, and the
        members that take it alone get it after the run, like any client the run left."""
        run = self._runs.get(market)
        if run is None:
            return 0
        policy = self.policy
        if out.urgent or not policy.batching:
            self._close_run(run)
            return 0
        if not checked:
            if run.ncohort:
                for client in run.clients:
                    if client.run is run:
                        settle(client)
            return 0
        if policy.behind(self.hub.lateness_s):
            policy.widen()
        taken = run.advance(out, delta)
        if run.full():
            self._write_run(run)
        return taken

    def _queue(self, clients: list[Client], out: wire.Outgoing, market: str, delta: Delta,
               now: float) -> None:
        """Queue a delta the policy does not write at once: in its market's run for each
        client that may join it (batching, nothing else queued for it, in no run), else in
        the client's outbox. A client of several markets keeps its outbox: its markets'
        deltas of one window share one frame there."""
        policy = self.policy
        if not policy.batching or out.urgent:
            for client in clients:
                client.push(out, market=market, delta=delta, now=now, write_through=False)
            return
        run = self._runs.get(market)
        idx = -1
        hot_of = policy.hot
        for client in clients:
            if (client.run is None and not client.outbox.queued_bytes
                    and client.writer is None and not client.closed and len(client.pos) == 1):
                hot = hot_of(client)
                if run is None:
                    run = self._open_run(market, hot, client)
                if run.hot == hot:
                    if idx < 0:
                        idx = run.index(out, delta)
                    run.join(client, idx)
                    continue
            client.push(out, market=market, delta=delta, now=now, write_through=False)

    def _open_run(self, market: str, hot: bool, client: Client) -> Run[Client]:
        """A new run of ``market`` waiting for the hot or the normal batching window."""
        policy = self.policy
        run: Run[Client] = Run(market, hot, client.encoding, client.outbox.flush_bytes)
        self._runs[market] = run
        batch = self._hot_batch if hot else self._batch
        batch.runs.append(run)
        if batch.handle is None:
            batch.handle = asyncio.get_running_loop().call_later(
                policy.hot_window_s if hot else policy.window_s, self._flush, batch)
        return run

    def _write_run(self, run: Run[Client]) -> None:
        """A run holding a frame's worth is written now, not at the window's end."""
        if self._runs.get(run.market) is run:
            del self._runs[run.market]
        self.writer.flush((), (run,))

    def _close_run(self, run: Run[Client]) -> None:
        """Every member's slice of ``run`` moves to its outbox (see :func:`.runs.leave`)."""
        if self._runs.get(run.market) is run:
            del self._runs[run.market]
        for client in run.clients:
            if client.run is run:
                leave(client)

    def ready(self, client: Client, urgent: bool) -> None:
        """A client has something to send: write it now (urgent, or the worker is not
        batching) or at the end of the shared batching window."""
        policy = self.policy
        if urgent or not policy.batching:
            self.writer.write_or_wake(client)
            return
        hot = policy.hot(client)
        batch = self._hot_batch if hot else self._batch
        batch.clients.add(client)
        if batch.handle is None:
            batch.handle = asyncio.get_running_loop().call_later(
                policy.hot_window_s if hot else policy.window_s, self._flush, batch)

    def _flush(self, batch: _Batch) -> None:
        batch.handle = None
        clients, batch.clients = batch.clients, set()
        runs, batch.runs = batch.runs, []
        for run in runs:
            if self._runs.get(run.market) is run:
                del self._runs[run.market]
        self.writer.flush(clients, runs)

    def _leave_batches(self, client: Client) -> None:
        leave(client)
        self._batch.clients.discard(client)
        self._hot_batch.clients.discard(client)

    # ---- the ticker -----------------------------------------------------------------------

    async def _tick(self) -> None:
        """Heartbeats for idle clients, keepalive pings, slow-consumer age checks, the
        batching policy's busy share, metrics.

        Every client is visited once per ``period``, in slices every ``TICK_S``: one pass over
        10,000 clients at once would stall the loop for milliseconds (the p99)."""
        heartbeat_s = self.cfg.heartbeat_ms / 1000
        ping_s, pong_s = self.cfg.ping_interval_s, self.cfg.ping_timeout_s
        period = min(1.0, heartbeat_s / 4, ping_s / 2, pong_s / 2)
        slices = max(1, round(period / TICK_S))
        self.policy.period = period
        sweep: list[Client] = []
        at = 0
        per_slice = 1
        n = 0
        loop = asyncio.get_running_loop()
        cpu0, wall0 = cpu_time(), loop.time()
        while True:
            await asyncio.sleep(period / slices)
            cpu, wall = cpu_time(), loop.time()
            self.policy.adapt(cpu - cpu0, wall - wall0, self.hub.lateness_s)
            cpu0, wall0 = cpu, wall
            self._idle_collect(wall)
            if at >= len(sweep):
                sweep, at = list(self.hub.clients), 0
                per_slice = -(-len(sweep) // slices)
            end = at + per_slice
            while at < end:
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
        policy = self.policy
        if (gc.isenabled() and max(policy.busy, policy.tick_busy) < IDLE_GC_BUSY
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
            if isinstance(ws, Connection) and is_open(ws):
                # keepalive: ping a peer silent for ping_interval_s; drop it if it stays
                # silent ping_timeout_s more (protocol.md section 2)
                silent = lnow - (ws.last_rx or lnow)
                if ws.last_rx == 0.0:
                    ws.last_rx = lnow
                elif silent > ping_s + pong_s:
                    client.closed = True
                    self._close_later(ws, KEEPALIVE_TIMEOUT)
                    continue
                elif silent > ping_s and not ws.pinged and client.writer is None:
                    ws.pinged = True
                    ping(ws)
            if not client.outbox and now - client.last_sent >= heartbeat_s:
                if heartbeat is None:  # one shared message for this slice
                    heartbeat = wire.heartbeat(now_ms())
                client.push(heartbeat)
            elif client.outbox and client.outbox.verdict(now) != "ok":
                client.closed = True
                self.slow(client)

    def _flush_metrics(self) -> None:
        self.hub.flush_metrics()
        metrics.WORKER_BUSY.set(round(self.policy.busy, 3))
        metrics.HOT_WINDOW.set(self.policy.hot_window_s)
        self.writer.flush_metrics()
