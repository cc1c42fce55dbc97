"""`oddsfeed serve --workers 2` as a real process: clients spread over both workers by
SO_REUSEPORT converge, and SIGTERM closes them with 1001 and exits in time."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import psutil

from oddsfeed.embedded import free_port
from oddsfeed.fanout import writer as writer_module
from oddsfeed.store import Store

from .builders import create, random_update
from .mirror import Mirror, wait_until


async def http_ok(port: int) -> bool:
    try:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/readyz") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


def worker_of_each_client(proc: subprocess.Popen[bytes], ws_port: int,
                          clients: list[Mirror]) -> dict[int, int]:
    """Client local port -> pid of the worker process holding its server side."""
    local = {c.ws.local_address[1] for c in clients}
    owner: dict[int, int] = {}
    for child in psutil.Process(proc.pid).children(recursive=True):
        for conn in child.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == ws_port and conn.raddr \
                    and conn.raddr.port in local:
                owner[conn.raddr.port] = child.pid
    return owner


async def test_two_workers_converge_and_stop_on_sigterm(flushed: str, tmp_path: Path) -> None:
    """With --workers 2, 20 clients land on both workers and converge under updates; SIGTERM
    closes every client with 1001 and the process exits 0 within 10 s."""
    ws_port, http_port = free_port(), free_port()
    env = {**os.environ, "ODDSFEED_AUTH__ANONYMOUS_READ": "true",
           "ODDSFEED_FANOUT__IP_CONNECT_PER_S": "10000", "ODDSFEED_LOG__FORMAT": "json",
           # serve refuses the demo config's published secret; any free admin port
           "ODDSFEED_AUTH__HS256_SECRET": "serve-test-secret-0123456789abcdef",
           "ODDSFEED_SERVER__ADMIN_PORT": "0"}
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "oddsfeed", "serve", "--workers", "2", "--redis-url", flushed,
         "--ws-port", str(ws_port), "--http-port", str(http_port)],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    store = await Store.connect(flushed)
    clients: list[Mirror] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not await http_ok(http_port):
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            assert loop.time() < deadline, "serve did not become ready"
            await asyncio.sleep(0.1)  # polling the readiness endpoint
        # both workers must be listening before the clients come
        await wait_until(lambda: sum(
            any(c.laddr and c.laddr.port == ws_port and c.status == psutil.CONN_LISTEN
                for c in child.net_connections(kind="tcp"))
            for child in psutil.Process(proc.pid).children()) == 2, 20, "both listening")

        mids = [f"m{i}" for i in range(10)]
        for mid in mids:
            await store.apply(create(mid))
        rng = random.Random(8)
        for i in range(20):
            c = await Mirror.open(f"ws://127.0.0.1:{ws_port}/ws", "json" if i % 2 else "msgpack")
            await c.request({"op": "subscribe", "markets": rng.sample(mids, 4)})
            clients.append(c)
        owners = worker_of_each_client(proc, ws_port, clients)
        assert len(owners) == 20
        assert len(set(owners.values())) == 2, "all clients landed on one worker"
        await wait_until(lambda: all(len(c.markets) == 4 for c in clients), 20, "snapshots")
        for _ in range(300):
            await store.apply(random_update(rng, rng.choice(mids)))
        truth = await store.get_many(mids)
        await wait_until(lambda: all(c.markets[m] == truth[m] for c in clients
                                     for m in c.markets), 20, "convergence")
        for c in clients:
            c.check_clean()

        proc.send_signal(signal.SIGTERM)
        await wait_until(lambda: all(c.done.is_set() for c in clients), 10, "clients closed")
        assert {c.close_code for c in clients} == {1001}
        assert await asyncio.to_thread(proc.wait, 10) == 0
        # each worker says whether the C send loop is in use (operations.md)
        ready = [json.loads(line) for line in (tmp_path / "serve.log").read_text().splitlines()
                 if '"worker ready"' in line]
        assert len(ready) == 2
        assert {r["c_send_loop"] for r in ready} == {writer_module.C_SEND_LOOP}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        await store.close()
