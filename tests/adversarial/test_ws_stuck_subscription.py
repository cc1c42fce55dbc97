"""A subscription never gets stuck (protocol.md section 2, catch-up): a position no store
holds gets a snapshot, a subscribe while the store is down gets an error and then the
market once the store is back, and items held during a catch-up count against the
connection's outbox limit."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import redis.asyncio
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from oddsfeed.core import wire
from oddsfeed.core.model import MarketUpdate
from tests.fanout.builders import create, price
from tests.fanout.mirror import SUBPROTOCOL

from .ws_support import (
    Mirror,
    errors_logged,
    restartable,
    store_digest,
    wait_until,
    worker_on,
    ws_url,
)


@pytest.mark.parametrize(("encoding", "version"), [
    ("json", 10**30), ("msgpack", 2**64 - 1), ("json", 2**53), ("msgpack", 2**53 + 1)])
async def test_from_version_past_any_store_gets_snapshot(
        valkey_url: str, redis_client: redis.asyncio.Redis, caplog: pytest.LogCaptureFixture,
        encoding: str, version: int) -> None:
    """A ``from`` version no store can reach (up to 10^30) is a position ahead of the store:
    the market gets a snapshot and then every live delta; nothing is held, nothing logged
    at ERROR, nothing written to the store."""
    async with worker_on(valkey_url) as w:
        await w.store.apply(create("m1"))
        before = await store_digest(valkey_url)
        c = await Mirror.open(ws_url(w), encoding)
        epoch = (await w.store.get("m1")).epoch  # type: ignore[union-attr]
        reply = await c.request({"op": "subscribe", "markets": ["m1"],
                                 "from": {"m1": {"epoch": epoch, "version": version}}})
        assert reply["op"] == "subscribed"
        assert reply["markets"] == ["m1"]
        await wait_until(lambda: "m1" in c.markets, what="snapshot")
        assert c.ops("snapshot")
        assert await store_digest(valkey_url) == before
        await w.store.apply(price("m1", 31_000))
        truth = await w.store.get("m1")
        await wait_until(lambda: c.markets.get("m1") == truth, what="live delta")
        assert all(not client.pending for client in w.hub.clients)
        c.check_clean()
        await c.close()
    assert not errors_logged(caplog)


async def test_subscribe_while_store_down_then_snapshot(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A subscribe while the store is killed gets ``error`` ``internal`` at once (never a
    silent hold) with the subscription kept; when the store is back the client gets the
    market's snapshot and then live deltas, and the hub holds and owes nothing."""
    with restartable(tmp_path / "valkey") as store:
        async with worker_on(store.url) as w:
            await w.store.apply(create("m1"))
            c = await Mirror.open(ws_url(w), "msgpack")
            store.kill()
            await wait_until(lambda: c.ops("status"), what="status interrupted")
            reply = await c.request({"op": "subscribe", "markets": ["m1"]})
            assert reply["op"] == "error"
            assert reply["code"] == "internal"
            client = next(iter(w.hub.clients))
            assert not client.pending
            assert "m1" in w.hub.index.markets_of(client)
            store.start()
            await wait_until(lambda: "m1" in c.markets, 20, "snapshot after recovery")
            assert c.markets["m1"] == await w.store.get("m1")
            await w.store.apply(price("m1", 40_000))
            truth = await w.store.get("m1")
            await wait_until(lambda: c.markets.get("m1") == truth, what="live after recovery")
            await wait_until(lambda: not w.hub.owed, what="nothing owed")
            assert [m["feed"] for m in c.ops("status")] == ["interrupted", "restored"]
            assert not client.pending
            c.check_clean()
            await c.close()
    assert not errors_logged(caplog)


def wide(mid: str, n: int) -> MarketUpdate:
    """A market with ``n`` selections (a large snapshot)."""
    return MarketUpdate(market=mid, fields={"event": "big", "sport": "soccer", "name": mid},
                        selections={f"s{i}": {"name": f"Selection {i} " + "x" * 40,
                                              "price": 20_000 + i} for i in range(n)},
                        create=True)


async def test_held_items_count_against_outbox_limit(valkey_url: str,
                                                     redis_client: redis.asyncio.Redis) -> None:
    """A client that stops reading while its catch-up waits on its outbox has the live
    deltas held for its pending markets counted against max_outbox_bytes: it is closed as
    a slow consumer (4008) within seconds, long before max_lag_s."""
    overrides = {"fanout.high_water_bytes": 8192, "fanout.max_outbox_bytes": 65_536,
                 "fanout.max_lag_s": 120.0}
    async with worker_on(valkey_url, **overrides) as w:
        mids = [f"w{i}" for i in range(200)]
        await w.store.apply_many([wide(mid, 200) for mid in mids])
        # a small receive buffer, and max_queue=1: the client stops reading after one message
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", w.ws_port))
        ws = await connect(ws_url(w), sock=sock, max_size=2**24, max_queue=1,
                           subprotocols=[Subprotocol(SUBPROTOCOL["json"])])
        await ws.send(wire.encode({"op": "subscribe", "markets": mids}, "json"))

        def blocked() -> bool:
            return any(len(c.pending) >= 20 and c.outbox.queued_bytes > 8192
                       for c in w.hub.clients)

        await wait_until(blocked, 20, "catch-up waiting on a full outbox")
        client = next(iter(w.hub.clients))
        pending = sorted(client.pending)
        i = 0
        while not client.closed:
            i += 1
            await w.store.apply(price(pending[i % len(pending)], 20_000 + i % 9000, "s1"))
            assert i < 5_000, "never closed"
        assert client.held_bytes + client.outbox.queued_bytes > 65_536
        proto = client.proto
        await wait_until(lambda: proto.close_sent is not None, what="close frame queued")
        assert proto.close_sent.code == 4008
        ws.transport.abort()  # the queued megabytes need not be read
