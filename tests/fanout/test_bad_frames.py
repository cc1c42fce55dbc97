"""Bad client frames: a clear bad_request error and the connection stays open; an oversized
frame closes with 1009; limits answer with their documented codes; nobody else is disturbed
(protocol.md section 2, errors and limits)."""

from __future__ import annotations

import random
from typing import Any

import msgpack
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from oddsfeed.core import wire
from oddsfeed.worker import Worker

from .builders import create, price
from .conftest import WorkerFactory, ws_url
from .mirror import SUBPROTOCOL, Mirror, wait_until

ID_129 = "x" * 129

BAD_JSON: list[str | bytes] = [
    b"\x00\xff\xfe garbage",
    "{not json",
    "",
    "[1, 2]",
    '"subscribe"',
    "null",
    '{"id": 1}',
    '{"op": "fly", "id": 2}',
    '{"op": 7}',
    '{"op": "ping", "id": {}}',
    '{"op": "ping", "id": 1.5}',
    '{"op": "ping", "extra": true}',
    '{"op": "subscribe", "markets": "m1"}',
    '{"op": "subscribe", "markets": [1]}',
    '{"op": "subscribe", "markets": [""]}',
    f'{{"op": "subscribe", "markets": ["m1", "{ID_129}"]}}',
    '{"op": "subscribe", "markets": ["a b"]}',
    '{"op": "subscribe", "markets": ["caf\\u00e9"]}',
    '{"op": "subscribe", "events": [null]}',
    '{"op": "subscribe", "markets": ["m1"], "from": []}',
    '{"op": "subscribe", "markets": ["m1"], "from": {"m1": {"epoch": 1, "version": 1}}}',
    '{"op": "subscribe", "markets": ["m1"], "from": {"m1": {"epoch": "e", "version": "1"}}}',
    '{"op": "subscribe", "markets": ["m1"], "from": {"m1": {"epoch": "e", "version": -1}}}',
    '{"op": "unsubscribe", "markets": {"m1": 1}}',
    '{"op": "validate", "legs": "m1"}',
    '{"op": "validate", "legs": []}',
    '{"op": "validate", "legs": [{"market": "m1", "selection": "h"}]}',
    '{"op": "validate", "legs": [{"market": "m1", "selection": "h", "price": "abc"}]}',
    '{"op": "validate", "legs": [{"market": "m1", "selection": "h", "price": 0.5}]}',
    '{"op": "validate", "legs": [{"market": "m1", "selection": "h", "price": 2}], '
    '"accept": "maybe"}',
]

BAD_MSGPACK: list[bytes] = [
    b"\xc1",  # never used in msgpack
    b"\x82\xa2op",  # truncated map
    msgpack.packb([1, 2]),
    msgpack.packb({"op": "fly"}),
    msgpack.packb({"op": "subscribe", "markets": [b"m1"]}),
    msgpack.packb({"op": "subscribe", "markets": ["m1"], "from": {"m1": [1, 2]}}),
    msgpack.packb({"op": "ping", "id": [1]}),
    msgpack.packb({"op": "ping"}) + b"\x00",  # extra data
]


async def expect_bad_request(ws: ClientConnection, encoding: str, frame: str | bytes) -> None:
    """Send one bad frame: the reply is error bad_request, and a ping still gets its pong."""
    await ws.send(frame)
    reply = wire.decode_message(await ws.recv(), encoding)
    assert reply["op"] == "error", (frame, reply)
    assert reply["code"] == "bad_request", (frame, reply)
    assert isinstance(reply["message"], str)
    assert reply["message"]
    await ws.send(wire.encode({"op": "ping", "id": "p"}, encoding),
                  text=encoding == "json")
    pong = wire.decode_message(await ws.recv(), encoding)
    assert pong["op"] == "pong", (frame, pong)
    assert pong["id"] == "p"


async def test_bad_json_frames_get_bad_request_and_keep_the_connection(worker: Worker) -> None:
    """Garbage, invalid JSON, unknown ops, wrong types and ids outside the charset each get
    error bad_request (echoing a valid id) and the connection stays open."""
    await worker.store.apply(create("m1"))
    async with connect(ws_url(worker), subprotocols=[Subprotocol(SUBPROTOCOL["json"])]) as ws:
        assert wire.decode_message(await ws.recv(), "json")["op"] == "hello"
        for frame in BAD_JSON:
            await expect_bad_request(ws, "json", frame)
        await ws.send('{"op": "fly", "id": 42}')
        assert wire.decode_message(await ws.recv(), "json")["id"] == 42
        # a rejected subscribe changed nothing
        client = next(iter(worker.hub.clients))
        assert worker.hub.index.count(client) == 0


