"""The push adapter: bearer JWT with scope odds:write, batches of normalised JSON with one
result per message, bad messages counted and skipped."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from oddsfeed.auth import Authenticator
from oddsfeed.settings import load_settings
from oddsfeed.store import Store
from oddsfeed_ingest.push import build_push_app
from oddsfeed_ingest.runner import FeedRunner

ServeApp = Callable[[web.Application], Awaitable[str]]
SECRET = "push-test-secret-0123456789abcdef"
BATCH = {"messages": [
    {"market": "p1", "event": "e", "sport": "s", "name": "n",
     "selections": {"h": {"name": "H", "price": "5/2"}, "a": {"name": "A", "price": 1.5}},
     "seq": 1},
    {"market": "p1", "selections": {"h": {"price": 0.2}}, "seq": 2},
    {"market": "p1", "selections": {"h": {"price": {"american": -200}}}, "seq": 3},
    {"market": "p1", "selections": {"h": {"price": 9}}, "seq": 3},
    {"market": "nope", "selections": {"h": {"price": 2}}, "seq": 1},
]}


async def _setup(store: Store, serve_app: ServeApp) -> tuple[str, Authenticator, FeedRunner,
                                                              list[Any]]:
    auth = Authenticator(load_settings(None, {}, {"auth.hs256_secret": SECRET}).auth)
    feed = FeedRunner(store, "push:1")
    recorded: list[Any] = []
    base = await serve_app(build_push_app(feed, auth,
                                          recorder=lambda p, m: recorded.append((p, m))))
    return f"{base}/v1/push", auth, feed, recorded


async def test_auth_needs_odds_write(store: Store, serve_app: ServeApp) -> None:
    """No token, a bad token or a token without odds:write is refused; nothing applies."""
    url, auth, feed, _ = await _setup(store, serve_app)
    now = int(time.time())
    read_only = auth.mint("p", ["odds:read"], ttl_s=60, now_s=now)
    expired = auth.mint("p", ["odds:write"], ttl_s=1, now_s=now - 100)
    async with aiohttp.ClientSession() as s:
        for headers, status in (({}, 401), ({"Authorization": "Bearer x.y.z"}, 401),
                                ({"Authorization": f"Bearer {expired}"}, 401),
                                ({"Authorization": f"Bearer {read_only}"}, 403)):
            async with s.post(url, json=BATCH, headers=headers) as r:
                assert r.status == status
                assert (await r.json())["status"] == status
    assert await store.get("p1") is None
    assert feed.counts == {}


async def test_batch_applies_each_message(store: Store, serve_app: ServeApp) -> None:
    """A batch answers one result per message in order: the bad price is skipped and
    counted, the duplicate seq is harmless but reported as not applied, an unknown market is
    rejected, and the valid ones around them apply."""
    url, auth, feed, recorded = await _setup(store, serve_app)
    tok = auth.mint("provider-1", ["odds:write"], ttl_s=60, now_s=int(time.time()))
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json=BATCH, headers={"Authorization": f"Bearer {tok}"}) as r:
            assert r.status == 200
            res = (await r.json())["results"]
        async with s.post(url, data=b"{", headers={"Authorization": f"Bearer {tok}",
                                                   "Content-Type": "application/json"}) as r:
            assert r.status == 400
        async with s.post(url, data=b"x", headers={"Authorization": f"Bearer {tok}"}) as r:
            assert r.status == 415
    assert [x["ok"] for x in res] == [True, False, True, False, False]
    assert res[3]["last_seq"] == 3
    assert [x.get("outcome") for x in res] == ["created", None, "changed", "outoforder",
                                              "rejected"]
    assert "price" in res[1]["error"]
    m = await store.get("p1")
    assert m is not None
    assert m.version == 2
    assert m.selections["h"].price == 15000
    assert m.selections["a"].price == 15000
    assert feed.counts["bad"] == 1
    assert feed.counts["out_of_order"] == 1
    assert len(recorded) == 5
    assert recorded[0][0] == "push"
