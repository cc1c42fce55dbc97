"""Writing frames: one prebuilt frame to many sockets, a connection's queued messages, and
the backpressured slow path.

The many-socket send is chosen once, at import: the C loop (oddsfeed/fanout/_send.c)
where it was built, else its portable drop-in (:mod:`oddsfeed.fanout.writer_py`), both
``send_all(fds, frame) -> [(index, sent or -errno), ...]`` for the sockets that did not
take the whole frame. Every other write goes through the connection's transport (see
:mod:`oddsfeed.fanout.wsinternals` for why writing there behind websockets is sound).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from websockets.exceptions import ConnectionClosed

from ..core import wire
from ..core.book import Delta
from . import metrics
from .client import Client
from .frames import frame_of, frame_of_all, next_frame
from .runs import COHORT, Run, leave
from .wsinternals import OPEN

try:
    from ._send import send_all, send_each, uring
except ImportError:  # pragma: no cover - built by `pip install` where a compiler is
    from .writer_py import send_all, send_each

    def uring(enable: bool | None = None, /) -> str:
        return "off: no C send loop"

# ODDSFEED_SEND_URING=0 keeps every send a send() for the life of the process (the io_uring
# ring off): an A/B switch, and a way out where a kernel's io_uring misbehaves.
if os.environ.get("ODDSFEED_SEND_URING", "1") == "0":
    uring(False)

# Whether the many-socket send is the C loop (reported by the worker when it is ready).
C_SEND_LOOP = send_all.__module__.endswith("._send")

log = logging.getLogger("oddsfeed.fanout")

# Past this many bytes buffered in a connection's transport, frames go through the writer
# task (which awaits drain) instead of being written directly.
TRANSPORT_HIGH_WATER = 64 * 1024

# Messages per frame at a batching window's end (more queued: framed in order, as usual).
FRAME_ITEMS = 512

# Messages per frame of the slow path (a client catching up after backpressure).
SLOW_PATH_ITEMS = 512


def open_transport(client: Client) -> Any:
    """``client``'s transport if a frame may be written to it now (open, keeping up), else
    None."""
    transport = client.transport
    if (transport is None or transport.get_write_buffer_size() > TRANSPORT_HIGH_WATER
            or client.proto.state is not OPEN or transport.is_closing()):
        return None
    return transport


_reported = False


class Writer:
    """The frames one worker writes, and the counts it hands to prometheus."""

    def __init__(self) -> None:
        global _reported
        if not _reported:  # once per process: whether a container's seccomp refused the ring
            _reported = True
            log.info("fan-out sends: C loop %s, io_uring %s", C_SEND_LOOP, uring())
        # summed here and handed to prometheus by flush_metrics() (cheap hot path)
        self.frames = self.messages = self.bytes = 0

    def direct(self, client: Client, out: wire.Outgoing, now: float) -> bool:
        """Write ``out`` to ``client`` at once if its socket keeps up; True if written."""
        transport = open_transport(client)
        if transport is None:
            return False
        frame = frame_of(out, client.encoding)
        transport.write(frame)
        client.last_sent = now
        self.count(len(frame), 1, out.t_us)
        return True

    def send_many(self, clients: list[Client], out: wire.Outgoing, market: str,
                  delta: Delta, now: float, write_now: Callable[[Client, float], bool],
                  queue: Callable[[list[Client], wire.Outgoing, str, Delta, float], None]
                  ) -> None:
        """One delta to many clients: written at once to each one ``write_now`` allows and
        whose socket keeps up; ``queue`` takes the ones the policy holds back, after the
        sends (its market's run or client.push without a second write-through check),
        client.push the ones whose socket does not keep up. A client in a run leaves it
        first (what the run holds for it goes before this delta).

        This loop runs once per delivery (most of a loaded worker's time, the send syscall
        most of that): the frame is looked up once per encoding, and sockets whose
        transport holds nothing are written by one ``send_all`` per encoding; what a
        socket did not take goes back through its transport, in order."""
        frames: dict[str, bytes] = {}
        direct: dict[str, tuple[list[int], list[Any]]] = {}
        held: list[Client] = []
        sent = nbytes = 0
        for client in clients:
            if client.run is not None:
                leave(client)
            transport = client.transport
            if not write_now(client, now):
                held.append(client)
                continue
            if transport is None:
                client.push(out, market=market, delta=delta, now=now, write_through=False)
                continue
            buffered = transport.get_write_buffer_size()
            if (buffered > TRANSPORT_HIGH_WATER or client.proto.state is not OPEN
                    or transport.is_closing()):
                client.push(out, market=market, delta=delta, now=now, write_through=False)
                continue
            enc = client.encoding
            frame = frames.get(enc)
            if frame is None:
                frame = frames[enc] = frame_of(out, enc)
            client.last_sent = now
            client.received += 1
            sent += 1
            nbytes += len(frame)
            fd = client.fd
            if fd >= 0 and not buffered:
                group = direct.get(enc)
                if group is None:
                    group = direct[enc] = ([], [])
                group[0].append(fd)
                group[1].append(transport)
            else:
                transport.write(frame)
        for enc, (fds, transports) in direct.items():
            frame = frames[enc]
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
            self.count(nbytes, sent, out.t_us, frames=sent)
        if held:
            queue(held, out, market, delta, now)

    def flush(self, clients: Iterable[Client], runs: Iterable[Run[Client]] = ()) -> None:
        """A batching window's end: each client's queued messages as one frame, and each
        market run's slice to each of its members as one frame, the frames of every socket
        that holds nothing in its transport sent by one ``send_each`` call (what a socket
        did not take goes back through its transport, in order); the others (a TLS socket,
        something buffered, more than one frame queued) through :meth:`write_or_wake`.

        Once per queued connection: the connections that queued the same messages (a
        market's subscribers) share one frame, built for the first of them. A client is in
        a run only while its outbox is empty, so each socket gets one frame here."""
        fds: list[int] = []
        frames: list[bytes] = []
        transports: list[Any] = []
        memos: dict[str, dict[tuple[wire.Outgoing, ...], bytes]] = {}
        now = time.monotonic()
        nbytes = nmessages = 0
        t_us = 0
        for run in runs:
            held = run.messages
            if not held:
                continue
            if not t_us:
                t_us = held[0].t_us
            slices = run.frames
            n = len(held)
            # the frame of the whole run in the members' most common encoding
            whole_enc = run.encoding
            whole: bytes | None = None
            market = run.market
            cohort_end = run.cohort_end
            position = run.position() if run.ncohort else None
            for client in run.clients:
                if client.run is not run:
                    continue  # left the run (or joined again: counted once, there)
                transport = client.transport
                fd = client.fd
                if (transport is None or client.writer is not None or client.closed or fd < 0
                        or client.proto.state is not OPEN or transport.is_closing()
                        or transport.get_write_buffer_size()):
                    # through its outbox, in order, as any queued client
                    if leave(client) and client.outbox:
                        self.write_or_wake(client)
                    continue
                client.run = None
                at, end = client.run_at, client.run_end
                if end == COHORT:  # its position is the run's again
                    end = cohort_end
                    if market in client.pos:
                        client.pos[market] = position
                if not at and end == n and client.encoding == whole_enc:
                    if whole is None:
                        whole = frame_of_all(tuple(held), whole_enc, {})
                    frame = whole
                else:
                    key = (client.encoding, at, end)
                    cached = slices.get(key)
                    if cached is None:
                        cached = slices[key] = frame_of_all(
                            tuple(held[at:end]), client.encoding, {})
                    frame = cached
                fds.append(fd)
                frames.append(frame)
                transports.append(transport)
                client.last_sent = now
                client.received += end - at
                nbytes += len(frame)
                nmessages += end - at
        for client in clients:
            ws = client.conn
            if ws is None or client.writer is not None or client.closed:
                continue
            transport = ws.transport
            outbox = client.outbox
            if (client.fd < 0 or ws.protocol.state is not OPEN or transport.is_closing()
                    or transport.get_write_buffer_size()
                    or outbox.queued_bytes >= outbox.flush_bytes):
                self.write_or_wake(client)
                continue
            messages = outbox.take_all(FRAME_ITEMS)
            if messages is None:  # nothing queued, or more than one frame: in order, as usual
                if outbox:
                    self.write_or_wake(client)
                continue
            enc = client.encoding
            memo = memos.get(enc)
            if memo is None:
                memo = memos[enc] = {}
            frame = frame_of_all(messages, enc, memo)
            fds.append(client.fd)
            frames.append(frame)
            transports.append(transport)
            client.last_sent = now
            nbytes += len(frame)
            nmessages += len(messages)
            if not t_us:
                t_us = messages[0].t_us
        if not fds:
            return
        self.count(nbytes, nmessages, t_us, frames=len(fds))
        try:
            short = send_each(fds, frames)
        except Exception:  # MemoryError, in practice: fall back to every transport
            # (raised before any send but for a failure to build the result: a frame
            # already sent would then arrive twice, its deltas dropped by the client rule)
            log.exception("send_each failed; writing through the transports")
            short = [(i, -1) for i in range(len(fds))]
        for i, took in short:
            frame = frames[i]
            transports[i].write(frame[took:] if took > 0 else frame)

    def write_or_wake(self, client: Client) -> None:
        """Fast path: when the connection is open, no writer task running and its socket
        keeping up, write the queued frames straight to the transport (no task switch).
        Otherwise a writer task sends with backpressure (awaiting drain)."""
        ws = client.conn
        if ws is None or client.writer is not None or client.closed:
            return  # a running writer picks the new messages up
        transport = ws.transport
        if (ws.protocol.state is not OPEN
                or transport.get_write_buffer_size() > TRANSPORT_HIGH_WATER):
            self._start_writer(client)
            return
        outbox = client.outbox
        while True:
            t_us = outbox.oldest_t_us()
            framed = next_frame(outbox)
            if framed is None:
                break
            frame, n = framed
            transport.write(frame)
            self.count(len(frame), n, t_us)
            if not outbox.queued_bytes:
                break  # the common case: one frame took everything
            if transport.get_write_buffer_size() > TRANSPORT_HIGH_WATER:
                self._start_writer(client)
                break
        client.last_sent = time.monotonic()

    def _start_writer(self, client: Client) -> None:
        if client.writer is None and not client.closed:
            client.writer = asyncio.get_running_loop().create_task(self._slow_path(client))

    async def _slow_path(self, client: Client) -> None:
        """Send what the outbox holds with backpressure (awaiting drain); ends when the
        outbox is empty. A slow client only ever blocks its own writer."""
        ws = client.conn
        text = client.encoding == wire.JSON
        outbox = client.outbox
        try:
            while outbox and not client.closed:
                n = min(len(outbox), SLOW_PATH_ITEMS)
                t_us = outbox.oldest_t_us()
                frame = outbox.frame(SLOW_PATH_ITEMS)
                if frame is None:
                    break
                await ws.send(frame, text=text)
                client.last_sent = time.monotonic()
                self.count(len(frame), n, t_us)
        except ConnectionClosed:
            pass
        finally:
            client.writer = None

    def count(self, nbytes: int, messages: int, t_us: int, frames: int = 1) -> None:
        self.frames += frames
        self.messages += messages
        self.bytes += nbytes
        if t_us and self.frames % 64 < frames:  # a sample is enough for the histogram
            metrics.DELIVERY_LATENCY.observe(max(0.0, time.time() - t_us / 1e6))

    def flush_metrics(self) -> None:
        """Add what was counted since the last call to the prometheus metrics."""
        if self.frames:
            metrics.FRAMES_OUT.inc(self.frames)
            metrics.MESSAGES_OUT.inc(self.messages)
            metrics.BYTES_OUT.inc(self.bytes)
            self.frames = self.messages = self.bytes = 0
