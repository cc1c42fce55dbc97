"""Price locks and the desk's market view over HTTP: lock and unlock routes, what a feed
update does to a locked price, the errors (400/401/403/404/412), and what WebSocket
subscribers see of locks and of the driving feed."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import REGISTRY

from oddsfeed.core.model import FeedRank, MarketUpdate
from oddsfeed.core.prices import parse_price

from .conftest import BODY, Api, live_worker, mint, next_op

FEED = FeedRank("sim:main", 0, 30_000)


async def feed(api: Api, seq: int, prices: dict[str, float]) -> None:
    """A primary feed's price update of market m1 straight into the store."""
    await api.store.apply(MarketUpdate(
        market="m1", source="sim:main", seq=seq, feed=FEED,
        selections={s: {"price": parse_price(p)} for s, p in prices.items()}))


async def test_lock_holds_a_price_against_the_feed_until_unlocked(api: Api) -> None:
    """A locked selection keeps the desk's price through feed updates (counted in the desk
    view and the metric), other selections and desk writes still apply, and after unlock
    the feed applies."""
    st, _, _ = await api.call("PUT", "/v1/markets/m1", BODY)
    assert st == 201
    st, m, _ = await api.call("PATCH", "/v1/markets/m1", {"selections": {"h": {"price": 2.2}}})
    st, body, _ = await api.call("POST", "/v1/markets/m1/lock", {"selections": ["h"]})
    assert st == 200, body
    assert body == {"market": "m1", "version": m["version"] + 1,
                    "locks": {"market": False, "selections": ["h"]}}
    refused_before = REGISTRY.get_sample_value("oddsfeed_lock_refused_total") or 0.0
    await feed(api, 1, {"h": 2.6, "d": 3.6})
    assert REGISTRY.get_sample_value("oddsfeed_lock_refused_total") == refused_before + 1
    st, got, _ = await api.call("GET", "/v1/markets/m1")
    assert got["selections"]["h"]["price"] == 2.2
    assert got["selections"]["d"]["price"] == 3.6
    st, view, _ = await api.call("GET", "/v1/desk/markets/m1")
    assert st == 200, view
    assert view["locks"] == {"market": False, "selections": ["h"]}
    assert view["refused"] == {"h": 1}
    assert view["driver"] == "sim:main"
    assert [(s["source"], s["priority"]) for s in view["sources"]] == [("sim:main", 0)]
    assert view["sources"][0]["age_ms"] >= 0
    st, _, _ = await api.call("PATCH", "/v1/markets/m1", {"selections": {"h": {"price": 2.3}}})
    assert st == 200  # a desk write is never refused by a lock
    st, body, _ = await api.call("POST", "/v1/markets/m1/unlock")
    assert body["locks"] == {"market": False, "selections": []}
    await feed(api, 2, {"h": 2.7})
    st, got, _ = await api.call("GET", "/v1/markets/m1")
    assert got["selections"]["h"]["price"] == 2.7


async def test_whole_market_lock_and_event_listing(api: Api) -> None:
    """A whole-market lock drops every field of a feed update (counted under `*`); the
    list form answers the event's markets; a repeated lock keeps the version."""
    await api.call("PUT", "/v1/markets/m1", BODY)
    await api.call("PUT", "/v1/markets/m2", BODY)
    st, body, _ = await api.call("POST", "/v1/markets/m1/lock", {"selections": None})
    assert body["locks"] == {"market": True, "selections": []}
    st, again, _ = await api.call("POST", "/v1/markets/m1/lock")
    assert again == body
    await api.store.apply(MarketUpdate(market="m1", source="sim:main", seq=1, feed=FEED,
                                       fields={"status": "suspended"}))
    st, listed, _ = await api.call("GET", "/v1/desk/markets?event=e1&limit=10")
    assert st == 200, listed
    views = {v["market"]: v for v in listed["markets"]}
    assert sorted(views) == ["m1", "m2"]
    assert views["m1"]["status"] == "open"
    assert views["m1"]["refused"] == {"*": 1}
    assert views["m2"]["locks"] == {"market": False, "selections": []}
    assert views["m2"]["driver"] is None
    assert views["m2"]["sources"] == []


