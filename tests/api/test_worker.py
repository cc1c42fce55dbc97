"""The HTTP API inside a full worker: desk writes reach WebSocket subscribers through the
store, and the WebSocket validate op answers exactly as the HTTP route."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from websockets.asyncio.client import connect

from oddsfeed.worker import Worker

from .conftest import BODY, api_settings, mint


async def _next(ws: Any, op: str) -> dict[str, Any]:
    seen: list[str] = []
    try:
        async with asyncio.timeout(10):
            while True:
                msg = json.loads(await ws.recv())
                for m in msg["items"] if msg["op"] == "batch" else [msg]:
                    if m["op"] == op:
                        return dict(m)
                    seen.append(m["op"])
    except TimeoutError:
        raise AssertionError(f"no {op} within 10 s; got {seen}") from None


async def test_desk_writes_reach_subscribers_and_validate_matches_http(
        valkey_url: str, redis_client: Any) -> None:
    """A PUT gives subscribers a snapshot, a PATCH a delta at the canonical price, and the
    WebSocket validate op gives the same verdict as POST /v1/bets/validate."""
    settings = api_settings(valkey_url, **{"server.ws_port": 0, "server.http_port": 0})
    token = mint()
    async with Worker(settings, valkey_url, reuse_port=False) as w, \
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http, \
            connect(f"ws://127.0.0.1:{w.ws_port}/ws?token={token}",
                    subprotocols=["oddsfeed.v1.json"]) as ws:  # type: ignore[list-item]
        base = f"http://127.0.0.1:{w.http_port}"
        await _next(ws, "hello")
        await ws.send(json.dumps({"op": "subscribe", "id": 1, "markets": ["m1"]}))
        assert (await _next(ws, "subscribed"))["missing"] == ["m1"]
        async with http.put(f"{base}/v1/markets/m1", json=BODY) as r:
            assert r.status == 201
        snap = await _next(ws, "snapshot")
        assert snap["market"]["selections"]["h"]["price"] == 3.5
        async with http.patch(f"{base}/v1/markets/m1",
                              json={"selections": {"h": {"price": "7/2"}}}) as r:
            assert r.status == 200
        delta = await _next(ws, "delta")
        assert (delta["v"], delta["sel"]) == (2, {"h": {"price": 4.5}})
        for leg, accept in (({"market": "m1", "selection": "h", "price": 3.5}, "exact"),
                            ({"market": "m1", "selection": "h", "price": 3.5}, "better"),
                            ({"market": "m1", "selection": "h", "price": "7/2",
                              "version": 1}, "exact"),
                            ({"market": "zz", "selection": "h", "price": 2}, "any")):
            async with http.post(f"{base}/v1/bets/validate",
                                 json={"legs": [leg], "accept": accept}) as r:
                over_http = await r.json()
            await ws.send(json.dumps({"op": "validate", "id": 7, "legs": [leg],
                                      "accept": accept}))
            over_ws = await _next(ws, "validation")
            assert {k: over_ws[k] for k in ("ok", "legs")} == over_http
