"""Store benchmark: applies per second through the one atomic path, and p50/p99 apply
latency, on a single server and on a 3-primary cluster, against a plain HSET + SPUBLISH
pipeline baseline in the same run; the applies with ``auto_pipeline`` off (one client call
per apply) and on (the applies of one loop turn in one pipeline), and on with short replies
(the market's head instead of its state, as ingest and ``POST /v1/odds`` apply). On a single
server a batch of applies is one call of the apply script. ``client_us_per_op`` is this
process's CPU per operation, ``valkey_us_per_op`` the Valkey process's (single server only).

    python -m bench.store [--quick] [--json PATH]
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import psutil
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from oddsfeed.core.model import MarketUpdate
from oddsfeed.embedded import EmbeddedCluster, EmbeddedValkey
from oddsfeed.store import Store

from .common import cli, environment, summary_ms


def _cpu(server: psutil.Process | None) -> float:
    if server is None:
        return 0.0
    t = server.cpu_times()
    return float(t.user + t.system)


async def _drive(call: Any, n: int, concurrency: int, server: psutil.Process | None = None
                 ) -> dict[str, Any]:
    lat: list[float] = []
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            t0 = time.perf_counter()
            await call(i)
            lat.append(time.perf_counter() - t0)

    t0, cpu0, server0 = time.perf_counter(), time.process_time(), _cpu(server)
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    server_cpu = _cpu(server) - server0
    # The client's CPU per operation (this process; Valkey runs in its own): steadier than
    # the rate on shared cores, where the rate also moves with what the neighbours run.
    return {"ops": n, "seconds": round(elapsed, 3), "ops_per_s": round(n / elapsed),
            "client_us_per_op": round(cpu / n * 1e6, 1),
            **({"valkey_us_per_op": round(server_cpu / n * 1e6, 1)} if server else {}),
            **summary_ms(lat)}


async def bench_store(url: str, *, cluster: bool, n: int, markets: int,
                      concurrency: int, auto_pipeline: bool = True, short: bool = False,
                      server: psutil.Process | None = None) -> dict[str, Any]:
    store = await Store.connect(url, cluster=cluster, auto_pipeline=auto_pipeline)
    for m in range(markets):
        await store.apply(MarketUpdate(market=f"b{m}", fields={
            "event": f"e{m % 10}", "sport": "soccer", "name": "bench"},
            selections={"h": {"name": "H", "price": 20000}, "a": {"name": "A", "price": 30000}},
            create=True, replace=True))
    rng = random.Random(1)

    async def apply(i: int) -> None:
        await store.apply(MarketUpdate(market=f"b{rng.randrange(markets)}",
                                       selections={"h": {"price": 11000 + i % 80000}}),
                          short=short)

    res = await _drive(apply, n, concurrency, server)
    await store.close()
    return res


async def bench_baseline(url: str, *, cluster: bool, n: int, markets: int,
                         concurrency: int, server: psutil.Process | None = None
                         ) -> dict[str, Any]:
    client: Any = RedisCluster.from_url(url) if cluster else Redis.from_url(url)
    rng = random.Random(1)

    async def write(i: int) -> None:
        m = rng.randrange(markets)
        pipe = client.pipeline(transaction=False)
        pipe.hset(f"base:{{{m}}}", "h", 11000 + i % 80000)
        pipe.execute_command("SPUBLISH", f"base:{{{m}}}:c", b"x" * 60)
        await pipe.execute()

    res = await _drive(write, n, concurrency, server)
    await client.aclose()
    return res


async def run(quick: bool) -> dict[str, Any]:
    n = 5_000 if quick else 50_000
    params = {"updates": n, "markets": 100, "concurrency": 64}
    rows: list[dict[str, Any]] = []
    env: dict[str, Any] = {}
    with EmbeddedValkey() as single, EmbeddedCluster(n_primaries=3) as cl:
        env = environment(single.url)
        for scenario, url, cluster in (("single", single.url, False),
                                       ("cluster-3", cl.url, True)):
            server = None if cluster else psutil.Process(single.pid)
            base = await bench_baseline(url, cluster=cluster, n=n, markets=100, concurrency=64,
                                        server=server)
            rows.append({"scenario": scenario, "impl": "baseline HSET+SPUBLISH", **base,
                         "ratio": 1.0})
            for auto, short in ((False, False), (True, False), (True, True)):
                ours = await bench_store(url, cluster=cluster, n=n, markets=100,
                                         concurrency=64, auto_pipeline=auto, short=short,
                                         server=server)
                rows.append({"scenario": scenario,
                             "impl": f"oddsfeed apply (auto_pipeline {'on' if auto else 'off'}"
                                     f"{', short replies' if short else ''})",
                             **ours, "ratio": round(ours["ops_per_s"] / base["ops_per_s"], 2)})
    return {"scenario": "store", "params": params, "env": env, "rows": rows,
            "columns": ["scenario", "impl", "ops_per_s", "client_us_per_op", "valkey_us_per_op",
                        "p50_ms", "p99_ms", "ratio"]}


def main() -> None:
    cli("store", run, __doc__)


if __name__ == "__main__":
    main()