async def test_lock_errors(api: Api) -> None:
    """Unknown market 404, unknown selection or field 400, a stale If-Match 412 with the
    current market, no token 401, a read-only token 403; nothing is locked by them."""
    await api.call("PUT", "/v1/markets/m1", BODY)
    st, body, _ = await api.call("POST", "/v1/markets/nope/lock", {"selections": ["h"]})
    assert st == 404, body
    st, body, _ = await api.call("POST", "/v1/markets/m1/lock", {"selections": ["zz"]})
    assert st == 400, body
    assert body["errors"][0]["path"] == "selections"
    st, body, _ = await api.call("POST", "/v1/markets/m1/lock", {"selection": ["h"]})
    assert st == 400, body
    st, body, _ = await api.call("POST", "/v1/markets/m1/lock", {"selections": ["bad id"]})
    assert st == 400, body
    st, m, _ = await api.call("GET", "/v1/markets/m1")
    st, body, _ = await api.call("POST", "/v1/markets/m1/lock", {"selections": ["h"]},
                                 headers={"If-Match": f'"{m["epoch"]}:{m["version"] + 5}"'})
    assert st == 412, body
    assert body["current"]["version"] == m["version"]
    st, _, _ = await api.call("POST", "/v1/markets/m1/lock", token=None)
    assert st == 401
    st, _, _ = await api.call("POST", "/v1/markets/m1/lock", token=mint("odds:read"))
    assert st == 403
    st, _, _ = await api.call("GET", "/v1/desk/markets/m1", token=mint("bets:validate"))
    assert st == 403
    st, _, _ = await api.call("GET", "/v1/desk/markets/nope")
    assert st == 404
    st, _, _ = await api.call("GET", "/v1/desk/markets?limit=0")
    assert st == 400
    st, _, _ = await api.call("GET", "/v1/desk/markets?colour=red")
    assert st == 400
    st, view, _ = await api.call("GET", "/v1/desk/markets/m1")
    assert view["locks"] == {"market": False, "selections": []}
    assert view["version"] == m["version"]
    st, body, _ = await api.call("POST", "/v1/markets/m1/lock", {"selections": ["h"]},
                                 headers={"If-Match": f'"{m["epoch"]}:{m["version"]}"'})
    assert st == 200, body
    assert body["version"] == m["version"] + 1


async def test_subscribers_see_locks_and_the_driver(valkey_url: str, redis_client: Any) -> None:
    """Inside a full worker: a lock reaches WebSocket subscribers as a delta with `locks`,
    a feed taking over as a delta with `src`, and a later subscriber's snapshot has both."""
    async with live_worker(valkey_url) as live:
        base, http, ws = live.base, live.http, live.ws
        async with http.put(f"{base}/v1/markets/m1", json=BODY) as r:
            assert r.status == 201
        await ws.send(json.dumps({"op": "subscribe", "id": 1, "markets": ["m1"]}))
        await next_op(ws, "snapshot")
        async with http.post(f"{base}/v1/markets/m1/lock", json={"selections": ["h"]}) as r:
            assert r.status == 200
        delta = await next_op(ws, "delta")
        assert delta["locks"] == {"market": False, "selections": ["h"]}
        assert "sel" not in delta
        await live.store.apply(MarketUpdate(market="m1", source="sim:main", seq=1, feed=FEED,
                                         selections={"h": {"price": 50000},
                                                     "d": {"price": 40000}}))
        delta = await next_op(ws, "delta")
        assert (delta["src"], delta["sel"]) == ("sim:main", {"d": {"price": 4.0}})
        await ws.send(json.dumps({"op": "unsubscribe", "id": 3, "markets": ["m1"]}))
        await next_op(ws, "unsubscribed")
        await ws.send(json.dumps({"op": "subscribe", "id": 4, "markets": ["m1"]}))
        snap = (await next_op(ws, "snapshot"))["market"]
        assert snap["locks"] == {"market": False, "selections": ["h"]}
        assert snap["src"] == "sim:main"
        assert snap["selections"]["h"]["price"] == 3.5
