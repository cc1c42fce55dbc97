"""The WebSocket fan-out tier against real servers and real clients (protocol.md section 2)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from oddsfeed.book import Changed
from oddsfeed.model import MarketUpdate
from oddsfeed.worker import Worker

from .conftest import make_settings, ws_url
from .helpers import Mirror, wait_for


def create(mid: str, event: str = "e1", **sels: int) -> MarketUpdate:
    selections = {k: {"name": k.title(), "price": v} for k, v in (sels or {"h": 25000}).items()}
    return MarketUpdate(market=mid, fields={"event": event, "sport": "soccer", "name": mid},
                        selections=selections, create=True)


def price(mid: str, p: int, sid: str = "h") -> MarketUpdate:
    return MarketUpdate(market=mid, selections={sid: {"price": p}})


async def test_hello_subscribe_and_live(worker: Worker) -> None:
    """hello comes first; subscribe replies then snapshots; deltas follow; unsubscribe stops."""
    await worker.store.apply(create("m1"))
    c = await Mirror.open(ws_url(worker))
    await wait_for(lambda: c.ops("hello"))
    assert c.messages[0]["op"] == "hello"
    assert c.messages[0]["encoding"] == "json"
    await c.send({"op": "subscribe", "id": 1, "markets": ["m1", "nope"]})
    await wait_for(lambda: "m1" in c.markets)
    sub = c.ops("subscribed")[0]
    assert sub == {"op": "subscribed", "id": 1, "markets": ["m1"], "events": [],
                   "missing": ["nope"]}
    await worker.store.apply(price("m1", 26000))
    await wait_for(lambda: c.markets["m1"].version == 2)
    await c.send({"op": "unsubscribe", "id": 2, "markets": ["m1", "zz"]})
    await wait_for(lambda: c.ops("unsubscribed"))
    assert c.ops("unsubscribed")[0] == {"op": "unsubscribed", "id": 2, "markets": ["m1"],
                                        "events": []}
    await worker.store.apply(price("m1", 27000))
    await c.send({"op": "ping", "id": 3})
    await wait_for(lambda: c.ops("pong"))
    assert not [m for m in c.ops("delta") if m["v"] == 3]
    await c.close()


async def test_events_missing_and_gone(worker: Worker) -> None:
    """Event subscribers get markets created later; a missing market arrives on creation;
    a delete sends gone and keeps the subscription."""
    await worker.store.apply(create("a1", "ev"))
    c = await Mirror.open(ws_url(worker), "msgpack")
    await c.send({"op": "subscribe", "events": ["ev"], "markets": ["later"]})
    await wait_for(lambda: "a1" in c.markets)
    await worker.store.apply(create("a2", "ev"))
    await worker.store.apply(create("later", "other"))
    await wait_for(lambda: "a2" in c.markets and "later" in c.markets)
    await worker.store.delete("later")
    await wait_for(lambda: "later" not in c.markets)
    assert c.ops("gone") == [{"op": "gone", "m": "later"}]
    await worker.store.apply(create("later", "other"))
    await wait_for(lambda: "later" in c.markets)
    await c.close()


async def test_convergence_many_clients(worker: Worker) -> None:
    """200 clients on random subsets of 50 markets, mixed encodings, 5,000 random updates:
    every client ends holding exactly the store's state of each subscribed market."""
    rng = random.Random(3)
    mids = [f"m{i}" for i in range(50)]
    for m in mids:
        await worker.store.apply(create(m, f"e{int(m[1:]) % 5}", h=20000, a=30000))
    clients = []
    for i in range(200):
        c = await Mirror.open(ws_url(worker), "json" if i % 2 else "msgpack")
        want = rng.sample(mids, rng.randint(1, 8))
        await c.send({"op": "subscribe", "markets": want})
        clients.append((c, want))
    await wait_for(lambda: all(len(c.markets) == len(w) for c, w in clients), 30, "snapshots")

    async def writer(n: int) -> None:
        r = random.Random(n)
        for _ in range(1000):
            m = r.choice(mids)
            roll = r.random()
            if roll < 0.05:
                up = MarketUpdate(market=m, fields={"status": r.choice(["open", "suspended"])})
            elif roll < 0.1:
                up = MarketUpdate(market=m, selections={"x": {"status": "removed"}} if
                                  r.random() < 0.5 else {"x": {"name": "X", "price": 40000}})
            else:
                up = price(m, r.randint(11000, 99000), r.choice(["h", "a"]))
            await worker.store.apply(up)

    await asyncio.gather(*(writer(n) for n in range(5)))
    truth = await worker.store.get_many(mids)

    def converged() -> bool:
        return all(c.markets.get(m) == truth[m] for c, want in clients for m in want)

    await wait_for(converged, 60, "convergence")
    await asyncio.gather(*(c.close() for c, _ in clients))


