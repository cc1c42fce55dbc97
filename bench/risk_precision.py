"""Risk signal precision: the simulated feed and the simulated bettors (ingest/bettors.py:
a few sharp accounts, many normal ones) against one real worker for a while, per seed;
then ``GET /v1/risk/accounts`` ranks the accounts and precision at k (k = the number of
sharp accounts) is the share of sharp accounts among its top k.

    python -m bench.risk_precision [--quick] [--json PATH]
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from oddsfeed.auth import Authenticator
from oddsfeed.clock import now_ms
from oddsfeed.embedded import EmbeddedValkey
from oddsfeed.settings import load_settings
from oddsfeed.worker import Worker
from oddsfeed_ingest.bettors import BettorsConfig, run_bettors, sharp_subs
from oddsfeed_ingest.simulator import SimulatorConfig, run_simulator

from .common import cli, environment

SECRET = "bench-secret-0123456789-0123456789"


async def one_seed(url: str, seed: int, seconds: float, sharps: int, normals: int
                   ) -> dict[str, Any]:
    settings = load_settings(None, {}, {"server.ws_port": 0, "server.http_port": 0,
                                        "auth.hs256_secret": SECRET,
                                        "risk.windows_s": [3600]})
    auth = Authenticator(settings.auth)

    def token_for(sub: str) -> str:
        return auth.mint(sub, ["odds:read", "bets:validate"], ttl_s=3600,
                         now_s=int(time.time()))

    config = BettorsConfig(sharps=sharps, normals=normals, seed=seed)
    async with Worker(settings, url, reuse_port=False) as w:
        await w.store.client.flushall()
        stop = asyncio.Event()
        sim = asyncio.create_task(run_simulator(
            w.store, SimulatorConfig(events=4, seed=seed, rate_per_s=20.0), stop=stop,
            start_ms=now_ms()))
        bettors = asyncio.create_task(run_bettors(
            f"http://127.0.0.1:{w.http_port}", f"ws://127.0.0.1:{w.ws_port}/ws", token_for,
            config, stop=stop))
        await asyncio.sleep(seconds)
        stop.set()
        stats = await bettors
        sim.cancel()
        await asyncio.gather(sim, return_exceptions=True)
        if w.risk is not None:  # every slip answered so far in the counts
            await asyncio.wait_for(w.risk.drain(), 15)
        reader = auth.mint("bench", ["risk:read"], 60, int(time.time()))
        headers = {"Authorization": f"Bearer {reader}"}
        async with aiohttp.ClientSession() as http, http.get(
                f"http://127.0.0.1:{w.http_port}/v1/risk/accounts?window=3600&limit=1000",
                headers=headers) as r:
            ranked = (await r.json())["accounts"]
    k = max(sharps, 1)
    sharp = set(sharp_subs(config))
    top = [a["sub"] for a in ranked[:k]]
    scores = {a["sub"]: a["score"] for a in ranked}
    normal_scores = sorted((s for sub, s in scores.items() if sub not in sharp), reverse=True)
    return {"seed": seed, "k": k, "precision_at_k": round(len(sharp & set(top)) / k, 3),
            "accounts": len(ranked), "slips": sum(stats.sent.values()),
            "sharp_min_score": min((scores.get(s, 0.0) for s in sharp), default=0.0),
            "normal_max_score": normal_scores[0] if normal_scores else 0.0,
            "beats_sharp": sum(a["counts"]["beat"] for a in ranked if a["sub"] in sharp),
            "beats_normal": sum(a["counts"]["beat"] for a in ranked if a["sub"] not in sharp)}


async def run(quick: bool) -> dict[str, Any]:
    seeds = [1, 2, 3] if quick else [1, 2, 3, 4, 5]
    seconds = 10.0 if quick else 45.0
    sharps, normals = 3, 20
    rows = []
    with EmbeddedValkey() as vk:
        env = environment(vk.url)
        for seed in seeds:
            rows.append(await one_seed(vk.url, seed, seconds, sharps, normals))
    mean = round(sum(r["precision_at_k"] for r in rows) / len(rows), 3)
    rows.append({"seed": "mean", "k": sharps, "precision_at_k": mean})
    return {"scenario": "risk_precision",
            "params": {"seconds": seconds, "sharps": sharps, "normals": normals,
                       "events": 4, "rate_per_s": 20.0},
            "env": env, "rows": rows,
            "columns": ["seed", "k", "precision_at_k", "accounts", "slips", "sharp_min_score",
                        "normal_max_score", "beats_sharp", "beats_normal"]}


def main() -> None:
    cli("risk_precision", run, __doc__)


if __name__ == "__main__":
    main()
