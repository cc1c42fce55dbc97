"""Whole-process behaviour: store loss and recovery, multi-worker serve, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from typing import Any

import aiohttp

from oddsfeed.embedded import EmbeddedValkey, free_port
from oddsfeed.model import MarketUpdate
from oddsfeed.store import Store
from oddsfeed.worker import Worker

from .conftest import make_settings
from .helpers import Mirror, wait_for
from .test_fanout import create, price


async def ready_status(port: int) -> int:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/readyz") as r:
        return r.status


async def test_store_killed_and_restarted() -> None:
    """Clients end consistent with the store after it dies and comes back empty; /readyz is
    red while it is down."""
    port = free_port()
    server = EmbeddedValkey(port=port).start()
    try:
        async with Worker(make_settings(server.url), server.url, reuse_port=False) as w:
            for m in ("m1", "m2"):
                await w.store.apply(create(m))
            c = await Mirror.open(f"ws://127.0.0.1:{w.ws_port}/ws")
            await c.send({"op": "subscribe", "markets": ["m1", "m2"]})
            await wait_for(lambda: len(c.markets) == 2)
            old_epoch = c.markets["m1"].epoch
            server.stop()
            await wait_for(lambda: not w.hub.ready)
            assert await ready_status(w.http_port) == 503
            server = EmbeddedValkey(port=port).start()
            await wait_for(lambda: w.hub.ready, 20)
            await w.store.apply(create("m1"))
            for i in range(5):
                await w.store.apply(price("m1", 30000 + i))
            truth = await w.store.get("m1")
            assert truth is not None
            assert truth.epoch != old_epoch
            await wait_for(lambda: c.markets.get("m1") == truth, 20, "m1 re-created")
            await wait_for(lambda: "m2" not in c.markets, 20, "m2 gone")
            assert await ready_status(w.http_port) == 200
            await c.close()
    finally:
        server.stop()


async def test_multi_worker_serve_and_sigterm(valkey_url: str, redis_client: Any) -> None:
    """`serve --workers 2` shares one port; clients over both converge; SIGTERM sends 1001
    and the process exits in time."""
    ws_port, http_port = free_port(), free_port()
    env = {**os.environ, "ODDSFEED_AUTH__ANONYMOUS_READ": "true",
           "ODDSFEED_FANOUT__IP_CONNECT_PER_S": "10000", "ODDSFEED_LOG__FORMAT": "json"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "oddsfeed", "serve", "--workers", "2", "--redis-url", valkey_url,
         "--ws-port", str(ws_port), "--http-port", str(http_port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = await Store.connect(valkey_url)
    clients: list[Mirror] = []
    try:
        async def up() -> bool:
            try:
                return await ready_status(http_port) == 200
            except aiohttp.ClientError:
                return False

        deadline = asyncio.get_running_loop().time() + 30
        while not await up():
            assert asyncio.get_running_loop().time() < deadline, "serve did not come up"
            await asyncio.sleep(0.1)
        await store.apply(create("m1"))
        for _ in range(20):
            c = await Mirror.open(f"ws://127.0.0.1:{ws_port}/ws")
            await c.send({"op": "subscribe", "markets": ["m1"]})
            clients.append(c)
        await wait_for(lambda: all("m1" in c.markets for c in clients), 20)
        sessions = {c.ops("hello")[0]["session"].split("-")[0] for c in clients}
        for i in range(50):
            await store.apply(MarketUpdate(market="m1", selections={"h": {"price": 20000 + i}}))
        truth = await store.get("m1")
        await wait_for(lambda: all(c.markets["m1"] == truth for c in clients), 20)
        proc.send_signal(signal.SIGTERM)
        await wait_for(lambda: all(c.closed is not None for c in clients), 10, "1001 closes")
        assert {c.ws.close_code for c in clients} == {1001}
        assert await asyncio.to_thread(proc.wait, 10) == 0
        assert len(sessions) >= 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await store.close()
