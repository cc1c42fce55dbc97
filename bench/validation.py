"""Validation benchmark: bet slips validated per second and p50/p99 latency, 1-leg and
5-leg, over HTTP and over the WebSocket validate op, against one worker with the risk
signals off and on (``risk.enabled``; the 5-leg slips carry one stale leg, so the recorder
reads history too); baseline: a bare aiohttp handler doing one Redis GET, in the same run.

    python -m bench.validation [--quick] [--json PATH]
"""

from __future__ import annotations

import asyncio
import json
import time
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


async def _http(url: str, body: Any, n: int, conc: int, headers: dict[str, str]
                ) -> dict[str, Any]:
    lat: list[float] = []
    it = iter(range(n))
    async with aiohttp.ClientSession(headers=headers) as s:
        async def worker() -> None:
            for _ in it:
                t0 = time.perf_counter()
                async with s.post(url, json=body) as r:
                    await r.read()
                    assert r.status == 200
                lat.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conc)))
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
                while json.loads(await ws.recv()).get("op") != "validation":
                    pass
                lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    elapsed = time.perf_counter() - t0
    return {"per_s": round(n / elapsed), **summary_ms(lat)}


async def run(quick: bool) -> dict[str, Any]:
    n = 2000 if quick else 20000
    conc = 32
    rows = []
    with EmbeddedValkey() as vk:
        env = environment(vk.url)
        settings = load_settings(None, {}, {"server.ws_port": 0, "server.http_port": 0,
                                            "auth.hs256_secret": SECRET,
                                            "fanout.rate_limit_per_s": 1e6,
                                            "fanout.rate_limit_burst": 10**6})
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
        for risk_on in (False, True):
            risk = settings.model_copy(update={"risk": settings.risk.model_copy(
                update={"enabled": risk_on})})
            async with Worker(risk, vk.url, reuse_port=False) as w:
                for i in range(5):
                    await w.store.apply(MarketUpdate(market=f"v{i}", fields={
                        "event": "e", "sport": "s", "name": "n"},
                        selections={"h": {"name": "H", "price": 25000}}, create=True))
                for k in (1, 5):
                    legs = [{"market": f"v{i}", "selection": "h",
                             "price": 2.4 if i == 4 else 2.5} for i in range(k)]
                    res = await _http(f"http://127.0.0.1:{w.http_port}/v1/bets/validate",
                                      {"legs": legs}, n, conc,
                                      {"Authorization": f"Bearer {token}"})
                    rows.append({"impl": "oddsfeed", "risk": risk_on, "legs": k,
                                 "transport": "http", **res,
                                 "ratio": round(res["per_s"] / base["per_s"], 2)})
                    res = await _ws(f"ws://127.0.0.1:{w.ws_port}/ws?token={token}", legs, n,
                                    conc)
                    rows.append({"impl": "oddsfeed", "risk": risk_on, "legs": k,
                                 "transport": "websocket", **res,
                                 "ratio": round(res["per_s"] / base["per_s"], 2)})
    return {"scenario": "validation", "params": {"requests": n, "concurrency": conc},
            "env": env, "rows": rows,
            "columns": ["impl", "risk", "legs", "transport", "per_s", "p50_ms", "p99_ms",
                        "ratio"]}


def main() -> None:
    cli("validation", run, __doc__)


if __name__ == "__main__":
    main()
