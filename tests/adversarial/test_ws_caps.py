"""A reader cannot exhaust node or store memory: event-expanded markets count against
max_subscriptions, subscriptions to markets that do not exist are capped (each would be a
store channel), and connections are capped per peer address and per token subject
(docs/protocol.md, limits)."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.fanout.builders import create

from .ws_support import (
    Mirror,
    errors_logged,
    make_settings,
    mint_token,
    wait_until,
    worker_on,
    ws_url,
)


async def test_event_expansion_counts_against_max_subscriptions(
        valkey_url: str, redis_client: redis.asyncio.Redis,
        caplog: pytest.LogCaptureFixture) -> None:
    """Subscribing to an event of 30 markets with max_subscriptions=10 is refused with
    limit_exceeded and subscribes nothing; an event that fits is counted market by market,
    and markets created under it past the limit are refused with limit_exceeded."""
    async with worker_on(valkey_url, **{"fanout.max_subscriptions": 10}) as w:
        await w.store.apply_many([create(f"big{i}", "big") for i in range(30)])
        await w.store.apply_many([create(f"small{i}", "small") for i in range(5)])
        c = await Mirror.open(ws_url(w))
        over = await c.request({"op": "subscribe", "events": ["big"]})
        assert over["op"] == "error"
        assert over["code"] == "limit_exceeded"
        client = next(iter(w.hub.clients))
        assert w.hub.index.count(client) == 0
        assert not w.hub.bus.channels
        ok = await c.request({"op": "subscribe", "events": ["small"]})
        assert ok["op"] == "subscribed"
        assert len(ok["markets"]) == 5
        assert w.hub.index.count(client) == 6  # 5 markets + the event
        await w.store.apply_many([create(f"small{i}", "small") for i in range(5, 10)])
        await wait_until(lambda: len(c.ops("error")) >= 2, what="refusal of the 5th new market")
        await wait_until(lambda: len(c.markets) == 9, what="4 announced markets subscribed")
        assert w.hub.index.count(client) == 10
        refused = c.ops("error")[1]
        assert refused["code"] == "limit_exceeded"
        assert "small" in refused["message"]
        c.check_clean()
        await c.close()
    assert not errors_logged(caplog)


async def test_missing_subscriptions_are_capped(valkey_url: str,
                                               redis_client: redis.asyncio.Redis) -> None:
    """Unknown market ids and events without markets past max_missing_subscriptions are
    refused with limit_exceeded, so 10,000 unknown ids open at most that many channels;
    existing markets are not counted."""
    async with worker_on(valkey_url, **{"fanout.max_missing_subscriptions": 5}) as w:
        await w.store.apply_many([create(f"m{i}") for i in range(20)])
        c = await Mirror.open(ws_url(w))
        ok = await c.request({"op": "subscribe", "markets": [f"m{i}" for i in range(20)]
                              + ["nope0", "nope1", "nope2"], "events": ["noevent"]})
        assert ok["op"] == "subscribed"
        assert ok["missing"] == ["nope0", "nope1", "nope2"]
        for start in range(0, 10_000, 1000):
            over = await c.request({"op": "subscribe",
                                    "markets": [f"x{i}" for i in range(start, start + 1000)]})
            assert over["op"] == "error"
            assert over["code"] == "limit_exceeded"
        over = await c.request({"op": "subscribe", "markets": ["x1", "x2"]})
        assert over["code"] == "limit_exceeded"
        ok = await c.request({"op": "subscribe", "markets": ["x1"]})
        assert ok["op"] == "subscribed"
        assert len(w.hub.bus.channels) == 20 + 4 + 1
        # a missing market that is created stops counting
        await w.store.apply(create("x1"))
        await wait_until(lambda: "x1" in c.markets, what="snapshot of the created market")
        ok = await c.request({"op": "subscribe", "markets": ["x2"]})
        assert ok["op"] == "subscribed"
        c.check_clean()
        await c.close()


async def status_of(url: str, **kw: Any) -> int:
    """101 if the WebSocket handshake succeeds (the connection stays open), else the HTTP
    status of the refusal."""
    try:
        ws = await connect(url, **kw)
    except InvalidStatus as exc:
        return int(exc.response.status_code)
    OPEN.append(ws)
    return 101


OPEN: list[Any] = []


async def test_connections_per_ip_capped(valkey_url: str,
                                         redis_client: redis.asyncio.Redis) -> None:
    """Past max_connections_per_ip open connections from one address the handshake is
    refused with HTTP 429; closing one lets a new one in."""
    async with worker_on(valkey_url, **{"fanout.max_connections_per_ip": 3}) as w:
        statuses = [await status_of(ws_url(w)) for _ in range(5)]
        assert statuses == [101, 101, 101, 429, 429]
        await OPEN.pop().close()
        await wait_until(lambda: len(w.hub.clients) == 2, what="a connection gone")
        assert await status_of(ws_url(w)) == 101
        while OPEN:
            await OPEN.pop().close()


async def test_connections_per_subject_capped(valkey_url: str,
                                              redis_client: redis.asyncio.Redis) -> None:
    """Past max_connections_per_subject connections under one token subject the handshake
    is refused with HTTP 429; another subject and anonymous readers are not affected."""
    overrides = {"fanout.max_connections_per_subject": 2}
    settings = make_settings(valkey_url, **overrides)
    async with worker_on(valkey_url, **overrides) as w:
        alice = mint_token(settings, "odds:read", sub="alice")
        bob = mint_token(settings, "odds:read", sub="bob")
        statuses = [await status_of(ws_url(w, alice)) for _ in range(3)]
        assert statuses == [101, 101, 429]
        assert await status_of(ws_url(w, bob)) == 101
        assert [await status_of(ws_url(w)) for _ in range(3)] == [101, 101, 101]
        while OPEN:
            await OPEN.pop().close()
