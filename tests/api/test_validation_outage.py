"""HTTP validation through the store's read connection while the store fails and returns."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import aiohttp

from oddsfeed.api.app import build_app
from oddsfeed.core.model import MarketUpdate
from oddsfeed.embedded import EmbeddedValkey, free_port
from oddsfeed.store import Store

from .conftest import api_settings, mint, serve

SLIP = {"legs": [{"market": "m1", "selection": "h", "price": 2.5}]}


async def _validate(s: aiohttp.ClientSession, base: str, token: str) -> tuple[int, Any]:
    async with s.post(base + "/v1/bets/validate", json=SLIP,
                      headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, await r.json(content_type=None)


async def _seed(store: Store) -> None:
    await store.apply(MarketUpdate(
        market="m1", fields={"event": "e", "sport": "s", "name": "n", "status": "open"},
        selections={"h": {"name": "H", "price": 25000}}, create=True))


async def test_validations_out_when_the_store_dies_are_503_and_it_recovers() -> None:
    """Validations whose read is out when Valkey is killed are answered 503 problems within
    a second; after Valkey is back on its port (and the market written again), the next
    validation is decided from the store: 200, accepted."""
    port = free_port()
    server = EmbeddedValkey(port=port).start()
    store = await Store.connect(server.url, socket_timeout=30)
    runner, http_port = await serve(build_app(api_settings(server.url), store))
    base, token = f"http://127.0.0.1:{http_port}", mint()
    try:
        async with aiohttp.ClientSession() as s:
            await _seed(store)
            assert await _validate(s, base, token) == (200, {"ok": True, "legs": [
                {"ok": True, "market": "m1", "selection": "h", "price": 2.5, "version": 1}]})
            os.kill(server.pid, signal.SIGSTOP)  # the reads below are written, not answered
            out = [asyncio.ensure_future(_validate(s, base, token)) for _ in range(10)]
            done, _ = await asyncio.wait(out, timeout=0.3)
            assert not done
            os.kill(server.pid, signal.SIGKILL)
            t0 = time.monotonic()
            answers = await asyncio.wait_for(asyncio.gather(*out), timeout=10)
            assert time.monotonic() - t0 < 1.0
            assert all(st == 503 and body["title"] == "store unavailable"
                       for st, body in answers)
            server.stop()
            server = EmbeddedValkey(port=port).start()
            await _seed(store)
            st, body = await _validate(s, base, token)
            assert st == 200
            assert body["ok"] is True
    finally:
        await runner.cleanup()
        await store.close()
        server.stop()
