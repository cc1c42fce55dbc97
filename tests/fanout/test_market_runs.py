"""Market runs (oddsfeed.fanout.runs): while a batching window is open a market's deltas are
queued once per update, and at the window's end each subscriber gets its slice as one frame,
every version in order; a subscriber joining or leaving mid-window, an urgent delta, a
backed-up socket and the run's bound each keep that order."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

from websockets.protocol import State

from oddsfeed.core import wire
from oddsfeed.core.book import Delta
from oddsfeed.core.session import Outbox
from oddsfeed.fanout import runs as runs_module
from oddsfeed.fanout import server as server_module
from oddsfeed.fanout.hub import Client, Hub
from oddsfeed.settings import load_settings

from .direct import recv_exactly

Peer = socket.socket


class _Quiet(asyncio.Protocol):
    pass


@contextlib.asynccontextmanager
async def fanout(n: int, sndbuf: int = 0) -> AsyncIterator[
        tuple[server_module.FanoutServer, list[Client], list[Peer]]]:
    """A batching FanoutServer (hot window widened) and ``n`` JSON clients on real loopback
    TCP transports, each written to just now (so the policy queues), and their peers."""
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    settings = load_settings(None, {}, {})
    hub = Hub(store=SimpleNamespace(bus=lambda *a, **k: None))  # type: ignore[arg-type]
    fan = server_module.FanoutServer(hub, fanout=settings.fanout, auth=None)  # type: ignore[arg-type]
    fan.policy.set_batching(True)
    fan.policy.set_hot_window(fan.policy.max_window_s)
    clients: list[Client] = []
    peers: list[Peer] = []
    transports: list[Any] = []
    try:
        for i in range(n):
            peer = socket.create_connection(listener.getsockname())
            peer.settimeout(5)
            conn, _ = listener.accept()
            if sndbuf:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
                peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sndbuf)
            conn.setblocking(False)
            transport, _ = await loop.connect_accepted_socket(_Quiet, conn)
            transports.append(transport)
            client = Client(i + 1, wire.JSON, Outbox(
                encoding=wire.JSON, high_water_bytes=1 << 20, max_bytes=4 << 20,
                max_lag_s=30.0))
            client.sink = fan
            client.transport = transport
            client.proto = SimpleNamespace(state=State.OPEN)
            client.conn = SimpleNamespace(transport=transport, protocol=client.proto)
            client.fd = conn.fileno()
            client.last_sent = time.monotonic()
            client.rate = 1000  # hot: its deltas wait for the hot window
            client.pos["m1"] = ("e", 1)  # subscribed to one market
            clients.append(client)
            peers.append(peer)
        yield fan, clients, peers
    finally:
        for batch in (fan._batch, fan._hot_batch):
            if batch.handle is not None:
                batch.handle.cancel()
        listener.close()
        for transport in transports:
            transport.close()
        for peer in peers:
            peer.close()


def delta(v: int, market: str = "m1", **fields: Any) -> tuple[wire.Outgoing, Delta]:
    d = Delta(market=market, epoch="e", version=v, base=v - 1, ts=0, fields=fields)
    return wire.delta(d), d


def send(fan: server_module.FanoutServer, clients: list[Client], v: int,
         market: str = "m1", **fields: Any) -> wire.Outgoing:
    """Hand delta ``v`` to ``clients`` as the hub does (positions already checked)."""
    out, d = delta(v, market, **fields)
    fan.send_many(list(clients), out, market, d, time.monotonic())
    return out


def window_end(fan: server_module.FanoutServer) -> None:
    for batch in (fan._hot_batch, fan._batch):
        if batch.handle is not None:
            batch.handle.cancel()
        fan._flush(batch)


def read_frame(peer: Peer) -> bytes:
    head = recv_exactly(peer, 2)
    n = head[1] & 0x7F
    if n == 126:
        ext = recv_exactly(peer, 2)
        head += ext
        n = int.from_bytes(ext, "big")
    elif n == 127:
        ext = recv_exactly(peer, 8)
        head += ext
        n = int.from_bytes(ext, "big")
    return head + recv_exactly(peer, n)


def items(frame: bytes) -> list[dict[str, Any]]:
    n = frame[1] & 0x7F
    body = frame[2 + {126: 2, 127: 8}.get(n, 0):]
    msg = json.loads(body)
    return list(msg["items"]) if msg["op"] == "batch" else [msg]


def versions(frame: bytes) -> list[int]:
    return [m["v"] for m in items(frame)]


def nothing_to_read(peer: Peer) -> bool:
    peer.setblocking(False)
    try:
        return not peer.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    finally:
        peer.setblocking(True)
        peer.settimeout(5)


def assert_left_with_2_3_while_the_other_got_2_3_4(peers: list[Peer]) -> None:
    """The first peer's frame holds deltas 2-3 then its ``unsubscribed`` reply, the
    second's deltas 2-4, and nothing else is left to read."""
    got = items(read_frame(peers[0]))
    assert [m.get("v") for m in got] == [2, 3, None]
    assert got[2]["op"] == "unsubscribed"
    assert versions(read_frame(peers[1])) == [2, 3, 4]
    assert all(nothing_to_read(p) for p in peers)


