"""Fuzzing the HTTP API with hypothesis: any body gets an answer below 500, and a rejected
request changes nothing in the store."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oddsfeed.worker import Worker

from ..ws.conftest import make_settings
from .test_api import ALL, BODY, mint

scalars = (st.none() | st.booleans() | st.integers(-(10**12), 10**12)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
           | st.sampled_from(["5/2", "+150", "-200", "evens", "open", "settled", "removed"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(
                          ["name", "price", "point", "status", "h", "a", "decimal", "malay",
                           "market", "selection", "legs", "accept", "updates", "event",
                           "sport", "in_play", "bet_delay_ms", "selections", "ts", "kind",
                           "version", "epoch", "x"]), inner, max_size=5), max_leaves=15)
bodies = values | st.fixed_dictionaries({}, optional={
    "event": scalars, "sport": scalars, "name": scalars, "status": scalars,
    "in_play": scalars, "bet_delay_ms": scalars,
    "selections": st.dictionaries(st.sampled_from(["h", "a", "bad id", ""]), values,
                                  max_size=3)})
routes = st.sampled_from([("PUT", "/v1/markets/m1"), ("PATCH", "/v1/markets/m1"),
                          ("POST", "/v1/odds"), ("POST", "/v1/bets/validate"),
                          ("PUT", "/v1/markets/bad%20id"), ("DELETE", "/v1/markets/zz")])


def test_fuzz_api(valkey_url: str) -> None:
    """Random bodies on every write and validation route never produce a 5xx, and a 4xx
    leaves the market exactly as it was."""

    async def setup() -> tuple[Any, Any, Any, Any]:
        settings_ = make_settings(valkey_url, **{"auth.anonymous_read": False})
        worker = Worker(settings_, valkey_url, reuse_port=False)
        w = await worker.__aenter__()
        await w.store.client.flushall()
        session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {mint(ALL)}"})
        base = f"http://127.0.0.1:{w.http_port}"
        async with session.put(f"{base}/v1/markets/m1", json=BODY) as r:
            assert r.status == 201
        return worker, w, session, base

    loop = asyncio.new_event_loop()
    worker, w, session, base = loop.run_until_complete(setup())

    async def one(method: str, path: str, body: Any) -> None:
        before = await w.store.get("m1")
        async with session.request(method, base + path, data=json.dumps(body),
                                   headers={"Content-Type": "application/json"}) as r:
            status = r.status
            await r.read()
        assert status < 500, (method, path, body, status)
        if status >= 400:
            assert await w.store.get("m1") == before, (method, path, body)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(route=routes, body=bodies)
    def check(route: tuple[str, str], body: Any) -> None:
        loop.run_until_complete(one(route[0], route[1], body))

    try:
        check()
    finally:
        loop.run_until_complete(session.close())
        loop.run_until_complete(worker.__aexit__(None, None, None))
        loop.close()
