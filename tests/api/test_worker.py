"""The HTTP API inside a full worker: desk writes reach WebSocket subscribers through the
store, and the WebSocket validate op answers exactly as the HTTP route."""

from __future__ import annotations

import json
from typing import Any

from .conftest import BODY, live_worker, next_op


async def test_desk_writes_reach_subscribers_and_validate_matches_http(
        valkey_url: str, redis_client: Any) -> None:
    """A PUT gives subscribers a snapshot, a PATCH a delta at the canonical price, and the
    WebSocket validate op gives the same verdict as POST /v1/bets/validate."""
    async with live_worker(valkey_url) as live:
        base, http, ws = live.base, live.http, live.ws
        await ws.send(json.dumps({"op": "subscribe", "id": 1, "markets": ["m1"]}))
        assert (await next_op(ws, "subscribed"))["missing"] == ["m1"]
        async with http.put(f"{base}/v1/markets/m1", json=BODY) as r:
            assert r.status == 201
        snap = await next_op(ws, "snapshot")
        assert snap["market"]["selections"]["h"]["price"] == 3.5
        async with http.patch(f"{base}/v1/markets/m1",
                              json={"selections": {"h": {"price": "7/2"}}}) as r:
            assert r.status == 200
        delta = await next_op(ws, "delta")
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
            over_ws = await next_op(ws, "validation")
            assert {k: over_ws[k] for k in ("ok", "legs")} == over_http