async def test_a_window_of_one_market_reaches_every_subscriber_as_one_shared_frame() -> None:
    """Three deltas of one market to three subscribers are queued once each (no outbox
    holds them) and arrive as one batch frame per subscriber, the same bytes, built once."""
    async with fanout(3) as (fan, clients, peers):
        for v in (2, 3, 4):
            send(fan, clients, v)
        run = fan._runs["m1"]
        assert len(run.messages) == 3
        assert all(c.run is run and not c.outbox for c in clients)
        window_end(fan)
        frames = [read_frame(p) for p in peers]
        assert versions(frames[0]) == [2, 3, 4]
        assert frames[0] == frames[1] == frames[2]
        assert not fan._runs
        assert all(c.run is None for c in clients)
        assert all(c.received == 3 for c in clients)
        assert all(nothing_to_read(p) for p in peers)


async def test_a_subscriber_joining_mid_window_gets_the_deltas_from_its_first_on() -> None:
    """A subscriber first handed the window's second delta takes the run from there: its
    frame carries versions 3-4, the others' 2-4."""
    async with fanout(3) as (fan, clients, peers):
        send(fan, clients[:2], 2)
        send(fan, clients, 3)
        send(fan, clients, 4)
        window_end(fan)
        assert versions(read_frame(peers[0])) == [2, 3, 4]
        assert versions(read_frame(peers[1])) == [2, 3, 4]
        assert versions(read_frame(peers[2])) == [3, 4]


async def test_a_subscriber_leaving_mid_window_keeps_its_order() -> None:
    """A reply pushed mid-window (an unsubscribe's) follows the run's deltas already handed
    to that subscriber, in one frame; the deltas after it reach only the others."""
    async with fanout(2) as (fan, clients, peers):
        leaver, stayer = clients
        send(fan, clients, 2)
        send(fan, clients, 3)
        leaver.push(wire.reply("unsubscribed", 7, markets=["m1"], events=[]))
        assert leaver.run is None
        assert len(leaver.outbox) == 3
        send(fan, [stayer], 4)
        window_end(fan)
        assert_left_with_2_3_while_the_other_got_2_3_4(peers)


async def test_a_subscriber_that_missed_a_delta_never_takes_a_later_one_from_the_run() -> None:
    """A member not handed delta 3 (the hub found it elsewhere) but handed 4 leaves the run
    with only 2: it gets 2 then 4 through its outbox, never 3."""
    async with fanout(2) as (fan, clients, peers):
        send(fan, clients, 2)
        send(fan, clients[1:], 3)
        send(fan, clients, 4)
        assert clients[0].run is None
        window_end(fan)
        assert versions(read_frame(peers[0])) == [2, 4]
        assert versions(read_frame(peers[1])) == [2, 3, 4]


async def test_an_urgent_delta_mid_window_leaves_at_once_after_the_run() -> None:
    """A suspension after two queued deltas is written at once, before the window ends,
    behind those deltas and in version order; the run is gone."""
    async with fanout(2) as (fan, clients, peers):
        send(fan, clients, 2)
        send(fan, clients, 3)
        send(fan, clients, 4, status="suspended")
        assert "m1" not in fan._runs
        for peer in peers:  # no window end: written by the suspension
            got: list[dict[str, Any]] = []
            while len(got) < 3:
                got += items(read_frame(peer))
            assert [m["v"] for m in got] == [2, 3, 4]
            assert got[2]["status"] == "suspended"


