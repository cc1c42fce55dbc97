"""Validation benchmark: bet slips validated per second and p50/p99 latency, 1-leg and
5-leg, over HTTP and over the WebSocket validate op, against one worker with the risk
signals off and on (``risk.enabled``; the 5-leg slips carry one stale leg, so the recorder
reads history too, and every accepted leg goes through the beat queue); off and on
alternate over several rounds and each row is the median; ``cost`` = 1 - on/off slips per
second; ``cpu_us``/``valkey_cpu_us``: CPU time per slip of this process (the worker and
the load generator) and of Valkey, up to the recorder's last leg; ``cpu_cost`` = on/off - 1
of their sum, the steadier figure on a shared machine. Baseline: a bare aiohttp handler
doing one Redis GET, in the same run.

    python -m bench.validation [--quick] [--json PATH]
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Coroutine, Iterable
from typing import Any

import aiohttp
from aiohttp import web
from redis.asyncio import Redis
from websockets.asyncio.client import connect

from oddsfeed.auth import Authenticator
from oddsfeed.core.model import MarketUpdate
from oddsfeed.embedded import EmbeddedValkey
from oddsfeed.settings import load_settings
from oddsfeed.worker import Worker

from .common import cli, environment, summary_ms

SECRET = "bench-secret-0123456789-0123456789"
# The longest a slip's answer may take: past it the run fails rather than hang (a slip is
# answered in milliseconds; a store outage fails it within the store's socket timeout).
REPLY_TIMEOUT_S = 30.0


class BenchError(Exception):
    """A slip the server refused, or did not answer within REPLY_TIMEOUT_S."""


async def _all(workers: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run the load workers together; the first that fails cancels the rest (no worker is
    left waiting on a server the run has stopped) and its error ends the run."""
    tasks = [asyncio.ensure_future(w) for w in workers]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _answer(ws: Any, request_id: int) -> dict[str, Any]:
    """The ``validation`` reply to ``request_id``, alone or inside a ``batch`` frame; an
    ``error`` for it, or no answer within REPLY_TIMEOUT_S, raises BenchError (the server's
    answer to a slip is either, and waiting for a validation after an error never ends)."""
    try:
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            while True:
                msg = json.loads(await ws.recv())
                for item in msg.get("items", []) if msg.get("op") == "batch" else [msg]:
                    if item.get("id") != request_id:
                        continue
                    if item.get("op") == "validation":
                        return dict(item)
                    if item.get("op") == "error":
                        raise BenchError(f"validate {request_id} answered error "
                                         f"{item.get('code')}: {item.get('message')}")
    except TimeoutError:
        raise BenchError(f"validate {request_id} not answered within {REPLY_TIMEOUT_S} s"
                         ) from None


async def _http(url: str, body: Any, n: int, conc: int, headers: dict[str, str]
                ) -> dict[str, Any]:
    lat: list[float] = []
    it = iter(range(n))
    timeout = aiohttp.ClientTimeout(total=REPLY_TIMEOUT_S)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as s:
        async def worker() -> None:
            for _ in it:
                t0 = time.perf_counter()
                async with s.post(url, json=body) as r:
                    text = await r.text()
                    if r.status != 200:
                        raise BenchError(f"validate answered {r.status}: {text[:200]}")
                lat.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await _all(worker() for _ in range(conc))
        elapsed = time.perf_counter() - t0
    return {"per_s": round(n / elapsed), **summary_ms(lat)}


async def _ws(url: str, legs: Any, n: int, conc: int) -> dict[str, Any]:
    lat: list[float] = []
    it = iter(range(n))

    async def worker() -> None:
        async with connect(url, subprotocols=["oddsfeed.v1.json"]) as ws:  # type: ignore[list-item]
            await ws.recv()
            for i in it:
                t0 = time.perf_counter()
                await ws.send(json.dumps({"op": "validate", "id": i, "legs": legs}))
                await _answer(ws, i)
                lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await _all(worker() for _ in range(conc))
    elapsed = time.perf_counter() - t0
    return {"per_s": round(n / elapsed), **summary_ms(lat)}


