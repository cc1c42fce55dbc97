"""The many-socket send (the C loop oddsfeed/fanout/_send.c and its portable drop-in
oddsfeed/fanout/writer_py.py) and send_many's use of it: one frame to many sockets in one
call (send_all) or each socket its own frame (send_each, a batching window's end), a short write's rest and a failed write handed back to the transport in order, the
same deliveries through either implementation, and TLS transports written through."""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest

from oddsfeed.core import wire
from oddsfeed.core.session import Outbox
from oddsfeed.fanout import writer as writer_module
from oddsfeed.fanout import writer_py
from oddsfeed.fanout.frames import frame_of
from oddsfeed.fanout.hub import Client, Hub
from oddsfeed.fanout.wsinternals import plain_fd
from oddsfeed.worker import Worker

from .builders import create, price
from .conftest import WorkerFactory, ws_url
from .direct import direct_client, recv_exactly
from .mirror import Mirror, wait_until

SendAll = Callable[[Sequence[int], bytes], list[tuple[int, int]]]
send_all: SendAll | None
try:
    from oddsfeed.fanout._send import send_all, uring

    # the io_uring ring (its descriptor) is set up now, not in a test: its first send_all
    # would otherwise reuse the number of the descriptor the test closed as a bad one
    uring()
except ImportError:  # pragma: no cover - built by `pip install` where a compiler is
    send_all = None
needs_c = pytest.mark.skipif(send_all is None, reason="oddsfeed.fanout._send was not built")
IMPLEMENTATIONS = [pytest.param(send_all, id="c", marks=needs_c),
                   pytest.param(writer_py.send_all, id="python")]


@pytest.mark.parametrize("send_all", IMPLEMENTATIONS)
def test_send_all_reports_the_sockets_that_did_not_take_everything(send_all: SendAll) -> None:
    """Every socket gets the frame; the result lists only the exceptions: a peer that is
    gone (-EPIPE), a full buffer (a short count or -EAGAIN), a closed descriptor (-EBADF)."""
    frame = b"\x82\x05hello"
    ok1, peer1 = socket.socketpair()
    ok2, peer2 = socket.socketpair()
    gone, peer_gone = socket.socketpair()
    peer_gone.close()
    full, peer_full = socket.socketpair()
    full.setblocking(False)
    with pytest.raises(BlockingIOError):
        while True:  # fill its buffer: the next send cannot take a whole frame
            full.send(b"x" * 4096)
    dead = socket.socket()
    bad_fd = dead.fileno()
    dead.close()
    try:
        res = send_all([ok1.fileno(), gone.fileno(), full.fileno(), ok2.fileno(), bad_fd],
                       frame)
        assert peer1.recv(100) == frame
        assert peer2.recv(100) == frame
        got = dict(res)
        assert sorted(got) == [1, 2, 4]
        assert got[1] == -errno.EPIPE
        assert got[2] == -errno.EAGAIN or 0 <= got[2] < len(frame)
        assert got[4] == -errno.EBADF
        assert send_all([], frame) == []
        with pytest.raises(ValueError, match="bad file descriptor"):
            send_all([-1], frame)
        with pytest.raises(TypeError):
            send_all(5, frame)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            send_all(["3"], frame)  # type: ignore[list-item]
    finally:
        for s in (ok1, peer1, ok2, peer2, gone, full, peer_full):
            s.close()


SendEach = Callable[[Sequence[int], Sequence[bytes]], list[tuple[int, int]]]
send_each: SendEach | None
try:
    from oddsfeed.fanout._send import send_each
except ImportError:  # pragma: no cover - built by `pip install` where a compiler is
    send_each = None
EACH = [pytest.param(send_each, id="c", marks=needs_c),
        pytest.param(writer_py.send_each, id="python")]