async def test_another_market_s_message_goes_after_the_run() -> None:
    """A client in a run of m1 handed a delta of m2 gets m1's queued delta first and both in
    one frame at the window's end (one frame per client, never two in one send)."""
    async with fanout(2) as (fan, clients, peers):
        send(fan, clients, 2)
        send(fan, clients[:1], 9, market="m2")
        window_end(fan)
        got = items(read_frame(peers[0]))
        assert [(m["m"], m["v"]) for m in got] == [("m1", 2), ("m2", 9)]
        assert versions(read_frame(peers[1])) == [2]
        assert all(nothing_to_read(p) for p in peers)


async def test_a_backed_up_socket_takes_its_slice_through_its_outbox() -> None:
    """At the window's end a member whose transport still holds bytes gets its slice through
    its outbox, after those bytes; a client whose writer task runs never joins a run."""
    async with fanout(2, sndbuf=4096) as (fan, clients, peers):
        slow, fast = clients
        blob = b"\x82\x7e" + (60000).to_bytes(2, "big") + b"x" * 60000
        slow.transport.write(blob)
        assert slow.transport.get_write_buffer_size() > 0
        send(fan, clients, 2)
        send(fan, clients, 3)
        window_end(fan)
        assert versions(read_frame(peers[1])) == [2, 3]
        loop = asyncio.get_running_loop()  # the loop drains the transport meanwhile
        assert await loop.run_in_executor(None, read_frame, peers[0]) == blob
        assert versions(await loop.run_in_executor(None, read_frame, peers[0])) == [2, 3]
        busy = asyncio.get_running_loop().create_future()
        slow.writer = busy  # type: ignore[assignment]
        send(fan, clients, 4)
        assert slow.run is None
        assert len(slow.outbox) == 1
        assert fast.run is not None
        slow.writer = None
        busy.cancel()


async def test_a_run_past_its_bound_is_written_at_once() -> None:
    """A run reaching RUN_ITEMS deltas is written at once, not held to the window's end; the
    next delta opens a new run."""
    async with fanout(1) as (fan, clients, peers):
        n = runs_module.RUN_ITEMS
        for v in range(2, n + 2):
            send(fan, clients, v)
        assert "m1" not in fan._runs
        assert versions(read_frame(peers[0])) == list(range(2, n + 2))
        send(fan, clients, n + 2)
        assert len(fan._runs["m1"].messages) == 1
        window_end(fan)
        assert versions(read_frame(peers[0])) == [n + 2]


async def test_a_closed_member_is_skipped() -> None:
    """A member closed mid-window is written nothing; the others get the run."""
    async with fanout(2) as (fan, clients, peers):
        send(fan, clients, 2)
        clients[0].closed = True
        fan._leave_batches(clients[0])
        window_end(fan)
        assert versions(read_frame(peers[1])) == [2]
        assert nothing_to_read(peers[0])


async def test_a_client_of_several_markets_keeps_its_outbox() -> None:
    """A client subscribed to two markets never joins a run: its deltas of both markets
    share one frame through its outbox, in the order handed."""
    async with fanout(2) as (fan, clients, peers):
        multi, single = clients
        multi.pos["m2"] = ("e", 8)
        send(fan, clients, 2)
        send(fan, [multi], 9, market="m2")
        send(fan, clients, 3)
        assert multi.run is None
        assert len(multi.outbox) == 3
        assert single.run is not None
        window_end(fan)
        got = items(read_frame(peers[0]))
        assert [(m["m"], m["v"]) for m in got] == [("m1", 2), ("m2", 9), ("m1", 3)]
        assert versions(read_frame(peers[1])) == [2, 3]


async def test_a_worker_that_stops_batching_writes_the_run_at_once() -> None:
    """When the worker stops batching mid-window, the market's next delta takes the run's
    queued deltas along at once, in order, without waiting for the window."""
    async with fanout(1) as (fan, clients, peers):
        send(fan, clients, 2)
        fan.policy.set_batching(False)
        send(fan, clients, 3)
        assert "m1" not in fan._runs
        got: list[int] = []
        while len(got) < 2:
            got += versions(read_frame(peers[0]))
        assert got == [2, 3]
