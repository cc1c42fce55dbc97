"""A FanoutServer with one client on a real loopback TCP transport, without a WebSocket
handshake: enough for the write paths (send_many, batch flushes), which only write
prebuilt frames."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from types import SimpleNamespace

from websockets.protocol import State

from oddsfeed.core import wire
from oddsfeed.core.session import Outbox
from oddsfeed.fanout import server as server_module
from oddsfeed.fanout.hub import Client, Hub
from oddsfeed.settings import load_settings


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, "peer closed early"
        out += chunk
    return bytes(out)


class _Sink(asyncio.Protocol):
    pass


@contextlib.asynccontextmanager
async def direct_client(small_buffers: bool = False) -> AsyncIterator[
        tuple[server_module.FanoutServer, Client, socket.socket]]:
    """A FanoutServer and one msgpack client on a real loopback TCP transport (no
    WebSocket handshake: send_many only writes prebuilt frames), and the peer's socket.
    ``small_buffers``: 4 KiB socket buffers, so that a 40 KB frame is a short write."""
    listener = socket.create_server(("127.0.0.1", 0))
    reader = socket.socket()
    if small_buffers:
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.connect(listener.getsockname())
    conn, _ = listener.accept()
    listener.close()
    if small_buffers:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    conn.setblocking(False)
    transport, _ = await asyncio.get_running_loop().connect_accepted_socket(_Sink, conn)
    try:
        settings = load_settings(None, {}, {})
        hub = Hub(store=SimpleNamespace(bus=lambda *a, **k: None))  # type: ignore[arg-type]
        fan = server_module.FanoutServer(hub, fanout=settings.fanout, auth=None)  # type: ignore[arg-type]
        client = Client(1, wire.MSGPACK, Outbox(encoding=wire.MSGPACK, high_water_bytes=1 << 20,
                                                max_bytes=4 << 20, max_lag_s=30.0))
        client.sink = fan
        client.transport = transport
        client.proto = SimpleNamespace(state=State.OPEN)
        client.conn = SimpleNamespace(transport=transport, protocol=client.proto)
        client.fd = conn.fileno()
        yield fan, client, reader
    finally:
        transport.close()
        reader.close()
