"""hello, subscribe and unsubscribe by market and event, missing markets, gone, heartbeats
and batching, against a real worker and real WebSocket clients (protocol.md section 2)."""

from __future__ import annotations

import asyncio
import time

import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from oddsfeed.core import wire
from oddsfeed.core.model import MarketUpdate
from oddsfeed.worker import Worker

from .builders import create, price
from .conftest import WorkerFactory, ws_url
from .mirror import Mirror, wait_until


@pytest.mark.parametrize(
    ("offered", "encoding"),
    [(["oddsfeed.v1.json"], "json"), (["oddsfeed.v1.msgpack"], "msgpack"),
     (["oddsfeed.v1.msgpack", "oddsfeed.v1.json"], "msgpack"),
     (["oddsfeed.v1.json", "oddsfeed.v1.msgpack"], "json"), ([], "json"), (["chat"], "json")])
async def test_hello_is_first_and_names_the_encoding(worker: Worker, offered: list[str],
                                                     encoding: str) -> None:
    """The first frame is hello in the encoding of the first known subprotocol offered
    (JSON when none is), carrying server, session and heartbeat_ms."""
    protocols = [Subprotocol(p) for p in offered] or None  # [] would send an empty header
    async with connect(ws_url(worker), subprotocols=protocols) as ws:
        frame = await ws.recv()
        assert isinstance(frame, str if encoding == "json" else bytes)
        hello = wire.decode_message(frame, encoding)
        assert hello["op"] == "hello"
        assert hello["encoding"] == encoding
        assert hello["server"].startswith("oddsfeed/")
        assert isinstance(hello["session"], str)
        assert hello["session"]
        assert hello["heartbeat_ms"] == worker.settings.fanout.heartbeat_ms
        expected = {"json": "oddsfeed.v1.json", "msgpack": "oddsfeed.v1.msgpack"}[encoding]
        assert ws.subprotocol == (expected if any(p.startswith("oddsfeed") for p in offered)
                                  else None)


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_subscribe_by_market_and_event(worker: Worker, encoding: str) -> None:
    """subscribe replies subscribed {markets, events, missing} before any snapshot, then one
    snapshot per market (named or of a named event), then live deltas."""
    store = worker.store
    await store.apply(create("m1", "e1"))
    await store.apply(create("m2", "e2"))
    await store.apply(create("m3", "e2"))
    await store.apply(create("m4", "e3"))
    c = await Mirror.open(ws_url(worker), encoding)
    reply = await c.request({"op": "subscribe", "markets": ["m1", "nope"], "events": ["e2"]})
    assert reply["op"] == "subscribed"
    assert sorted(reply["markets"]) == ["m1", "m2", "m3"]
    assert reply["events"] == ["e2"]
    assert reply["missing"] == ["nope"]
    await wait_until(lambda: set(c.markets) == {"m1", "m2", "m3"}, what="snapshots")
    ops = [m["op"] for m in c.messages]
    assert ops[0] == "hello"
    assert ops.index("subscribed") < min(i for i, op in enumerate(ops) if op == "snapshot")
    assert len(c.ops("snapshot")) == 3
    for mid in ("m1", "m2", "m3"):
        assert c.markets[mid] == await store.get(mid)
    for mid in ("m1", "m2", "m3", "m4"):
        await store.apply(price(mid, 40000))
    await wait_until(lambda: all(c.markets[m].version == 2 for m in ("m1", "m2", "m3")),
                     what="live deltas")
    for mid in ("m1", "m2", "m3"):
        assert c.markets[mid] == await store.get(mid)
    assert "m4" not in c.book.log
    c.check_clean()
    await c.close()


async def test_market_created_under_a_subscribed_event_arrives(worker: Worker) -> None:
    """A market created later under a subscribed event (even one that had no markets)
    arrives as a snapshot and then gets live deltas."""
    await worker.store.apply(create("a1", "ev"))
    c = await Mirror.open(ws_url(worker), "msgpack")
    reply = await c.request({"op": "subscribe", "events": ["ev", "empty"]})
    assert reply["markets"] == ["a1"]
    assert reply["events"] == ["ev", "empty"]
    assert reply["missing"] == []
    await wait_until(lambda: "a1" in c.markets)
    await worker.store.apply(create("a2", "ev"))
    await worker.store.apply(create("b1", "empty"))
    await worker.store.apply(create("z1", "other"))
    await wait_until(lambda: {"a2", "b1"} <= set(c.markets), what="new markets of events")
    for i in range(5):
        await worker.store.apply(price("a2", 30000 + i))
    truth = await worker.store.get("a2")
    await wait_until(lambda: c.markets["a2"] == truth, what="a2 live")
    assert c.book.delta_versions("a2") == [2, 3, 4, 5, 6]
    assert "z1" not in c.markets
    c.check_clean()
    await c.close()


