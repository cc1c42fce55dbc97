"""Feed adapters against local fake providers and a real store (issue 6)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from ingest.betfair import StreamState, run_stream
from ingest.normalised import normalize_message
from ingest.oddsapi import Poller, normalize_event
from ingest.push import build_push_app
from ingest.replay import Recorder, replay
from ingest.runner import FeedRunner
from ingest.simulator import SimulatorConfig, updates_for
from oddsfeed.auth import Authenticator
from oddsfeed.book import Changed, Created
from oddsfeed.errors import ProviderDataError
from oddsfeed.settings import load_settings
from oddsfeed.store import OutOfOrder, Store

SECRET = "feeds-test-secret-0123456789abcdef"


@pytest.fixture
async def store(valkey_url: str, redis_client: Any) -> Any:
    s = await Store.connect(valkey_url)
    yield s
    await s.close()


def test_simulator_is_deterministic() -> None:
    """The same seed gives the same updates; another seed gives others; margins ~5%."""
    a = updates_for(SimulatorConfig(seed=4), 500)
    b = updates_for(SimulatorConfig(seed=4), 500)
    c = updates_for(SimulatorConfig(seed=5), 500)
    assert a == b
    assert a != c
    first = a[0]
    book = sum(10_000 / s["price"] for s in first.selections.values())
    assert 1.03 < book < 1.07
    kinds = {u.fields.get("status") for u in a} | {u.fields.get("in_play") for u in a}
    assert "suspended" in kinds
    assert True in kinds


async def test_simulator_through_the_store(store: Store) -> None:
    """Simulated updates apply cleanly: no rejections, markets created, versions move."""
    runner = FeedRunner(store, "sim:test")
    for u in updates_for(SimulatorConfig(seed=2, events=2), 300):
        await runner.submit(u)
    assert runner.counts.get("rejected", 0) == 0
    assert runner.counts["applied"] > 100
    assert len(await store.list_markets()) >= 6


async def test_duplicates_and_replays_are_harmless(store: Store, tmp_path: Any) -> None:
    """Replaying the same recording twice changes nothing the second time."""
    path = tmp_path / "rec.jsonl"
    with path.open("w") as fh:
        rec = Recorder(fh, clock=iter(range(10**6)).__next__)  # type: ignore[arg-type]
        for i in range(5):
            rec("push", {"market": "m1", "event": "e1", "sport": "soccer", "name": "n",
                         "selections": {"h": {"name": "H", "price": 2 + i / 10}}, "seq": i + 1})
    runner = FeedRunner(store, "replay:1")
    lines = path.read_text().splitlines()
    assert await replay(lines, runner.submit, runner.bad, speed=0) == 5
    v = (await store.get("m1")).version  # type: ignore[union-attr]
    await replay(lines, runner.submit, runner.bad, speed=0)
    assert (await store.get("m1")).version == v == 5  # type: ignore[union-attr]
    assert runner.counts["out_of_order"] == 5


async def test_replay_timing_and_speed() -> None:
    """Replay keeps the recorded gaps, divided by the speed (injected sleep, no clock)."""
    lines = [json.dumps({"t": t, "provider": "push", "msg": {
        "market": "m1", "selections": {"h": {"price": 2}}, "seq": t}}) for t in (0, 1000, 3000)]
    slept: list[float] = []

    async def fake_sleep(s: float) -> None:
        slept.append(s)

    async def submit(u: Any) -> None:
        pass

    await replay(lines, submit, lambda e: None, speed=1, sleep=fake_sleep)
    assert slept == [1.0, 2.0]
    slept.clear()
    await replay(lines, submit, lambda e: None, speed=10, sleep=fake_sleep)
    assert slept == pytest.approx([0.1, 0.2])


MALFORMED = [
    "{not json", '{"t": 1, "provider": "push"', "[1,2,3]", '"just a string"',
    '{"provider": "push", "msg": {}}', '{"t": "soon", "provider": "push", "msg": {}}',
    '{"t": 1, "provider": "push", "msg": []}',
    '{"t": 1, "provider": "push", "msg": {"selections": {}}}',
    '{"t": 1, "provider": "push", "msg": {"market": "bad id!", "selections": {}}}',
    '{"t": 1, "provider": "push", "msg": {"market": "m1", "selections": {"h": {"price": -2}}}}',
    '{"t": 1, "provider": "push", "msg": {"market": "m1", "selections": {"h": {"price": 0}}}}',
    '{"t": 1, "provider": "push", "msg": {"market": "m1", "selections": {"h": {"price": 1e9}}}}',
    '{"t": 1, "provider": "push", "msg": {"market": "m1", "selections": {"h": {"price": "abc"}}}}',
    '{"t": 1, "provider": "push", "msg": {"market": "m1", "selections": {"h": {"price": {"yen": 2}}}}}',
    '{"t": 1, "provider": "push", "msg": {"market": "m1", "selections": {"h": {"price": true}}}}',
    '{"t": 1, "provider": "push", "msg": {"market": "m1", "status": "paused"}}',
    '{"t": 1, "provider": "push", "msg": {"market": "m1", "in_play": "yes"}}',
    '{"t": 1, "provider": "push", "msg": {"market": "m1", "bogus": 1}}',
    '{"t": 1, "provider": "push", "msg": {"market": "m1", "selections": {"h": 5}}}',
    '{"t": 1, "provider": "push", "msg": {"market": "m1", "selections": {"h": {"odds": 2}}}}',
    '{"t": 1, "provider": "push", "msg": {"market": "m1", "bet_delay_ms": -5}}',
    '{"t": 1, "provider": "oddsapi", "msg": {"id": "x"}}',
    '{"t": 1, "provider": "betfair", "msg": {"op": "mcm", "mc": [{"id": "1"}]}}',
    '{"t": 1, "provider": "push", "msg": {"market": "m1", "selections": {"h": {"price": "5/0"}}}}',
]


async def test_malformed_messages_are_skipped_and_counted(store: Store) -> None:
    """24 kinds of malformed provider data are each skipped with a count while the valid
    messages between them still apply."""
    good = [json.dumps({"t": i, "provider": "push", "msg": {
        "market": "m1", "event": "e1", "sport": "soccer", "name": "n",
        "selections": {"h": {"name": "H", "price": 2 + i / 100}}, "seq": i + 1}})
        for i in range(len(MALFORMED) + 1)]
    lines = [x for pair in zip(good, [*MALFORMED, ""], strict=True) for x in pair]
    runner = FeedRunner(store, "replay:bad")
    await replay(lines, runner.submit, runner.bad, speed=0)
    assert runner.counts.get("bad", 0) == len(MALFORMED)
    m = await store.get("m1")
    assert m is not None
    assert m.version == len(good)


async def test_staleness_suspends_and_reopens(store: Store) -> None:
    """A market whose source goes silent past the limit is suspended, and the next good
    update from that source reopens it."""
    now = [1000.0]
    runner = FeedRunner(store, "feed:1", staleness_s=30, clock=lambda: now[0])
    msg = {"market": "m1", "event": "e1", "sport": "soccer", "name": "n",
           "selections": {"h": {"name": "H", "price": 2.0}}}
    await runner.submit(normalize_message({**msg, "seq": 1}))
    now[0] += 10
    assert await runner.check_staleness() == []
    now[0] += 25
    assert await runner.check_staleness() == ["m1"]
    assert (await store.get("m1")).status == "suspended"  # type: ignore[union-attr]
    await runner.submit(normalize_message({**msg, "seq": 2,
                                           "selections": {"h": {"price": 2.1}}}))
    m = await store.get("m1")
    assert m is not None
    assert m.status == "open"
    assert m.selections["h"].price == 21000


ODDS_EVENT = {
    "id": "ev123", "sport_key": "soccer_epl", "sport_title": "EPL",
    "commence_time": "2030-01-01T15:00:00Z", "home_team": "Arsenal", "away_team": "Chelsea",
    "bookmakers": [{"key": "book1", "title": "Book 1", "last_update": "2029-12-31T10:00:00Z",
                    "markets": [
                        {"key": "h2h", "last_update": "2029-12-31T10:00:00Z", "outcomes": [
                            {"name": "Arsenal", "price": 2.1}, {"name": "Chelsea", "price": 3.4},
                            {"name": "Draw", "price": 3.3}]},
                        {"key": "totals", "last_update": "2029-12-31T10:00:01Z", "outcomes": [
                            {"name": "Over", "price": 1.9, "point": 2.5},
                            {"name": "Under", "price": 1.95, "point": 2.5}]}]},
                   {"key": "other", "markets": []}],
}


def test_oddsapi_normalisation() -> None:
    """One market per (event, market key) of the bookmaker; outcome+point make selection ids;
    American odds convert; commence time turns in-play."""
    ups = normalize_event(ODDS_EVENT, bookmaker="book1", odds_format="decimal", now_ms=0)
    assert [u.market for u in ups] == ["ev123:h2h", "ev123:totals"]
    assert ups[0].selections["Arsenal"]["price"] == 21000
    assert not ups[0].fields["in_play"]
    assert set(ups[1].selections) == {"Over_2.5", "Under_2.5"}
    later = normalize_event(ODDS_EVENT, bookmaker="book1", odds_format="decimal",
                            now_ms=int(time.time() * 1000) + 10**12)
    assert later[0].fields["in_play"] is True
    am = json.loads(json.dumps(ODDS_EVENT))
    for o, price in zip(am["bookmakers"][0]["markets"][0]["outcomes"], (150, 240, -110),
                        strict=True):
        o["price"] = price
    del am["bookmakers"][0]["markets"][1]
    assert normalize_event(am, bookmaker="book1", odds_format="american",
                           now_ms=0)[0].selections["Arsenal"]["price"] == 25000
    with pytest.raises(ProviderDataError):
        normalize_event({"id": "x", "bookmakers": "no"}, bookmaker="b", odds_format="decimal",
                        now_ms=0)


async def test_http_poll_etag_429_and_timeout(store: Store) -> None:
    """The poller sends If-None-Match, handles 304, backs off on 429 (Retry-After) and on a
    timeout, and never overlaps polls."""
    state = {"n": 0, "inflight": 0, "max_inflight": 0, "etags": []}

    async def handler(request: web.Request) -> web.Response:
        state["n"] += 1
        state["inflight"] += 1
        state["max_inflight"] = max(state["max_inflight"], state["inflight"])
        try:
            state["etags"].append(request.headers.get("If-None-Match"))
            n = state["n"]
            if n == 2:
                return web.Response(status=304)
            if n == 3:
                return web.Response(status=429, headers={"Retry-After": "7"})
            if n == 4:
                await asyncio.sleep(1.0)  # longer than the client timeout
            return web.json_response([ODDS_EVENT], headers={"ETag": '"v1"'})
        finally:
            state["inflight"] -= 1

    app = web.Application()
    app.router.add_get("/odds", handler)
    runner_ = web.AppRunner(app)
    await runner_.setup()
    site = web.TCPSite(runner_, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    feed = FeedRunner(store, "http-poll:1")
    waits: list[float] = []

    async def on_events(events: list[Any]) -> None:
        for ev in events:
            for u in normalize_event(ev, bookmaker="book1", odds_format="decimal", now_ms=0):
                await feed.submit(u)

    poller = Poller(f"http://127.0.0.1:{port}/odds", on_events, interval_s=0.01, timeout_s=0.3)
    async with aiohttp.ClientSession() as session:
        for _ in range(5):
            waits.append(await poller.poll_once(session))
    await runner_.cleanup()
    assert state["etags"][:2] == [None, '"v1"']
    assert poller.not_modified == 1
    assert poller.errors == 2
    assert waits[2] >= 7  # Retry-After honoured
    assert waits[3] > 0.01  # backoff after the timeout
    assert state["max_inflight"] <= 2  # only the abandoned, timed-out request overlaps
    m = await store.get("ev123:h2h")
    assert m is not None
    assert m.version == 1


async def test_stream_image_deltas_resume_and_heartbeat(store: Store) -> None:
    """Images replace markets, deltas update ladders, a silent link reconnects and the
    client re-subscribes with its last clocks."""
    subs: list[dict[str, Any]] = []
    conns = {"n": 0}

    async def provider(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns["n"] += 1
        subs.append(json.loads(await reader.readline()))
        send = lambda m: writer.write(json.dumps(m).encode() + b"\n")  # noqa: E731
        if conns["n"] == 1:
            send({"op": "mcm", "initialClk": "i1", "clk": "c1", "pt": 1000, "ct": "SUB_IMAGE",
                  "heartbeatMs": 100,
                  "mc": [{"id": "1.1", "img": True, "marketDefinition": {
                      "status": "OPEN", "inPlay": False, "betDelay": 0, "eventId": "30",
                      "eventTypeId": "1", "name": "Match Odds",
                      "runners": [{"id": 11, "status": "ACTIVE", "name": "Home"},
                                  {"id": 12, "status": "ACTIVE", "name": "Away"}]},
                      "rc": [{"id": 11, "batb": [[0, 2.5, 10], [1, 2.4, 5]]},
                             {"id": 12, "atb": [[1.6, 3], [1.7, 8]]}]}]})
            send({"op": "mcm", "clk": "c2", "pt": 1100,
                  "mc": [{"id": "1.1", "rc": [{"id": 11, "batb": [[0, 2.5, 0]]}]}]})
            send({"op": "mcm", "clk": "c3", "pt": 1200, "status": 503, "ct": "HEARTBEAT"})
            await writer.drain()
            await asyncio.sleep(5)  # then go silent: the client must notice
        else:
            send({"op": "mcm", "clk": "c4", "pt": 1300, "ct": "RESUB_DELTA",
                  "mc": [{"id": "1.1", "marketDefinition": {
                      "status": "SUSPENDED", "inPlay": True, "betDelay": 5, "eventId": "30",
                      "eventTypeId": "1", "name": "Match Odds",
                      "runners": [{"id": 11, "status": "ACTIVE", "name": "Home"},
                                  {"id": 12, "status": "REMOVED", "name": "Away"}]}}]})
            await writer.drain()
            await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(provider, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    feed = FeedRunner(store, "stream:1")
    state = StreamState()
    stop = asyncio.Event()

    async def on_updates(ups: list[Any]) -> None:
        for u in ups:
            await feed.submit(u)

    task = asyncio.create_task(run_stream("127.0.0.1", port, state, on_updates, feed.bad,
                                          stop=stop))
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        m = await store.get("1.1")
        if m is not None and m.status == "suspended":
            break
        assert asyncio.get_running_loop().time() < deadline, "stream never resumed"
        await asyncio.sleep(0.05)
    stop.set()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    server.close()
    assert subs[1]["initialClk"] == "i1"
    assert subs[1]["clk"] == "c3"
    assert m.in_play
    assert m.bet_delay_ms == 5000
    assert set(m.selections) == {"11"}
    assert m.selections["11"].price == 24000  # level 0 deleted -> best left is level 1


def test_stream_state_best_price_and_settle() -> None:
    """Best back comes from batb level 0, else the best of atb; closed with winners settles."""
    st = StreamState()
    d = {"status": "OPEN", "eventId": "9", "eventTypeId": "1", "runners": [{"id": 1}]}
    [u] = st.on_message({"op": "mcm", "pt": 1, "mc": [{"id": "2.2", "img": True,
                                                        "marketDefinition": d,
                                                        "rc": [{"id": 1, "atb": [[3.0, 1],
                                                                                 [3.2, 2]]}]}]})
    assert u.selections["1"]["price"] == 32000
    closed = {**d, "status": "CLOSED", "runners": [{"id": 1, "status": "WINNER"}]}
    [u2] = st.on_message({"op": "mcm", "pt": 2, "mc": [{"id": "2.2", "marketDefinition": closed}]})
    assert u2.fields["status"] == "settled"


async def test_push_endpoint_auth_and_batch(store: Store) -> None:
    """The push endpoint needs odds:write; a batch answers per message; bad ones are counted."""
    settings = load_settings(None, {}, {"auth.hs256_secret": SECRET})
    auth = Authenticator(settings.auth)
    feed = FeedRunner(store, "push:1")
    app = build_push_app(feed, auth)
    runner_ = web.AppRunner(app)
    await runner_.setup()
    site = web.TCPSite(runner_, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/v1/push"
    now = int(time.time())
    body = {"messages": [
        {"market": "p1", "event": "e", "sport": "s", "name": "n",
         "selections": {"h": {"name": "H", "price": "5/2"}}, "seq": 1},
        {"market": "p1", "selections": {"h": {"price": 0.2}}, "seq": 2},
        {"market": "p1", "selections": {"h": {"price": {"american": -200}}}, "seq": 3}]}
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json=body) as r:
            assert r.status == 401
        async with s.post(url, json=body, headers={
                "Authorization": f"Bearer {auth.mint('p', ['odds:read'], ttl_s=60, now_s=now)}"}) as r:
            assert r.status == 403
        tok = auth.mint("p", ["odds:write"], ttl_s=60, now_s=now)
        async with s.post(url, json=body, headers={"Authorization": f"Bearer {tok}"}) as r:
            assert r.status == 200
            res = await r.json()
    await runner_.cleanup()
    assert [x["ok"] for x in res["results"]] == [True, False, True]
    m = await store.get("p1")
    assert m is not None
    assert m.selections["h"].price == 15000
    assert feed.counts["bad"] == 1


async def test_out_of_order_feed_never_changes_twice(store: Store) -> None:
    """Out-of-order and duplicate feed messages are dropped by the store."""
    feed = FeedRunner(store, "push:2")
    base = {"market": "o1", "event": "e", "sport": "s", "name": "n"}
    out = await feed.submit(normalize_message({**base, "selections": {
        "h": {"name": "H", "price": 2}}, "seq": 5}))
    assert isinstance(out, Created)
    assert isinstance(await feed.submit(normalize_message(
        {"market": "o1", "selections": {"h": {"price": 3}}, "seq": 4})), OutOfOrder)
    assert isinstance(await feed.submit(normalize_message(
        {"market": "o1", "selections": {"h": {"price": 3}}, "seq": 6})), Changed)
    assert isinstance(await feed.submit(normalize_message(
        {"market": "o1", "selections": {"h": {"price": 4}}, "seq": 6})), OutOfOrder)
    assert (await store.get("o1")).version == 2  # type: ignore[union-attr]
