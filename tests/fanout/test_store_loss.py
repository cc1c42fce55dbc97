"""The store killed and restarted (empty) under a running worker with subscribed clients:
/readyz goes red then green, and every client ends consistent with the store."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

from oddsfeed.core.errors import StoreError
from oddsfeed.embedded import EmbeddedValkey, free_port
from oddsfeed.worker import Worker

from .builders import create, price
from .conftest import make_settings, ws_url
from .mirror import Mirror, wait_until


async def readyz(port: int) -> int:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/readyz") as r:
        return r.status


async def test_store_restart_mid_stream() -> None:
    """While updates flow, the store dies and comes back empty: /readyz is 503 while it is
    down and 200 after; clients get snapshots of the re-created markets (new epochs), gone
    for the lost ones, and end equal to the store."""
    port = free_port()
    server = EmbeddedValkey(port=port).start()
    try:
        async with Worker(make_settings(server.url), server.url, reuse_port=False) as w:
            store = w.store
            mids = [f"m{i}" for i in range(6)]
            for mid in mids:
                await store.apply(create(mid, "ev" if mid in ("m4", "m5") else "e1"))
            clients = [await Mirror.open(ws_url(w), "json" if i % 2 else "msgpack")
                       for i in range(8)]
            for c in clients:
                await c.request({"op": "subscribe", "markets": mids[:4], "events": ["ev"]})
            await wait_until(lambda: all(len(c.markets) == 6 for c in clients))
            old_epochs = {m: s.epoch for m, s in clients[0].markets.items()}
            assert await readyz(w.http_port) == 200

            stop = asyncio.Event()
            failures = 0

            async def writer() -> None:
                nonlocal failures
                i = 0
                while not stop.is_set():
                    i += 1
                    try:
                        await store.apply(price(mids[i % 6], 20_000 + i))
                    except StoreError:
                        failures += 1
                        await asyncio.sleep(0.01)  # pacing while the store is away

            task = asyncio.get_running_loop().create_task(writer())
            await wait_until(lambda: all(c.markets["m0"].version > 5 for c in clients),
                             what="live before the loss")
            server.stop()
            await wait_until(lambda: not w.hub.ready, what="hub notices the loss")
            assert await readyz(w.http_port) == 503
            await wait_until(lambda: failures > 0, what="writes fail while down")

            server = EmbeddedValkey(port=port).start()
            await wait_until(lambda: w.hub.ready, 20, "hub reconnected")
            assert await readyz(w.http_port) == 200
            # the feed re-creates some markets; m3 and m5 stay lost
            for mid in ("m0", "m1", "m2", "m4"):
                await store.apply(create(mid, "ev" if mid == "m4" else "e1"))
            await wait_until(lambda: all(
                c.markets.get("m0") is not None and c.markets["m0"].epoch != old_epochs["m0"]
                and c.markets["m0"].version >= 3 for c in clients), 20,
                "live deltas of the re-created market")
            stop.set()
            await task
            truth = await store.get_many(mids)
            assert truth["m3"] is None
            assert truth["m5"] is None

            def consistent() -> bool:
                return all(c.markets.get(m) == truth[m] for c in clients for m in mids)

            await wait_until(consistent, 20, "clients consistent with the restarted store")
            for c in clients:
                for m in ("m0", "m1", "m2", "m4"):
                    assert c.markets[m].epoch != old_epochs[m]
                assert not c.book.anomalies
                c.check_clean()
                await c.close()
    finally:
        with contextlib.suppress(Exception):
            server.stop()