async def test_missing_market_arrives_when_created(worker: Worker) -> None:
    """A subscription to a market that does not exist is reported missing, kept, and
    answered with a snapshot when the market is created."""
    c = await Mirror.open(ws_url(worker))
    reply = await c.request({"op": "subscribe", "markets": ["later"]})
    assert reply == {"op": "subscribed", "id": reply["id"], "markets": [], "events": [],
                     "missing": ["later"]}
    await worker.store.apply(create("later", "ev9"))
    await wait_until(lambda: "later" in c.markets, what="snapshot on creation")
    assert c.markets["later"].version == 1
    await worker.store.apply(price("later", 33000))
    await wait_until(lambda: c.markets["later"].version == 2)
    assert c.markets["later"] == await worker.store.get("later")
    c.check_clean()
    await c.close()


async def test_delete_sends_gone_and_keeps_the_subscription(worker: Worker) -> None:
    """Deleting a subscribed market sends gone; the subscription stays, so re-creating it
    sends a snapshot with a new epoch."""
    await worker.store.apply(create("m1"))
    c = await Mirror.open(ws_url(worker))
    await c.request({"op": "subscribe", "markets": ["m1"]})
    await wait_until(lambda: "m1" in c.markets)
    old_epoch = c.markets["m1"].epoch
    assert await worker.store.delete("m1")
    await wait_until(lambda: "m1" not in c.markets, what="gone")
    assert c.ops("gone") == [{"op": "gone", "m": "m1"}]
    await worker.store.apply(create("m1"))
    await wait_until(lambda: "m1" in c.markets, what="snapshot after re-creation")
    assert c.markets["m1"].epoch != old_epoch
    assert c.markets["m1"] == await worker.store.get("m1")
    c.check_clean()
    await c.close()


async def test_unsubscribe_replies_what_it_removed_and_stops_deltas(worker: Worker) -> None:
    """unsubscribe replies with the ids it removed (not the ones never subscribed) and no
    delta of a removed market, or of a removed event's markets, follows."""
    for mid, ev in (("m1", "e1"), ("m2", "e1"), ("k1", "e2"), ("k2", "e2")):
        await worker.store.apply(create(mid, ev))
    c = await Mirror.open(ws_url(worker))
    await c.request({"op": "subscribe", "markets": ["m1", "m2"], "events": ["e2"]})
    await wait_until(lambda: len(c.markets) == 4)
    reply = await c.request({"op": "unsubscribe", "markets": ["m2", "never"],
                             "events": ["e2", "e9"]})
    assert reply["op"] == "unsubscribed"
    assert reply["markets"] == ["m2"]
    assert reply["events"] == ["e2"]
    mark = len(c.messages)
    for mid in ("m2", "k1", "k2"):
        await worker.store.apply(price(mid, 41000))
    await worker.store.apply(create("k3", "e2"))
    await worker.store.apply(price("m1", 41000))  # still subscribed: a barrier
    await wait_until(lambda: c.markets["m1"].version == 2)
    late = [m for m in c.messages[mark:] if m.get("m") in {"m2", "k1", "k2", "k3"}
            or m.get("op") == "snapshot"]
    assert late == []
    assert worker.hub.index.markets_of(next(iter(worker.hub.clients))) == {"m1"}
    again = await c.request({"op": "unsubscribe", "markets": ["m2"]})
    assert again["markets"] == []
    c.check_clean()
    await c.close()


async def test_last_subscriber_leaving_drops_the_channel(worker: Worker) -> None:
    """The node keeps a market's channel only while a local client wants it."""
    await worker.store.apply(create("m1"))
    a = await Mirror.open(ws_url(worker))
    b = await Mirror.open(ws_url(worker))
    await a.request({"op": "subscribe", "markets": ["m1"]})
    await b.request({"op": "subscribe", "markets": ["m1"]})
    await wait_until(lambda: "m1" in a.markets and "m1" in b.markets)
    assert "m1" in set(worker.hub.index.markets())
    await a.request({"op": "unsubscribe", "markets": ["m1"]})
    assert "m1" in set(worker.hub.index.markets())
    await b.close()
    await wait_until(lambda: "m1" not in set(worker.hub.index.markets()), what="channel dropped")
    await a.close()


async def test_heartbeat_when_idle(start_worker: WorkerFactory) -> None:
    """An idle connection gets heartbeat {ts} about every heartbeat_ms."""
    async with start_worker(**{"fanout.heartbeat_ms": 200}) as w:
        c = await Mirror.open(ws_url(w))
        await wait_until(lambda: len(c.ops("heartbeat")) >= 2, 5, "heartbeats")
        assert isinstance(c.ops("heartbeat")[0]["ts"], int)
        await c.close()