@pytest.mark.parametrize("send_each", EACH)
def test_send_each_sends_every_socket_its_own_frame(send_each: SendEach) -> None:
    """Each socket gets its own frame; the result lists only the exceptions (a peer that is
    gone, a full buffer, a closed descriptor), and mismatched lengths are refused."""
    ok1, peer1 = socket.socketpair()
    ok2, peer2 = socket.socketpair()
    gone, peer_gone = socket.socketpair()
    peer_gone.close()
    full, peer_full = socket.socketpair()
    full.setblocking(False)
    with pytest.raises(BlockingIOError):
        while True:
            full.send(b"x" * 4096)
    dead = socket.socket()
    bad_fd = dead.fileno()
    dead.close()
    frames = [b"\x82\x03one", b"\x82\x04gone", b"\x82\x04full", b"\x82\x03two",
              b"\x82\x03bad"]
    try:
        res = send_each([ok1.fileno(), gone.fileno(), full.fileno(), ok2.fileno(), bad_fd],
                        frames)
        assert peer1.recv(100) == frames[0]
        assert peer2.recv(100) == frames[3]
        got = dict(res)
        assert sorted(got) == [1, 2, 4]
        assert got[1] == -errno.EPIPE
        assert got[2] == -errno.EAGAIN or 0 <= got[2] < len(frames[2])
        assert got[4] == -errno.EBADF
        assert send_each([], []) == []
        with pytest.raises(ValueError, match="1 fds but 2 frames"):
            send_each([ok1.fileno()], frames[:2])
        with pytest.raises(ValueError, match="bad file descriptor"):
            send_each([-1], frames[:1])
    finally:
        for s in (ok1, peer1, ok2, peer2, gone, full, peer_full):
            s.close()


@pytest.mark.parametrize("send_all", IMPLEMENTATIONS)
async def test_a_short_write_sends_its_rest_through_the_transport_in_order(
        monkeypatch: pytest.MonkeyPatch, send_all: SendAll) -> None:
    """A frame bigger than what the socket takes: send_all writes the start, the transport
    gets the rest, and the next frame (the transport now holding bytes) queues behind it:
    the peer reads both frames whole and in order."""
    seen: list[list[tuple[int, int]]] = []
    real = send_all

    def spy(fds: list[int], frame: bytes) -> list[tuple[int, int]]:
        res = real(fds, frame)
        seen.append(res)
        return res

    monkeypatch.setattr(writer_module, "send_all", spy)
    async with direct_client(small_buffers=True) as (fan, client, reader):
        big = wire.reply("pong", None, pad="x" * 40_000)
        small = wire.reply("pong", None, pad="y")
        fan.send_many([client], big, "m1", None, time.monotonic())  # type: ignore[arg-type]
        ((index, took),) = seen[0]  # the socket took the start of the frame only
        assert index == 0
        assert 0 < took < len(frame_of(big, wire.MSGPACK))
        assert client.transport.get_write_buffer_size() > 0  # the rest waits there
        fan.send_many([client], small, "m1", None, time.monotonic())  # type: ignore[arg-type]
        assert len(seen) == 1  # the second frame queued behind the rest, not sent directly
        want = frame_of(big, wire.MSGPACK) + frame_of(small, wire.MSGPACK)
        got = await asyncio.get_running_loop().run_in_executor(
            None, recv_exactly, reader, len(want))
        assert got == want
        assert client.received == 2