async def test_bad_msgpack_frames_get_bad_request(worker: Worker) -> None:
    """Invalid msgpack, non-map values, wrong types and trailing bytes on a msgpack
    connection each get error bad_request and the connection stays open."""
    async with connect(ws_url(worker),
                       subprotocols=[Subprotocol(SUBPROTOCOL["msgpack"])]) as ws:
        assert wire.decode_message(await ws.recv(), "msgpack")["op"] == "hello"
        for frame in BAD_MSGPACK:
            await expect_bad_request(ws, "msgpack", frame)


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_random_bytes_are_rejected_not_fatal(worker: Worker, encoding: str) -> None:
    """Any random binary frame is answered with bad_request (never a close or another
    reply), and the connection keeps working."""
    rng = random.Random(7)
    async with connect(ws_url(worker), subprotocols=[Subprotocol(SUBPROTOCOL[encoding])]) as ws:
        await ws.recv()
        for _ in range(150):
            frame = bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
            await ws.send(frame)
            reply = wire.decode_message(await ws.recv(), encoding)
            assert reply["op"] == "error", (frame, reply)
            assert reply["code"] == "bad_request", (frame, reply)
        await expect_bad_request(ws, encoding, b"\xc1")


async def test_oversized_frame_closes_1009_and_others_are_served(worker: Worker) -> None:
    """A 2 MiB frame closes that connection with 1009; another client keeps getting its
    deltas."""
    await worker.store.apply(create("m1"))
    other = await Mirror.open(ws_url(worker), "msgpack")
    await other.request({"op": "subscribe", "markets": ["m1"]})
    await wait_until(lambda: "m1" in other.markets)
    async with connect(ws_url(worker), max_size=None) as ws:
        await ws.recv()
        with pytest.raises(ConnectionClosed):
            await ws.send("x" * (2 * 1024 * 1024))
            while True:
                await ws.recv()
        assert ws.close_code == 1009
    await worker.store.apply(price("m1", 50_000))
    await wait_until(lambda: other.markets["m1"].version == 2, what="other client served")
    other.check_clean()
    await other.close()


@pytest.mark.parametrize("window_ms", [0, 3000])
async def test_rate_limit_then_policy_close(start_worker: WorkerFactory, window_ms: int) -> None:
    """Past the inbound message rate a client gets rate_limited errors, and if it keeps on,
    close 1008; what was queued for it (a long batching window) goes out before the close."""
    async with start_worker(**{"fanout.rate_limit_per_s": 1.0, "fanout.rate_limit_burst": 3,
                               "fanout.rate_limit_strikes": 3,
                               "fanout.batch_window_ms": window_ms,
                               "fanout.batch_min_busy": 0}) as w:
        c = await Mirror.open(ws_url(w))
        for i in range(10):
            try:
                await c.send({"op": "ping", "id": i})
            except ConnectionClosed:
                break
        await wait_until(lambda: c.done.is_set(), what="policy close")
        assert c.close_code == 1008
        assert len(c.ops("pong")) == 3
        assert [e["code"] for e in c.ops("error")] == ["rate_limited"] * 2


async def test_subscription_limit(start_worker: WorkerFactory) -> None:
    """A subscribe that would pass the per-connection subscription limit gets error
    limit_exceeded and subscribes nothing."""
    async with start_worker(**{"fanout.max_subscriptions": 3}) as w:
        c = await Mirror.open(ws_url(w))
        ok = await c.request({"op": "subscribe", "markets": ["a", "b"]})
        assert ok["op"] == "subscribed"
        over = await c.request({"op": "subscribe", "markets": ["c"], "events": ["e"]})
        assert over["op"] == "error"
        assert over["code"] == "limit_exceeded"
        client = next(iter(w.hub.clients))
        assert w.hub.index.markets_of(client) == {"a", "b"}
        assert await c.request({"op": "ping"}) == {"op": "pong", "id": over["id"] + 1,
                                                   "ts": c.ops("pong")[0]["ts"]}
        await c.close()


async def test_connection_limit_closes_1013(start_worker: WorkerFactory) -> None:
    """Past max_connections a new connection is closed with 1013 while the others stay."""
    async with start_worker(**{"fanout.max_connections": 2}) as w:
        a = await Mirror.open(ws_url(w))
        b = await Mirror.open(ws_url(w))
        c = await Mirror.open(ws_url(w))
        await wait_until(lambda: c.done.is_set(), what="third connection closed")
        assert c.close_code == 1013
        assert (await a.request({"op": "ping"}))["op"] == "pong"
        await a.close()
        await b.close()


async def test_per_ip_connection_rate(start_worker: WorkerFactory) -> None:
    """Connections from one address past the per-IP rate are refused with HTTP 429."""
    async with start_worker(**{"fanout.ip_connect_per_s": 2.0}) as w:
        statuses: list[Any] = []
        for _ in range(6):
            try:
                async with connect(ws_url(w)):
                    statuses.append(101)
            except InvalidStatus as exc:
                statuses.append(exc.response.status_code)
        assert statuses[0] == 101
        assert 429 in statuses