async def test_the_ticker_reaches_every_client_in_chunks(
        start_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ticker visits its slice a few clients at a time with loop turns in between
    (VISIT_CHUNK): with chunks of 2, every one of 7 idle clients still gets heartbeats."""
    from oddsfeed.fanout import server as server_module

    monkeypatch.setattr(server_module, "VISIT_CHUNK", 2)
    async with start_worker(**{"fanout.heartbeat_ms": 200}) as w:
        clients = [await Mirror.open(ws_url(w)) for _ in range(7)]
        await wait_until(lambda: all(len(c.ops("heartbeat")) >= 2 for c in clients), 5,
                         "heartbeats for every client")
        for c in clients:
            await c.close()


async def test_bursts_are_batched_in_order(start_worker: WorkerFactory) -> None:
    """With a batching window, a burst of deltas is packed into batch frames that keep every
    version in order; a suspension still arrives."""
    async with start_worker(**{"fanout.batch_window_ms": 25,
                                 "fanout.batch_min_busy": 0}) as w:
        await w.store.apply(create("m1"))
        c = await Mirror.open(ws_url(w), "msgpack")
        await c.request({"op": "subscribe", "markets": ["m1"]})
        await wait_until(lambda: "m1" in c.markets)
        for i in range(60):
            await w.store.apply(price("m1", 20000 + i))
        await w.store.apply(MarketUpdate(market="m1", fields={"status": "suspended"}))
        truth = await w.store.get("m1")
        assert truth is not None
        await wait_until(lambda: c.markets["m1"] == truth, what="burst delivered")
        assert c.book.delta_versions("m1") == list(range(2, truth.version + 1))
        assert c.markets["m1"].status == "suspended"
        assert c.batch_sizes
        assert max(c.batch_sizes) > 1
        c.check_clean()
        await c.close()


async def test_a_window_end_sends_each_connection_its_own_batch(
        start_worker: WorkerFactory) -> None:
    """At a batching window's end every waiting connection gets its own frame in one
    many-socket call: eight connections on eight markets, both encodings, each receive
    exactly their market's versions, in order, packed into batch frames."""
    async with start_worker(**{"fanout.batch_window_ms": 25,
                               "fanout.batch_min_busy": 0}) as w:
        names = [f"w{i}" for i in range(8)]
        for m in names:
            await w.store.apply(create(m))
        clients = [await Mirror.open(ws_url(w), "msgpack" if i % 2 else "json")
                   for i in range(len(names))]
        for c, m in zip(clients, names, strict=True):
            await c.request({"op": "subscribe", "markets": [m]})
        await wait_until(lambda: all(m in c.markets for c, m in zip(clients, names,
                                                                      strict=True)))
        for i in range(20):
            await w.store.apply_many([price(m, 20000 + i) for m in names])
        truths = [await w.store.get(m) for m in names]
        for c, m, truth in zip(clients, names, truths, strict=True):
            assert truth is not None
            await wait_until(lambda c=c, m=m, truth=truth: c.markets.get(m) == truth,
                             what=f"{m} delivered")
            assert c.book.delta_versions(m) == list(range(2, truth.version + 1))
            assert set(c.markets) == {m}
            assert max(c.batch_sizes) > 1
            c.check_clean()
        for c in clients:
            await c.close()


async def test_burst_of_concurrent_subscribes(worker: Worker) -> None:
    """300 clients subscribing at the same moment all get their snapshots (reads wait for a
    store connection instead of failing)."""
    for i in range(20):
        await worker.store.apply(create(f"b{i}"))
    clients = await asyncio.gather(*(Mirror.open(ws_url(worker), "msgpack") for _ in range(300)))
    replies = await asyncio.gather(*(
        c.request({"op": "subscribe", "markets": [f"b{j}" for j in range(20)]}, timeout=30)
        for c in clients))
    assert {r["op"] for r in replies} == {"subscribed"}
    await wait_until(lambda: all(len(c.markets) == 20 for c in clients), 30, "snapshots")
    for c in clients:
        c.check_clean()
    await asyncio.gather(*(c.close() for c in clients))


async def test_suspension_skips_the_batching_window(start_worker: WorkerFactory) -> None:
    """A suspension goes out at once, taking what was queued before it along, even with a
    long batching window."""
    async with start_worker(**{"fanout.batch_window_ms": 3000,
                               "fanout.batch_min_busy": 0}) as w:
        await w.store.apply(create("m1"))
        c = await Mirror.open(ws_url(w))
        await c.request({"op": "subscribe", "markets": ["m1"]})
        await wait_until(lambda: "m1" in c.markets, 5)
        await w.store.apply(price("m1", 33_000))
        await w.store.apply(MarketUpdate(market="m1", fields={"status": "suspended"}))
        # well inside the 3 s window
        await wait_until(lambda: c.markets["m1"].status == "suspended", 1.5, "suspension")
        assert c.book.delta_versions("m1") == [2, 3]
        c.check_clean()
        await c.close()


async def test_quiet_connection_is_written_through(start_worker: WorkerFactory,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A message to a connection that has been quiet (no frame for QUIET_WINDOWS windows)
    goes out at once instead of waiting for the batching window; a burst right after it is
    still coalesced into batch frames."""
    from oddsfeed.fanout import batching

    # quiet after 0.3 s with a 3 s window (the default is 10 windows)
    monkeypatch.setattr(batching, "QUIET_WINDOWS", 0.1)
    async with start_worker(**{"fanout.batch_window_ms": 3000,
                               "fanout.batch_min_busy": 0}) as w:
        await w.store.apply(create("m1"))
        c = await Mirror.open(ws_url(w), "msgpack")
        await c.request({"op": "subscribe", "markets": ["m1"]})
        await wait_until(lambda: "m1" in c.markets, 5)
        await asyncio.sleep(0.6)  # become quiet
        await w.store.apply(price("m1", 33_000))
        # well inside the 3 s window
        await wait_until(lambda: c.markets["m1"].version == 2, 1.5, "written through")
        for i in range(10):
            await w.store.apply(price("m1", 20_000 + i))
        truth = await w.store.get("m1")
        assert truth is not None
        await wait_until(lambda: c.markets["m1"] == truth, 10, "burst delivered")
        assert max(c.batch_sizes) > 1  # the burst after it shared a frame
        c.check_clean()
        await c.close()


async def test_busy_worker_widens_the_window_of_hot_connections_only(
        start_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that is busy (here its CPU clock is made to run as fast as the wall clock)
    widens the batching window of hot connections (at least one message per hot window) to
    batch_window_max_ms: their messages share frames. A connection that gets few messages
    is still written through at once."""
    from oddsfeed.fanout import server as server_module

    monkeypatch.setattr(server_module, "cpu_time", time.monotonic)  # 100% busy
    async with start_worker(**{"fanout.batch_window_ms": 2,
                               "fanout.batch_window_max_ms": 3000}) as w:
        await w.store.apply(create("hot"))
        await w.store.apply(create("cold"))
        hot = await Mirror.open(ws_url(w), "msgpack")
        cold = await Mirror.open(ws_url(w), "msgpack")
        await hot.request({"op": "subscribe", "markets": ["hot"]})
        await cold.request({"op": "subscribe", "markets": ["cold"]})
        await wait_until(lambda: "hot" in hot.markets and "cold" in cold.markets, 5)
        # ~2.5 s of a message every 100 ms for one, nothing for the other: every connection
        # is visited at least twice meanwhile (once a second), the busy share passes BUSY_HIGH
        for i in range(25):
            await w.store.apply(price("hot", 20_000 + i))
            await asyncio.sleep(0.1)
        assert w.fanout.policy.busy > 0.8
        frames_before = hot.frames
        for i in range(10):  # 50 ms apart: without the wider window, 10 frames
            await w.store.apply(price("hot", 30_000 + i))
            await asyncio.sleep(0.05)
        await w.store.apply(price("cold", 33_000))
        # the cold connection is written through, well inside the 3 s window
        await wait_until(lambda: cold.markets["cold"].version == 2, 1.5, "written through")
        truth = await w.store.get("hot")
        assert truth is not None
        await wait_until(lambda: hot.markets["hot"] == truth, 10, "hot connection's updates")
        # the hot connection got its last 10 messages in at most 2 frames
        assert hot.frames - frames_before <= 2
        assert hot.book.delta_versions("hot") == list(range(2, truth.version + 1))
        hot.check_clean()
        cold.check_clean()
        await asyncio.gather(hot.close(), cold.close())


async def test_an_idle_worker_does_not_batch(start_worker: WorkerFactory) -> None:
    """Below fanout.batch_min_busy (default 40% of a core) every message is written at once,
    however long the batching window: a burst arrives well inside a 3 s window, one frame
    per message. (A busy worker batches: the tests above set batch_min_busy 0, and the
    busy-worker test fakes a full CPU.)"""
    async with start_worker(**{"fanout.batch_window_ms": 3000}) as w:
        await w.store.apply(create("m1"))
        c = await Mirror.open(ws_url(w), "msgpack")
        await c.request({"op": "subscribe", "markets": ["m1"]})
        await wait_until(lambda: "m1" in c.markets, 5)
        await wait_until(lambda: not w.fanout.policy.batching, 5, "an idle worker")
        for i in range(10):
            await w.store.apply(price("m1", 20_000 + i))
        truth = await w.store.get("m1")
        assert truth is not None
        await wait_until(lambda: c.markets["m1"] == truth, 1.5, "burst written at once")
        assert c.batch_sizes == []
        assert c.book.delta_versions("m1") == list(range(2, truth.version + 1))
        c.check_clean()
        await c.close()
