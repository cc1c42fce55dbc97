"""Every WebSocket validate is answered: a slip whose validation raises (here a market state
the store holds corrupt) gets an ``error`` for its id, as the HTTP route answers 500."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
from websockets.asyncio.client import connect

from oddsfeed.auth import Authenticator
from oddsfeed.settings import load_settings
from oddsfeed.store.codec import state_key
from oddsfeed.worker import Worker

SECRET = "validate-answered-secret-0123456789-0123456789"
LEGS = [{"market": "corrupt-1", "selection": "h", "price": 2.5}]


async def test_a_validation_that_raises_is_answered_with_an_error(
        valkey_url: str, redis_client: Any) -> None:
    """A slip on a market whose stored state does not decode gets ``error internal`` with
    its id over WebSocket (not silence), and 500 over HTTP; the connection stays usable."""
    settings = load_settings(None, {}, {"server.ws_port": 0, "server.http_port": 0,
                                        "auth.hs256_secret": SECRET})
    token = Authenticator(settings.auth).mint("s1", ["bets:validate"], ttl_s=600,
                                              now_s=int(time.time()))
    async with Worker(settings, valkey_url, reuse_port=False) as w:
        await redis_client.set(state_key("corrupt-1"), b"\xc1\xc1 not msgpack")
        async with aiohttp.ClientSession() as http, http.post(
                f"http://127.0.0.1:{w.http_port}/v1/bets/validate", json={"legs": LEGS},
                headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 500
        async with connect(f"ws://127.0.0.1:{w.ws_port}/ws?token={token}") as ws:
            assert json.loads(await ws.recv())["op"] == "hello"
            for i in (1, 2):
                await ws.send(json.dumps({"op": "validate", "id": i, "legs": LEGS}))
                reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert (reply["op"], reply["id"], reply["code"]) == ("error", i, "internal")