async def test_resume_from_position(worker: Worker) -> None:
    """A client that comes back with `from` gets exactly the missing versions, then live."""
    await worker.store.apply(create("m1"))
    c = await Mirror.open(ws_url(worker))
    await c.send({"op": "subscribe", "markets": ["m1"]})
    await wait_for(lambda: "m1" in c.markets)
    held = c.markets["m1"]
    await c.close()
    for i in range(100):
        await worker.store.apply(price("m1", 20000 + i + 1))
    c2 = await Mirror.open(ws_url(worker))
    c2.markets["m1"] = held
    await c2.send({"op": "subscribe", "markets": ["m1"],
                   "from": {"m1": {"epoch": held.epoch, "version": held.version}}})
    await wait_for(lambda: c2.markets["m1"].version == 101)
    assert [d["v"] for d in c2.ops("delta")] == list(range(2, 102))
    assert not c2.ops("snapshot")
    await worker.store.apply(price("m1", 50000))
    await wait_for(lambda: c2.markets["m1"].version == 102)
    c3 = await Mirror.open(ws_url(worker))
    await c3.send({"op": "subscribe", "markets": ["m1"],
                   "from": {"m1": {"epoch": "another", "version": 5}}})
    await wait_for(lambda: c3.ops("snapshot"))
    assert not c3.ops("delta")
    await asyncio.gather(c2.close(), c3.close())


async def test_bad_frames_keep_the_connection(worker: Worker) -> None:
    """Garbage, bad JSON, unknown ops and bad ids get bad_request and the connection stays;
    a 2 MiB frame closes with 1009 while other clients keep being served."""
    async with connect(ws_url(worker), subprotocols=["oddsfeed.v1.json"]) as ws:
        await ws.recv()
        for bad in [b"\x00\xff", "{not json", '{"op":"fly"}', '{"op":"subscribe","markets":[""]}',
                    '{"op":"subscribe","markets":"m1"}', '[1]', '{"op":"ping","id":{}}']:
            await ws.send(bad)
            reply = await ws.recv()
            assert '"bad_request"' in str(reply), reply
        await ws.send('{"op":"ping","id":9}')
        assert '"pong"' in str(await ws.recv())
    other = await Mirror.open(ws_url(worker))
    async with connect(ws_url(worker), max_size=None) as ws:
        await ws.recv()
        with pytest.raises(ConnectionClosed):
            await ws.send("x" * (2 * 1024 * 1024))
            await ws.recv()
        assert ws.close_code == 1009
    await other.send({"op": "ping", "id": 1})
    await wait_for(lambda: other.ops("pong"))
    await other.close()


async def test_auth(valkey_url: str, redis_client: Any, mint: Any) -> None:
    """Without anonymous reading a token is required; scopes gate subscribe and validate;
    an expiring token closes the connection with 4001."""
    settings = make_settings(valkey_url, **{"auth.anonymous_read": False})
    async with Worker(settings, valkey_url, reuse_port=False) as w:
        for url in (ws_url(w), ws_url(w, "not-a-token")):
            with pytest.raises(InvalidStatus) as exc:
                async with connect(url):
                    pass
            assert exc.value.response.status_code == 401
        c = await Mirror.open(ws_url(w, mint("bets:validate")))
        await c.send({"op": "subscribe", "id": 1, "markets": ["m1"]})
        await wait_for(lambda: c.ops("error"))
        assert c.ops("error")[0]["code"] == "forbidden"
        await c.close()
        r = await Mirror.open(ws_url(w, mint("odds:read")))
        await r.send({"op": "validate", "id": 2, "legs": [
            {"market": "m1", "selection": "h", "price": 2.5}]})
        await wait_for(lambda: r.ops("error"))
        assert r.ops("error")[0]["code"] == "forbidden"
        await r.close()
        short = await Mirror.open(ws_url(w, mint("odds:read", ttl_s=1)))
        await wait_for(lambda: short.closed is not None, 5, "expiry close")
        assert short.ws.close_code == 4001


