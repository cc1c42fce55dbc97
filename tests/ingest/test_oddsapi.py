"""The http-poll adapter against a local fake Odds API v4: normalisation, ETag / 304,
429 with Retry-After, timeouts, bad bodies, and polls that never overlap."""

from __future__ import annotations

import asyncio
import copy
import random
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from oddsfeed.core.errors import ProviderDataError
from oddsfeed.store import OutOfOrder, Store
from oddsfeed_ingest.oddsapi import Poller, normalize_event, retry_after_s
from oddsfeed_ingest.runner import FeedRunner

from .conftest import ManualClock, until

ServeApp = Callable[[web.Application], Awaitable[str]]
KICK_OFF_MS = 1_893_510_000_000  # 2030-01-01T15:00:00Z
EVENT: dict[str, Any] = {
    "id": "ev123", "sport_key": "soccer_epl", "sport_title": "EPL",
    "commence_time": "2030-01-01T15:00:00Z", "home_team": "Arsenal", "away_team": "Chelsea",
    "bookmakers": [
        {"key": "book1", "title": "Book 1", "last_update": "2029-12-31T10:00:00Z",
         "markets": [
             {"key": "h2h", "last_update": "2029-12-31T10:00:00Z", "outcomes": [
                 {"name": "Arsenal", "price": 2.1}, {"name": "Chelsea", "price": 3.4},
                 {"name": "Draw", "price": 3.3}]},
             {"key": "totals", "last_update": "2029-12-31T10:00:01Z", "outcomes": [
                 {"name": "Over", "price": 1.9, "point": 2.5},
                 {"name": "Under", "price": 1.95, "point": 2.5}]},
             {"key": "spreads", "last_update": "2029-12-31T10:00:01Z", "outcomes": [
                 {"name": "Arsenal", "price": 1.9, "point": -0.5},
                 {"name": "Chelsea", "price": 1.9, "point": 0.5}]},
             {"key": "outrights", "outcomes": []}]},
        {"key": "other", "markets": [{"key": "h2h", "outcomes": []}]}],
}


def test_one_market_per_event_and_key() -> None:
    """One market per (event, market key) of the configured bookmaker; outcome name plus
    point make the selection id; kinds are mapped; before kick-off it is not in play."""
    ups = normalize_event(EVENT, bookmaker="book1", odds_format="decimal", now_ms=0)
    assert [u.market for u in ups] == ["ev123:h2h", "ev123:totals", "ev123:spreads"]
    assert [u.fields["kind"] for u in ups] == ["1x2", "totals", "handicap"]
    assert ups[0].selections["Arsenal"] == {"name": "Arsenal", "price": 21000}
    assert set(ups[1].selections) == {"Over_2.5", "Under_2.5"}
    assert ups[2].selections["Arsenal_-0.5"]["point"] == -0.5
    assert all(u.create and u.replace and not u.fields["in_play"] for u in ups)


def test_american_odds_and_the_in_play_turn() -> None:
    """American odds convert exactly; kick-off passing turns the market in play with a
    seq above the last one, so the store does not drop it as a replay."""
    ev = copy.deepcopy(EVENT)
    for o, price in zip(ev["bookmakers"][0]["markets"][0]["outcomes"], (110, 240, -110),
                        strict=True):
        o["price"] = price
    ev["bookmakers"][0]["markets"] = ev["bookmakers"][0]["markets"][:1]
    before = normalize_event(ev, bookmaker="book1", odds_format="american", now_ms=0)[0]
    assert before.selections["Arsenal"]["price"] == 21000
    assert before.selections["Draw"]["price"] == 19091
    after = normalize_event(ev, bookmaker="book1", odds_format="american",
                            now_ms=KICK_OFF_MS)[0]
    assert after.fields["in_play"] is True
    assert after.seq is not None
    assert before.seq is not None
    assert after.seq > before.seq


async def test_in_play_turn_applies_through_the_store(store: Store) -> None:
    """The same snapshot polled again is a harmless replay; after kick-off it applies."""
    runner = FeedRunner(store, "http-poll:1")
    for now in (0, 1):
        for u in normalize_event(EVENT, bookmaker="book1", odds_format="decimal", now_ms=now):
            await runner.submit(u)
    assert runner.counts["out_of_order"] == 3
    for u in normalize_event(EVENT, bookmaker="book1", odds_format="decimal",
                             now_ms=KICK_OFF_MS + 1):
        await runner.submit(u)
    m = await store.get("ev123:h2h")
    assert m is not None
    assert m.in_play
    assert m.version == 2


def test_retry_after_forms() -> None:
    """Retry-After is read as seconds or as an HTTP date; nonsense is ignored."""
    assert retry_after_s("7", 0) == 7.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0) == 10.0
    assert retry_after_s("soon", 0) is None
    assert retry_after_s(None, 0) is None