async def _valkey_cpu_s(r: Redis) -> float:
    info = await r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _settled(w: Worker, r: Redis) -> None:
    """Wait (bounded) until the recorder has recorded every slip and judged every leg."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while w.risk is not None and loop.time() < deadline:
        pipe = r.pipeline(transaction=False)
        for shard in range(w.settings.risk.due_shards):
            pipe.zcard(f"of:{{rdue:{shard}}}")
        if w.risk.pending == 0 and sum(await pipe.execute()) == 0:
            return
        await asyncio.sleep(0.1)


async def _round(vk_url: str, settings: Any, risk_on: bool, k: int, transport: str, n: int,
                 conc: int, token: str) -> dict[str, Any]:
    """One measured run; besides throughput and latency, the CPU time per slip of this
    process (server and load generator) and of Valkey, up to the recorder's last leg."""
    risk = settings.model_copy(update={"risk": settings.risk.model_copy(
        update={"enabled": risk_on})})
    r = Redis.from_url(vk_url)
    async with Worker(risk, vk_url, reuse_port=False) as w:
        legs = [{"market": f"v{i}", "selection": "h", "price": 2.4 if i == 4 else 2.5}
                for i in range(k)]
        cpu0, vk0 = time.process_time(), await _valkey_cpu_s(r)
        if transport == "http":
            res = await _http(f"http://127.0.0.1:{w.http_port}/v1/bets/validate",
                              {"legs": legs}, n, conc, {"Authorization": f"Bearer {token}"})
        else:
            res = await _ws(f"ws://127.0.0.1:{w.ws_port}/ws?token={token}", legs, n, conc)
        await _settled(w, r)
        cpu, vk = time.process_time() - cpu0, await _valkey_cpu_s(r) - vk0
    await r.aclose()
    return {**res, "cpu_us": round(cpu / n * 1e6, 1), "valkey_cpu_us": round(vk / n * 1e6, 1)}


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


async def run(quick: bool) -> dict[str, Any]:
    n = 2000 if quick else 4000
    rounds = 3 if quick else 5
    conc = 32
    rows = []
    with EmbeddedValkey() as vk:
        env = environment(vk.url)
        # A 1 s beat window (the default sweep every 0.5 s): the accepted legs are judged
        # within the measured runs, waiting for the last of them adds only idle time.
        settings = load_settings(None, {}, {"server.ws_port": 0, "server.http_port": 0,
                                            "auth.hs256_secret": SECRET,
                                            "fanout.rate_limit_per_s": 1e6,
                                            "fanout.rate_limit_burst": 10**6,
                                            "risk.beat_window_ms": 1000})
        token = Authenticator(settings.auth).mint("bench", ["odds:read", "bets:validate"],
                                                  ttl_s=3600, now_s=int(time.time()))
        # baseline: a bare aiohttp handler doing one GET
        r = Redis.from_url(vk.url)
        await r.set("k", b"x" * 200)

        async def bare(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(body=await r.get("k"))

        app = web.Application()
        app.router.add_post("/", bare)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        base = await _http(f"http://127.0.0.1:{port}/", {}, n, conc, {})
        await runner.cleanup()
        await r.aclose()
        rows.append({"impl": "baseline aiohttp + 1 GET", "legs": 1, "transport": "http", **base,
                     "ratio": 1.0})
        async with Worker(settings, vk.url, reuse_port=False) as w:
            for i in range(5):
                await w.store.apply(MarketUpdate(market=f"v{i}", fields={
                    "event": "e", "sport": "s", "name": "n"},
                    selections={"h": {"name": "H", "price": 25000}}, create=True))
        # Off and on alternate (off-on, on-off, ...) so drift on the shared machine hits both
        # alike; each row is the median of its rounds, cost = 1 - on/off per_s.
        for k in (1, 5):
            for transport in ("http", "websocket"):
                got: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
                for i in range(rounds):
                    for risk_on in ((False, True) if i % 2 == 0 else (True, False)):
                        got[risk_on].append(await _round(vk.url, settings, risk_on, k,
                                                         transport, n, conc, token))
                med = {on: {key: _median([g[key] for g in got[on]])
                            for key in ("per_s", "p50_ms", "p99_ms", "cpu_us", "valkey_cpu_us")}
                       for on in got}
                for risk_on in (False, True):
                    row = {"impl": "oddsfeed", "risk": risk_on, "legs": k,
                           "transport": transport, **med[risk_on],
                           "ratio": round(med[risk_on]["per_s"] / base["per_s"], 2)}
                    if risk_on:
                        row["cost"] = f"{1 - med[True]['per_s'] / med[False]['per_s']:.1%}"
                        total = {on: med[on]["cpu_us"] + med[on]["valkey_cpu_us"] for on in med}
                        row["cpu_cost"] = f"{total[True] / total[False] - 1:.1%}"
                    rows.append(row)
    return {"scenario": "validation",
            "params": {"requests": n, "concurrency": conc, "rounds": rounds},
            "env": env, "rows": rows,
            "columns": ["impl", "risk", "legs", "transport", "per_s", "p50_ms", "p99_ms",
                        "ratio", "cost", "cpu_us", "valkey_cpu_us", "cpu_cost"]}


def main() -> None:
    cli("validation", run, __doc__)


if __name__ == "__main__":
    main()
