"""The WebSocket validate op feeds the same risk recorder as the HTTP route (one worker)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from oddsfeed.worker import Worker

from .builders import create, price
from .conftest import mint_token, ws_url
from .mirror import Mirror


async def test_ws_validations_are_counted_for_the_token_subject(worker: Worker) -> None:
    """Slips validated over the WebSocket are counted under the token's subject, their
    stale leg dated from the history, and read back with GET /v1/risk/accounts/{sub}."""
    await worker.store.apply(create("m1", h=25000, a=30000))
    await worker.store.apply(price("m1", 26000))
    s = worker.settings
    c = await Mirror.open(ws_url(worker, mint_token(s, "bets:validate", sub="ws-bettor")))
    try:
        for legs in ([{"market": "m1", "selection": "h", "price": 2.6}],
                     [{"market": "m1", "selection": "h", "price": 2.5, "version": 1}]):
            assert (await c.request({"op": "validate", "legs": legs}))["op"] == "validation"
    finally:
        await c.close()
    url = f"http://127.0.0.1:{worker.http_port}/v1/risk/accounts/ws-bettor"
    headers = {"Authorization": f"Bearer {mint_token(s, 'risk:read')}"}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    body: Any = None
    async with aiohttp.ClientSession() as http:
        while loop.time() < deadline:
            async with http.get(url, headers=headers) as r:
                assert r.status == 200
                body = await r.json()
            if body["counts"]["slips"] == 2:
                break
            await asyncio.sleep(0.02)
    counts = body["counts"]
    assert (counts["slips"], counts["accepted"], counts["rejected_price_changed"]) == (2, 1, 1)
    assert counts["stale_unknown"] == 0
    assert body["score"] > 0