class FakeOddsApi:
    """A scripted Odds API: each request takes the next step of the script."""

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self.requests: list[dict[str, str]] = []
        self.inflight = 0
        self.max_inflight = 0
        self.release = asyncio.Event()  # a "hang" step waits for this (never set)

    async def handler(self, request: web.Request) -> web.StreamResponse:
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            self.requests.append(dict(request.headers))
            step = self.script[min(len(self.requests), len(self.script)) - 1]
            if step == "ok":
                return web.json_response([EVENT], headers={"ETag": '"v1"'})
            if step == "304":
                return web.Response(status=304, headers={"ETag": '"v1"'})
            if step == "429":
                return web.Response(status=429, headers={"Retry-After": "7"})
            if step == "500":
                return web.Response(status=500)
            if step == "garbage":
                return web.Response(body=b"{not json", content_type="application/json")
            if step == "object":
                return web.json_response({"message": "quota"})
            await self.release.wait()  # "hang": longer than any client timeout
            return web.Response(status=204)
        finally:
            self.inflight -= 1

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v4/sports/soccer_epl/odds", self.handler)
        return app


async def test_etag_304_429_timeout_and_bad_bodies(store: Store, serve_app: ServeApp,
                                                  clock: ManualClock) -> None:
    """The poller sends If-None-Match, takes a 304 as a live feed, honours Retry-After on
    429, backs off after a 500, a timeout and an unusable body (counted as bad data), and
    never has two requests in flight."""
    fake = FakeOddsApi(["ok", "304", "429", "500", "hang", "garbage", "object", "ok"])
    base = await serve_app(fake.app())
    feed = FeedRunner(store, "http-poll:1", clock=clock)
    alive: list[int] = []

    async def on_events(events: list[Any]) -> None:
        for ev in events:
            for u in normalize_event(ev, bookmaker="book1", odds_format="decimal", now_ms=0):
                await feed.submit(u)

    async def on_not_modified() -> None:
        alive.append(1)
        await feed.alive()

    poller = Poller(f"{base}/v4/sports/soccer_epl/odds?apiKey=k", on_events, interval_s=1.0,
                    timeout_s=0.2, on_not_modified=on_not_modified, on_bad=feed.bad,
                    rng=random.Random(1))
    async with aiohttp.ClientSession() as session:
        waits = [await poller.poll_once(session) for _ in range(8)]
    assert "If-None-Match" not in fake.requests[0]
    assert fake.requests[1]["If-None-Match"] == '"v1"'
    assert alive == [1]
    assert waits[0] == waits[1] == 1.0
    assert waits[2] >= 7.0  # Retry-After honoured
    assert all(w > 1.0 for w in waits[2:7])
    assert waits[7] == 1.0  # a good poll ends the backoff
    assert poller.failures_in_row == 0
    assert poller.errors == 5
    assert poller.not_modified == 1
    assert feed.counts["bad"] == 2  # the garbage body and the non-list body
    assert fake.max_inflight <= 2  # only the abandoned, timed-out request lingers
    m = await store.get("ev123:h2h")
    assert m is not None
    assert m.version == 1
    fake.release.set()


async def test_run_never_overlaps_and_stops(serve_app: ServeApp) -> None:
    """Poller.run makes one request at a time, even when the provider is slower than the
    interval, and returns promptly when stopped."""
    fake = FakeOddsApi(["ok"])
    base = await serve_app(fake.app())
    stop = asyncio.Event()
    got: list[int] = []

    async def on_events(events: list[Any]) -> None:
        got.append(len(events))
        await asyncio.sleep(0.02)  # slow consumer: still no overlap

    poller = Poller(f"{base}/v4/sports/soccer_epl/odds", on_events, interval_s=0.001)
    task = asyncio.create_task(poller.run(stop))
    await until(lambda: len(got) >= 5, what="five polls")
    stop.set()
    await asyncio.wait_for(task, 5)
    assert fake.max_inflight == 1


def test_bad_events_raise_provider_data_error() -> None:
    """Malformed events raise ProviderDataError carrying the provider and a raw excerpt."""
    bad: list[Any] = [
        [], {"id": "x"}, {**EVENT, "bookmakers": "no"},
        {**EVENT, "commence_time": 17},
    ]
    for ev in bad:
        with pytest.raises(ProviderDataError) as info:
            normalize_event(ev, bookmaker="book1", odds_format="decimal", now_ms=0)
        assert info.value.provider == "oddsapi"
        assert info.value.raw
    with pytest.raises(ProviderDataError):
        normalize_event(EVENT, bookmaker="book1", odds_format="roman", now_ms=0)


async def test_replayed_snapshot_is_out_of_order(store: Store) -> None:
    """Polling the same snapshot twice never changes the market twice."""
    runner = FeedRunner(store, "http-poll:2")
    ups = normalize_event(EVENT, bookmaker="book1", odds_format="decimal", now_ms=0)
    for u in ups + ups:
        await runner.submit(u)
    assert [isinstance(await runner.submit(u), OutOfOrder) for u in ups] == [True] * 3
    m = await store.get("ev123:totals")
    assert m is not None
    assert m.version == 1
