"""A batching window's end: every connection that queued the same messages gets the same
frame, built once; a connection that queued others (or more than one frame's worth) gets
its own, in order."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest
from websockets.protocol import State

from oddsfeed.core import wire
from oddsfeed.core.session import Outbox
from oddsfeed.fanout import writer as writer_module
from oddsfeed.fanout.frames import frame_of_all
from oddsfeed.fanout.hub import Client

from .direct import recv_exactly


class _Quiet(asyncio.Protocol):
    pass


def message(n: int, market: str = "m1") -> wire.Outgoing:
    return wire.Outgoing({"op": "delta", "market": market, "v": n, "base": n - 1})


@pytest.fixture
async def clients() -> AsyncIterator[list[tuple[Client, socket.socket]]]:
    """Four JSON clients on real loopback TCP transports, and each one's peer socket."""
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    made: list[tuple[Client, socket.socket]] = []
    transports = []
    for i in range(4):
        peer = socket.create_connection(listener.getsockname())
        conn, _ = listener.accept()
        conn.setblocking(False)
        transport, _ = await loop.connect_accepted_socket(_Quiet, conn)
        transports.append(transport)
        client = Client(i + 1, wire.JSON, Outbox(encoding=wire.JSON, high_water_bytes=1 << 20,
                                                 max_bytes=4 << 20, max_lag_s=30.0))
        client.transport = transport
        client.proto = SimpleNamespace(state=State.OPEN)
        client.conn = SimpleNamespace(transport=transport, protocol=client.proto)
        client.fd = conn.fileno()
        made.append((client, peer))
    listener.close()
    yield made
    for transport in transports:
        transport.close()
    for _, peer in made:
        peer.close()


def items_of(frame: bytes) -> list[int]:
    """The versions a JSON text frame (payload under 126 bytes or 16-bit length) carries."""
    assert frame[0] == 0x81
    body = frame[4:] if frame[1] == 126 else frame[2:]
    msg = json.loads(body)
    return [m["v"] for m in msg["items"]] if msg["op"] == "batch" else [msg["v"]]


def test_the_same_messages_share_one_frame() -> None:
    """frame_of_all builds a batch once per memo for the same messages, apart for others."""
    a, b, c = message(1), message(2), message(3)
    memo: dict[tuple[wire.Outgoing, ...], bytes] = {}
    first = frame_of_all((a, b), wire.JSON, memo)
    assert frame_of_all((a, b), wire.JSON, memo) is first
    assert frame_of_all((a, c), wire.JSON, memo) is not first
    assert frame_of_all((b, a), wire.JSON, memo) != first  # order is part of the frame
    assert items_of(first) == [1, 2]
    assert frame_of_all((a,), wire.JSON, memo) is frame_of_all((a,), wire.JSON, {})


async def test_a_window_end_writes_each_connection_its_queue_in_order(
        clients: list[tuple[Client, socket.socket]]) -> None:
    """Two connections with the same queue get the same batch frame, one with another
    market's message between gets its own, one past a frame's worth gets every message in
    order over several frames."""
    d1, d2, other = message(1), message(2), message(7, "m2")
    (same1, p1), (same2, p2), (mixed, p3), (long_, p4) = clients
    for client in (same1, same2):
        for out in (d1, d2):
            client.outbox.push(out, now=0.0, market="m1")
    for out in (d1, other, d2):
        mixed.outbox.push(out, now=0.0, market=str(out.message["market"]))
    many = [message(n) for n in range(1, writer_module.FRAME_ITEMS + 3)]
    for out in many:
        long_.outbox.push(out, now=0.0, market="m1")
    writer = writer_module.Writer()
    writer.flush([same1, same2, mixed, long_])
    expected = frame_of_all((d1, d2), wire.JSON, {})
    assert recv_exactly(p1, len(expected)) == expected
    assert recv_exactly(p2, len(expected)) == expected
    mixed_frame = frame_of_all((d1, other, d2), wire.JSON, {})
    assert items_of(recv_exactly(p3, len(mixed_frame))) == [1, 7, 2]
    got: list[int] = []
    p4.settimeout(5)
    buf = b""
    while len(got) < len(many):
        buf += p4.recv(1 << 16)
        while len(buf) >= 4:
            n = buf[1] if buf[1] < 126 else int.from_bytes(buf[2:4], "big")
            head = 2 if buf[1] < 126 else 4
            if len(buf) < head + n:
                break
            got += items_of(buf[:head + n])
            buf = buf[head + n:]
    assert got == [m.message["v"] for m in many]
    assert not any(c.outbox for c, _ in clients)
    assert writer.messages == 2 + 2 + 3 + len(many)
