"""The Python SDK (clients/python) against a real server, and `oddsfeed watch` in a pty."""

from __future__ import annotations

import asyncio
import os
import pty
import random
import subprocess
import sys
from typing import Any

from oddsfeed.embedded import free_port
from oddsfeed.worker import Worker
from oddsfeed_client import OddsFeedClient

from ..fanout.builders import create, price
from ..fanout.conftest import make_settings
from ..fanout.helpers import wait_for


async def test_sdk_converges_and_resumes(valkey_url: str, redis_client: Any) -> None:
    """The SDK mirror converges with the store, resumes after the server drops it, and
    repairs a forced gap."""
    settings = make_settings(valkey_url)
    async with Worker(settings, valkey_url, reuse_port=False) as w:
        for m in ("a", "b", "c"):
            await w.store.apply(create(m, "ev"))
        async with OddsFeedClient(f"ws://127.0.0.1:{w.ws_port}/ws") as client:
            changes: list[Any] = []
            client.on_change(changes.append)
            await client.subscribe(events=["ev"])
            await wait_for(lambda: len(client.markets) == 3)
            rng = random.Random(1)
            for _ in range(300):
                await w.store.apply(price(rng.choice("abc"), rng.randint(11000, 90000)))
            truth = await w.store.get_many(["a", "b", "c"])
            await wait_for(lambda: all(client.markets[m] == truth[m] for m in "abc"))
            # the server drops every connection: the client resumes from its positions
            for c in list(w.hub.clients):
                w.fanout.slow(c)
            await wait_for(lambda: client.reconnects >= 1 and client.connected)
            for _ in range(50):
                await w.store.apply(price("a", rng.randint(11000, 90000)))
            truth = await w.store.get_many(["a"])
            await wait_for(lambda: client.markets["a"] == truth["a"])
            # a gap forced on the client's mirror is repaired by the client rule
            local = client.markets["b"]
            from dataclasses import replace

            client.markets["b"] = replace(local, version=local.version - 1)
            await w.store.apply(price("b", 77000))
            truth = await w.store.get_many(["b"])
            await wait_for(lambda: client.markets["b"] == truth["b"])
            assert client.resyncs >= 1 or client.markets["b"] == truth["b"]
            assert any(ch.kind == "delta" for ch in changes)


async def test_sdk_survives_a_server_restart(valkey_url: str, redis_client: Any) -> None:
    """Stopping the server and starting a new one on the same port: the SDK reconnects."""
    port = free_port()
    settings = make_settings(valkey_url, **{"server.ws_port": port})
    async with Worker(settings, valkey_url, reuse_port=False) as w:
        await w.store.apply(create("r1"))
        client = OddsFeedClient(f"ws://127.0.0.1:{port}/ws", encoding="json")
        await client.start()
        await client.subscribe(markets=["r1"])
        await wait_for(lambda: "r1" in client.markets)
    async with Worker(settings, valkey_url, reuse_port=False) as w2:
        await w2.store.apply(price("r1", 45000))
        truth = await w2.store.get("r1")
        await wait_for(lambda: client.markets.get("r1") == truth, 20)
    await client.close()


def test_watch_shows_a_changing_price(valkey_url: str) -> None:
    """`oddsfeed watch` under a pseudo-terminal shows the market and a price that changes."""
    async def main() -> bytes:
        settings = make_settings(valkey_url)
        async with Worker(settings, valkey_url, reuse_port=False) as w:
            await w.store.apply(create("w1", h=25000))
            master, slave = pty.openpty()
            proc = subprocess.Popen(
                [sys.executable, "-m", "oddsfeed", "watch", "w1", "--url",
                 f"ws://127.0.0.1:{w.ws_port}/ws", "--seconds", "6"],
                stdin=slave, stdout=slave, stderr=slave, env={**os.environ, "COLUMNS": "120"})
            os.close(slave)
            out = b""
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 15
            changed = False
            while loop.time() < deadline:
                try:
                    chunk = await asyncio.wait_for(loop.run_in_executor(None, os.read, master,
                                                                        65536), 1)
                except (TimeoutError, OSError):
                    chunk = b""
                out += chunk
                if b"2.50" in out and not changed:
                    await w.store.apply(price("w1", 31000))
                    changed = True
                if changed and b"3.10" in out:
                    break
            proc.terminate()  # nobody drains the pty any more: do not let it block
            await asyncio.to_thread(proc.wait, 20)
            os.close(master)
            return out

    out = asyncio.run(main())
    assert b"2.50" in out
    assert b"3.10" in out
