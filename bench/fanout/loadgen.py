"""The fan-out benchmark's load generator: one process holding many WebSocket client
connections on raw asyncio protocols (a minimal RFC 6455 client: handshake, unmasked server
frames in, masked frames out), so that it costs far less per message than the server.

Every received delta is checked for version continuity (``gaps``); a conflated delta counts
as delivering each version it spans. Latency is ``receive time - ts`` (the driver stamps
``ts`` right before it applies the update).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import os
import socket
import struct
import time
from typing import Any

import msgpack


def _client_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """A masked client frame (mask of zeros: XOR is the identity, allowed by RFC 6455)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + b"\x00\x00\x00\x00" + payload


# failed connection attempts after which a process stops opening more
MAX_FAILURES = 20

# How long a process waits for its connections' snapshots before reporting ready anyway.
SYNC_TIMEOUT_S = 120.0

# SO_LINGER on, timeout 0: close() sends a reset and leaves no TIME_WAIT behind.
LINGER_RESET = struct.pack("ii", 1, 0)


class Stats:
    """What one process saw."""

    def __init__(self) -> None:
        self.messages = 0
        self.gaps = 0
        self.frames = 0
        self.closed = 0
        self.synced = 0  # connections holding every market they subscribed (snapshots in)
        self.lat_ms: list[float] = []
        self.measuring = False


class Conn(asyncio.Protocol):
    """One subscribed client connection."""

    def __init__(self, kind: str, markets: list[str], stats: Stats,
                 ready: asyncio.Future[None], encoding: str = "msgpack") -> None:
        self.kind = kind
        self.json = encoding == "json"
        self.markets = markets
        self.stats = stats
        self.ready = ready
        self.buf = bytearray()
        self.open = False
        self.last: dict[str, int] = {}
        self.synced = False
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        sub = "json" if self.json else "msgpack"
        proto = f"Sec-WebSocket-Protocol: oddsfeed.v1.{sub}\r\n" if self.kind == "oddsfeed" else ""
        transport.write((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                         f"Sec-WebSocket-Version: 13\r\n{proto}\r\n").encode())

    def connection_lost(self, exc: BaseException | None) -> None:
        self.stats.closed += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed during handshake"))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if b" 101 " not in buf[:end]:
                self.transport.close()
                return
            del buf[:end + 4]
            self.open = True
            if self.kind == "oddsfeed" and self.json:
                self.transport.write(_client_frame(json.dumps(
                    {"op": "subscribe", "markets": self.markets}).encode(), 0x1))
            elif self.kind == "oddsfeed":
                self.transport.write(_client_frame(msgpack.packb(
                    {"op": "subscribe", "markets": self.markets})))
            else:  # the naive server reads msgpack subscriptions either way
                self.transport.write(_client_frame(msgpack.packb({"markets": self.markets})))
            if self.kind != "oddsfeed":  # the naive server sends no catch-up
                self.synced = True
                self.stats.synced += 1
            if not self.ready.done():
                self.ready.set_result(None)
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            b0 = buf[pos]
            ln = buf[pos + 1] & 0x7F
            h = 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln = struct.unpack_from("!H", buf, pos + 2)[0]
                h = 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln = struct.unpack_from("!Q", buf, pos + 2)[0]
                h = 10
            if n - pos < h + ln:
                break
            payload = bytes(buf[pos + h:pos + h + ln])
            pos += h + ln
            op = b0 & 0x0F
            if op in (1, 2):
                self.on_message(payload)
            elif op == 9:
                self.transport.write(_client_frame(payload, 0xA))
            elif op == 8:
                self.transport.write(_client_frame(payload[:2], 0x8))
                self.transport.close()
        if pos:
            del buf[:pos]

    def on_message(self, payload: bytes) -> None:
        st = self.stats
        st.frames += 1
        msg = json.loads(payload) if self.json else msgpack.unpackb(payload)
        now_ms = time.time() * 1000
        items = msg["items"] if msg.get("op") == "batch" else (msg,)
        last = self.last
        for it in items:
            if self.kind == "oddsfeed":
                op = it.get("op")
                if op != "delta":
                    if op == "snapshot":
                        last[it["market"]["id"]] = it["market"]["version"]
                        if not self.synced and len(last) >= len(self.markets):
                            self.synced = True
                            st.synced += 1
                    continue
                m, v, base = it["m"], it["v"], it["base"]
                prev = last.get(m)
                if prev is not None and base != prev:
                    st.gaps += 1
                st.messages += v - base if prev is not None else 1
            else:
                m, v = it["m"], it["v"]
                prev = last.get(m)
                if prev is not None and v != prev + 1:
                    st.gaps += 1
                st.messages += 1
            last[m] = v
            if st.measuring:
                st.lat_ms.append(now_ms - it["ts"])


def run_process(url_host: str, port: int, kind: str, subs: list[list[str]], out: Any,
                ready: Any, go: Any, stop: Any, source_ips: list[str],
                encoding: str = "msgpack") -> None:
    """Entry point of one load-generator process: open ``len(subs)`` connections (spread
    over ``source_ips``), report readiness, count until ``stop`` is set, then report."""
    import resource

    import uvloop

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # each connection is a file descriptor
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    stats = Stats()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        conns = []
        failures = 0  # bounded: a server that stops accepting ends the ramp, not the run
        for i, markets in enumerate(subs):
            if failures >= MAX_FAILURES:
                break
            fut: asyncio.Future[None] = loop.create_future()
            src = source_ips[i % len(source_ips)]
            for attempt in range(5):
                try:
                    tr, _ = await loop.create_connection(
                        functools.partial(Conn, kind, markets, stats, fut, encoding),
                        url_host, port, local_addr=(src, 0))
                    await asyncio.wait_for(fut, 10)
                    conns.append(tr)
                    break
                except (OSError, ConnectionError, TimeoutError):
                    failures += 1
                    await asyncio.sleep(0.05 * (attempt + 1))
                    fut = loop.create_future()
        # the measurement starts once every connection holds its snapshots: a server still
        # working through 10,000 subscriptions would otherwise be measured doing both
        deadline = loop.time() + SYNC_TIMEOUT_S
        while stats.synced < len(conns) and loop.time() < deadline:  # noqa: ASYNC110 (polls a counter, bounded)
            await asyncio.sleep(0.05)
        ready.put(len(conns))
        while not stop.is_set():
            if not stats.measuring and go.is_set():
                stats.measuring = True
            await asyncio.sleep(0.01)
        for tr in conns:
            # reset instead of FIN: no TIME_WAIT left behind holding an ephemeral port for a
            # minute (three 10,000-connection runs in a row ran out of ports without this)
            sock = tr.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            tr.abort()

    uvloop.run(main())
    lat = stats.lat_ms
    step = max(1, len(lat) // 50_000)
    out.put({"lat_ms": lat[::step], "n_lat": len(lat), "messages": stats.messages,
             "gaps": stats.gaps, "frames": stats.frames})