async def test_a_failing_send_all_falls_back_to_the_transport(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """If the send_all call itself fails (out of memory), every frame of that call goes through
    its transport instead: the delivery is not lost."""

    def broken(fds: list[int], frame: bytes) -> list[tuple[int, int]]:
        raise MemoryError

    monkeypatch.setattr(writer_module, "send_all", broken)
    async with direct_client() as (fan, client, reader):
        out = wire.reply("pong", None, pad="z")
        fan.send_many([client], out, "m1", None, time.monotonic())  # type: ignore[arg-type]
        want = frame_of(out, wire.MSGPACK)
        got = await asyncio.get_running_loop().run_in_executor(
            None, recv_exactly, reader, len(want))
        assert got == want


async def _deliveries(w: Worker, encoding: str) -> tuple[list[int], list[int], int]:
    """Subscribe a client to m1 and apply 50 updates: the versions it got, the versions
    the store wrote (the history) and the client's fd on the server."""
    await w.store.apply(create("m1"))
    c = await Mirror.open(ws_url(w), encoding)
    try:
        await c.request({"op": "subscribe", "markets": ["m1"]})
        first = c.markets["m1"]
        for i in range(50):
            await w.store.apply(price("m1", 20000 + i))
        final = await w.store.get("m1")
        assert final is not None
        await wait_until(lambda: c.markets["m1"].version == final.version, 10, "every delta")
        assert c.markets["m1"] == final
        hist = await w.store.history("m1", first.epoch, first.version)
        assert hist is not None
        written = [d.version for d in hist[1]]
        (server_side,) = w.hub.clients
        return c.book.delta_versions("m1"), written, server_side.fd
    finally:
        await c.close()


@pytest.mark.parametrize("send_all", IMPLEMENTATIONS)
@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_deliveries_are_the_same_through_either_send_all(
        start_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch, encoding: str,
        send_all: SendAll) -> None:
    """Every version arrives once and in order through each implementation of the
    many-socket send (the client's socket is known to the server)."""
    monkeypatch.setattr(writer_module, "send_all", send_all)
    async with start_worker() as w:
        got, written, fd = await _deliveries(w, encoding)
    assert len(written) == 50
    assert got == written
    assert fd >= 0


def test_no_direct_writes_to_a_tls_transport() -> None:
    """A TLS transport's socket carries ciphertext: its client never gets a raw fd."""
    tls_sock, plain_sock = socket.socket(), socket.socket()
    tls: Any = SimpleNamespace(transport=SimpleNamespace(get_extra_info={
        "socket": tls_sock, "sslcontext": object()}.get))
    plain: Any = SimpleNamespace(transport=SimpleNamespace(get_extra_info={
        "socket": plain_sock}.get))
    try:
        assert plain_fd(tls) == -1
        assert plain_fd(plain) == plain_sock.fileno()
    finally:
        tls_sock.close()
        plain_sock.close()


def test_the_hub_hands_a_delta_to_the_sink_in_chunks() -> None:
    """300 subscribers holding a delta's base: the sink gets them SEND_CHUNK at a time
    (the first written before the last are looked at), each exactly once, all moved."""
    from oddsfeed.fanout import hub as hub_module

    calls: list[list[Client]] = []

    class Recorder:
        def send_many(self, clients: list[Client], out: wire.Outgoing, market: str,
                      delta: Any, now: float) -> None:
            calls.append(list(clients))

        def advance(self, market: str, out: wire.Outgoing, delta: Any, checked: bool) -> int:
            return 0  # no market runs here

    hub = Hub(store=SimpleNamespace(bus=lambda *a, **k: None))  # type: ignore[arg-type]
    hub.sink = Recorder()  # type: ignore[assignment]
    clients = [Client(i + 1, wire.JSON, Outbox(encoding=wire.JSON, high_water_bytes=1 << 20,
                                               max_bytes=4 << 20, max_lag_s=30.0))
               for i in range(300)]
    for c in clients:
        hub.add_client(c)
        hub.index.add_market(c, "m1")
        c.pos["m1"] = ("ep", 4)
    hub.markets["m1"] = ("ep", 4)
    hub.on_bus_message("m", "m1", msgpack.packb(
        {"op": "delta", "m": "m1", "e": "ep", "v": 5, "base": 4, "ts": 1,
         "sel": {"h": {"price": 20000}}}))
    chunk = hub_module.SEND_CHUNK
    assert [len(c) for c in calls] == [chunk, chunk, 300 - 2 * chunk]
    assert sorted(c.id for part in calls for c in part) == list(range(1, 301))
    assert all(c.pos["m1"] == ("ep", 5) for c in clients)
