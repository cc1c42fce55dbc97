"""An event bet stop reaches WebSocket subscribers as suspension deltas, end to end: a real
worker, a real client subscribed by event, the bet stop sent over HTTP."""

from __future__ import annotations

import aiohttp

from oddsfeed.worker import Worker

from .builders import create
from .conftest import mint_token, ws_url
from .mirror import Mirror, wait_until


async def test_event_subscriber_sees_bet_stop_and_bet_start(worker: Worker) -> None:
    """A client subscribed to the event sees every market suspended by one delta each after
    bet-stop, a market created during the stop arrive suspended, and bet-start reopen them."""
    for mid in ("m1", "m2", "m3"):
        await worker.store.apply(create(mid, "e1"))
    c = await Mirror.open(ws_url(worker))
    try:
        await c.request({"op": "subscribe", "events": ["e1"]})
        await wait_until(lambda: len(c.markets) == 3)
        token = mint_token(worker.settings, "odds:write", sub="trader")
        base = f"http://127.0.0.1:{worker.http_port}/v1/events/e1"
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/bet-stop", headers=headers) as r:
                assert r.status == 200
            await wait_until(lambda: all(m.status == "suspended" for m in c.markets.values()))
            await worker.store.apply(create("m4", "e1"))
            await wait_until(lambda: "m4" in c.markets)
            assert c.markets["m4"].status == "suspended"
            async with http.post(f"{base}/bet-start", headers=headers) as r:
                assert r.status == 200
            await wait_until(lambda: len(c.markets) == 4 and all(
                m.status == "open" for m in c.markets.values()))
        deltas = [d for d in c.ops("delta") if "status" in d]
        assert sorted(d["m"] for d in deltas) == ["m1", "m1", "m2", "m2", "m3", "m3", "m4"]
        c.check_clean()
    finally:
        await c.close()
