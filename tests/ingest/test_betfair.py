"""The stream adapter (Betfair Exchange Stream API shape): ladders and definitions, images,
deltas, clocks, heartbeats, provider lag, and reconnection against local fake providers over
TCP and WebSocket."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from oddsfeed.core.errors import ProviderDataError
from oddsfeed.core.model import MarketUpdate
from oddsfeed.store import Store
from oddsfeed_ingest.betfair import StreamState
from oddsfeed_ingest.betfair_stream import run_stream
from oddsfeed_ingest.runner import FeedRunner

from .conftest import until

DEF: dict[str, Any] = {
    "status": "OPEN", "inPlay": False, "betDelay": 0, "eventId": "30", "eventTypeId": "1",
    "marketType": "MATCH_ODDS", "name": "Match Odds",
    "runners": [{"id": 11, "status": "ACTIVE", "name": "Home"},
                {"id": 12, "status": "ACTIVE", "name": "Away"}]}
IMAGE = {"op": "mcm", "id": 1, "initialClk": "i1", "clk": "c1", "pt": 1000, "ct": "SUB_IMAGE",
         "mc": [{"id": "1.1", "img": True, "marketDefinition": DEF,
                 "rc": [{"id": 11, "batb": [[0, 2.5, 10], [1, 2.4, 5]]},
                        {"id": 12, "atb": [[1.6, 3], [1.7, 8]]}]}]}


def _one(state: StreamState, msg: dict[str, Any]) -> MarketUpdate:
    out = state.on_message(msg)
    assert not out.errors, out.errors
    [u] = out.updates
    return u


def test_image_best_back_and_ladder_deletes() -> None:
    """batb level 0 gives the price, else the best of atb; a size 0 entry deletes a level;
    the definition maps status, in-play, bet delay and kind."""
    st = StreamState()
    u = _one(st, IMAGE)
    assert u.market == "1.1"
    assert u.replace
    assert u.create
    assert u.selections["11"]["price"] == 25000
    assert u.selections["12"]["price"] == 17000
    assert u.fields["kind"] == "1x2"
    assert u.fields["status"] == "open"
    u = _one(st, {"op": "mcm", "clk": "c2", "pt": 1100, "mc": [{"id": "1.1", "rc": [
        {"id": 11, "batb": [[0, 2.5, 0]]}, {"id": 12, "atb": [[1.7, 0]]}]}]})
    assert not u.replace
    assert u.selections["11"]["price"] == 24000  # level 0 gone: level 1 is the best now
    assert u.selections["12"]["price"] == 16000
    assert st.clk == "c2"
    assert st.initial_clk == "i1"


def test_definition_status_removed_runner_and_settlement() -> None:
    """SUSPENDED, inPlay and betDelay map across; REMOVED removes the selection; CLOSED with
    winners settles."""
    st = StreamState()
    _one(st, IMAGE)
    d = {**DEF, "status": "SUSPENDED", "inPlay": True, "betDelay": 5,
         "runners": [DEF["runners"][0], {"id": 12, "status": "REMOVED"}]}
    u = _one(st, {"op": "mcm", "pt": 1200, "mc": [{"id": "1.1", "marketDefinition": d}]})
    assert u.fields["status"] == "suspended"
    assert u.fields["in_play"] is True
    assert u.fields["bet_delay_ms"] == 5000
    assert u.selections["12"] == {"status": "removed"}
    closed = {**DEF, "status": "CLOSED", "runners": [{"id": 11, "status": "WINNER"},
                                                     {"id": 12, "status": "LOSER"}]}
    u = _one(st, {"op": "mcm", "pt": 1300, "mc": [{"id": "1.1", "marketDefinition": closed}]})
    assert u.fields["status"] == "settled"
    u = _one(st, {"op": "mcm", "pt": 1400, "mc": [{"id": "1.1", "marketDefinition": {
        **DEF, "status": "CLOSED"}}]})
    assert u.fields["status"] == "closed"


def test_image_replaces_the_ladders() -> None:
    """A new image forgets the old ladders: a runner with no price in it is left out."""
    st = StreamState()
    _one(st, IMAGE)
    u = _one(st, {"op": "mcm", "pt": 2000, "mc": [{"id": "1.1", "img": True,
                                                    "rc": [{"id": 11, "atb": [[4.0, 1]]}]}]})
    assert u.replace
    assert set(u.selections) == {"11"}
    assert u.selections["11"]["price"] == 40000


def test_messages_in_one_millisecond_keep_their_order() -> None:
    """Several messages with the same pt get increasing seqs, so none is dropped."""
    st = StreamState()
    seqs: list[int | None] = [_one(st, IMAGE).seq]
    for price in (2.6, 2.7):
        seqs.append(_one(st, {"op": "mcm", "pt": 1000, "mc": [{"id": "1.1", "rc": [
            {"id": 11, "batb": [[0, price, 1]]}]}]}).seq)
    seqs.append(_one(st, {"op": "mcm", "pt": 1001, "mc": [{"id": "1.1"}]}).seq)
    assert None not in seqs
    assert seqs == sorted(s or 0 for s in seqs)
    assert len(set(seqs)) == 4


def test_heartbeat_lag_and_a_bad_market_change() -> None:
    """A heartbeat moves the clock and carries no update; status 503 flags provider lag; a
    bad market change is reported while the good one beside it still produces an update."""
    st = StreamState()
    _one(st, IMAGE)
    hb = st.on_message({"op": "mcm", "clk": "c9", "pt": 1500, "ct": "HEARTBEAT"})
    assert hb.heartbeat
    assert not hb.updates
    assert st.clk == "c9"
    lag = st.on_message({"op": "mcm", "pt": 1600, "status": 503, "mc": []})
    assert lag.lagging
    assert st.lag_reports == 1
    assert not lag.errors
    out = st.on_message({"op": "mcm", "pt": 1700, "mc": [
        {"id": "1.1", "rc": [{"id": 11, "batb": [[0, -3, 1]]}]},
        {"id": "1.1", "rc": [{"id": 11, "batb": [[0, 3.5, 1]]}]}]})
    assert len(out.errors) == 1
    assert isinstance(out.errors[0], ProviderDataError)
    assert [u.selections["11"]["price"] for u in out.updates] == [35000]
    sub = st.subscription({"marketIds": ["1.1"]})
    assert sub["initialClk"] == "i1"
    assert sub["clk"] == "c9"


class Provider:
    """A scripted stream provider: ``script[n]`` runs for connection n (then it goes silent
    until the test ends)."""

    def __init__(self, script: list[Callable[[Callable[[dict[str, Any]], None]],
                                             None]]) -> None:
        self.script = script
        self.subscriptions: list[dict[str, Any]] = []
        self.done = asyncio.Event()

    async def tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sub = json.loads(await reader.readline())
        self.subscriptions.append(sub)
        n = len(self.subscriptions)
        if n <= len(self.script):
            self.script[n - 1](lambda m: writer.write(json.dumps(m).encode() + b"\r\n"))
            await writer.drain()
        await self.done.wait()  # then silent: the client must notice by itself
        writer.close()

    async def ws(self, ws: ServerConnection) -> None:
        sub = json.loads(await ws.recv())
        self.subscriptions.append(sub)
        n = len(self.subscriptions)
        sent: list[str] = []
        if n <= len(self.script):
            self.script[n - 1](lambda m: sent.append(json.dumps(m)))
        for text in sent:
            await ws.send(text)
        await self.done.wait()


async def _stream(address: str, store: Store, state: StreamState, stop: asyncio.Event,
                  ) -> tuple[FeedRunner, asyncio.Task[int]]:
    feed = FeedRunner(store, "stream:1")

    async def on_updates(ups: list[MarketUpdate]) -> None:
        for u in ups:
            await feed.submit(u)

    task = asyncio.create_task(run_stream(address, state, on_updates, feed.bad, stop=stop,
                                          on_alive=feed.alive, min_backoff_s=0.01,
                                          rng=random.Random(0)))
    return feed, task


async def _market(store: Store, mid: str, pred: Callable[[Any], bool]) -> Any:
    async def ok() -> bool:
        m = await store.get(mid)
        return m is not None and pred(m)

    await until(ok, what=f"market {mid}")
    return await store.get(mid)


async def test_tcp_image_deltas_heartbeat_loss_and_resume(store: Store) -> None:
    """Over TCP: image and deltas apply; a link silent past 3 heartbeats is dropped; the
    client re-subscribes with its last initialClk and clk and the resumed deltas apply."""

    def first(send: Callable[[dict[str, Any]], None]) -> None:
        send({"op": "connection", "connectionId": "x"})
        send(IMAGE)
        send({"op": "mcm", "clk": "c2", "pt": 1100,
              "mc": [{"id": "1.1", "rc": [{"id": 11, "batb": [[0, 2.5, 0]]}]}]})
        send({"op": "mcm", "clk": "c3", "pt": 1200, "ct": "HEARTBEAT", "status": 503})
        send("not an object")  # type: ignore[arg-type]

    def second(send: Callable[[dict[str, Any]], None]) -> None:
        send({"op": "mcm", "clk": "c4", "pt": 1300, "ct": "RESUB_DELTA", "mc": [{
            "id": "1.1", "marketDefinition": {
                **DEF, "status": "SUSPENDED", "inPlay": True, "betDelay": 5,
                "runners": [DEF["runners"][0], {"id": 12, "status": "REMOVED"}]}}]})

    provider = Provider([first, second])
    server = await asyncio.start_server(provider.tcp, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    state = StreamState(heartbeat_ms=100)  # silent after 0.3 s
    feed, task = await _stream(f"127.0.0.1:{port}", store, state, stop)
    try:
        m = await _market(store, "1.1", lambda m: m.status == "suspended")
    finally:
        stop.set()
        provider.done.set()
        connects = await asyncio.wait_for(task, 5)
        server.close()
    assert connects >= 2
    assert "clk" not in provider.subscriptions[0]
    assert provider.subscriptions[1]["initialClk"] == "i1"
    assert provider.subscriptions[1]["clk"] == "c3"
    assert m.in_play
    assert m.bet_delay_ms == 5000
    assert set(m.selections) == {"11"}
    assert m.selections["11"].price == 24000
    assert feed.counts["bad"] == 1
    assert state.lag_reports == 1


async def test_websocket_transport(store: Store) -> None:
    """The same stream over WebSocket: subscription sent, image applied."""

    def first(send: Callable[[dict[str, Any]], None]) -> None:
        send(IMAGE)

    provider = Provider([first])
    async with serve(provider.ws, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        stop = asyncio.Event()
        _, task = await _stream(f"ws://127.0.0.1:{port}/stream", store, StreamState(), stop)
        try:
            m = await _market(store, "1.1", lambda m: len(m.selections) == 2)
        finally:
            stop.set()
            provider.done.set()
            await asyncio.wait_for(task, 5)
    assert provider.subscriptions[0]["op"] == "marketSubscription"
    assert m.selections["11"].price == 25000


async def test_reconnects_after_refused_connections(store: Store) -> None:
    """With no provider listening the client keeps retrying with backoff until stopped."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    stop = asyncio.Event()
    _, task = await _stream(f"127.0.0.1:{port}", store, StreamState(), stop)
    await asyncio.sleep(0)  # let it try at least once
    stop.set()
    assert await asyncio.wait_for(task, 5) == 0