async def test_validate_over_socket(worker: Worker, mint: Any) -> None:
    """The validate op accepts the current price and reports price_changed for an old one."""
    await worker.store.apply(create("m1"))
    out = await worker.store.apply(price("m1", 26000))
    assert isinstance(out, Changed)
    c = await Mirror.open(ws_url(worker, mint("odds:read", "bets:validate")))
    await c.send({"op": "validate", "id": 1, "legs": [
        {"market": "m1", "selection": "h", "price": 2.6}]})
    await c.send({"op": "validate", "id": 2, "legs": [
        {"market": "m1", "selection": "h", "price": "3/2"}]})
    await wait_for(lambda: len(c.ops("validation")) == 2)
    by_id = {v["id"]: v for v in c.ops("validation")}
    assert by_id[1]["ok"] is True
    assert by_id[2]["legs"][0]["reason"] == "price_changed"
    assert by_id[2]["legs"][0]["price"] == 2.6
    await c.close()


async def test_slow_consumer_is_cut_and_fast_one_unharmed(valkey_url: str,
                                                          redis_client: Any) -> None:
    """A client that stops reading is conflated then closed (4008 or dropped) with bounded
    outbox, while a fast client on the same worker gets every version."""
    settings = make_settings(valkey_url, **{"fanout.high_water_bytes": 262_144,
                                            "fanout.max_outbox_bytes": 1_048_576,
                                            "fanout.max_lag_s": 1.0})
    async with Worker(settings, valkey_url, reuse_port=False) as w:
        await w.store.apply(create("m1", h=20000, a=30000))
        reader, writer = await asyncio.open_connection("127.0.0.1", w.ws_port)
        writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        # subscribe (a masked client text frame), then never read again
        import os

        payload = b'{"op":"subscribe","markets":["m1"]}'
        mask = os.urandom(4)
        writer.write(bytes([0x81, 0x80 | len(payload)]) + mask +
                     bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        await writer.drain()
        fast = await Mirror.open(ws_url(w))
        await fast.send({"op": "subscribe", "markets": ["m1"]})
        await wait_for(lambda: "m1" in fast.markets)
        await wait_for(lambda: len(w.hub.clients) == 2)
        slow = min(w.hub.clients, key=lambda c: c.id)
        peak = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        i = 0
        while not slow.closed and loop.time() < deadline:
            i += 1
            await w.store.apply(MarketUpdate(market="m1", fields={"name": f"{'x' * 200}{i}"},
                                             selections={f"s{k}": {"name": f"{'y' * 200}{i}",
                                                                   "price": 20001 + i}
                                                         for k in range(30)}))
            peak = max(peak, slow.outbox.queued_bytes)
        assert slow.closed, "the slow client was never cut off"
        assert peak <= 1_048_576 + 16_384  # the hard limit plus one message
        truth = await w.store.get("m1")
        await wait_for(lambda: fast.markets["m1"] == truth, 20, "fast client converges")
        versions = [d["v"] for d in fast.ops("delta")]
        assert versions == list(range(2, truth.version + 1)), "fast client missed versions"
        await fast.close()
        writer.close()


async def test_burst_of_concurrent_subscribes(worker: Worker) -> None:
    """300 clients subscribing at the same moment all get their snapshots (reads queue for a
    store connection instead of failing)."""
    for i in range(20):
        await worker.store.apply(create(f"b{i}"))
    clients = await asyncio.gather(*(Mirror.open(ws_url(worker), "msgpack") for _ in range(300)))
    await asyncio.gather(*(c.send({"op": "subscribe", "markets": [f"b{j}" for j in range(20)]})
                           for c in clients))
    await wait_for(lambda: all(len(c.markets) == 20 for c in clients), 30, "snapshots")
    assert not [c for c in clients if c.ops("error")]
    await asyncio.gather(*(c.close() for c in clients))
