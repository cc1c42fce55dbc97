"""Fan-out benchmark: one oddsfeed worker (`serve --workers 1`) against a naive baseline
(websockets + redis-py pub/sub, one send per client per message), same load, same run.

C connections each subscribe to S of M markets; P updates/s go through the store (for
oddsfeed) or are published on Redis (for the baseline). Load generators are separate
processes on loopback; every received version is checked (loss and gaps are reported).
Figures: delivered messages/s, p50/p99/max latency apply -> receive, server CPU seconds per
second, deliveries per server CPU-second, RSS and KB per connection; a saturation search
raises P until p99 > 100 ms or deliveries < 95% of expected.

    python -m bench.fanout [--quick] [--json PATH]
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing as mp
import os
import random
import signal
import sys
import time
from typing import Any

import msgpack
import psutil

from .common import cli, environment, free_port, pct, spawn, wait_http

# ---------------------------------------------------------------- the naive baseline server

NAIVE = r'''
import asyncio, sys, msgpack, redis.asyncio as redis, uvloop
from websockets.asyncio.server import serve
subs = {}  # market -> set(ws)
async def handler(ws):
    mine = set()
    try:
        async for raw in ws:
            msg = msgpack.unpackb(raw)
            for m in msg.get("markets", []):
                subs.setdefault(m, set()).add(ws); mine.add(m)
    finally:
        for m in mine: subs.get(m, set()).discard(ws)
async def main(port, url):
    r = redis.Redis.from_url(url)
    ps = r.pubsub()
    await ps.psubscribe("naive:*")
    async with serve(handler, "127.0.0.1", port, compression=None):
        async for msg in ps.listen():
            if msg["type"] != "pmessage": continue
            m = msg["channel"].decode()[6:]
            for ws in list(subs.get(m, ())):
                try: await ws.send(msg["data"])
                except Exception: pass
uvloop.run(main(int(sys.argv[1]), sys.argv[2]))
'''

# ---------------------------------------------------------------- load generator (a process)


def _load_proc(url: str, kind: str, conns: int, subs: list[list[str]], duration_s: float,
               out: Any, ready: Any, go: Any) -> None:
    import uvloop
    from websockets.asyncio.client import connect

    lat: list[float] = []
    stats = {"messages": 0, "gaps": 0}

    async def one(markets: list[str]) -> None:
        last: dict[str, int] = {}
        if kind == "oddsfeed":
            ws = await connect(url, subprotocols=["oddsfeed.v1.msgpack"], max_size=None,  # type: ignore[list-item]
                               compression=None)
            await ws.send(msgpack.packb({"op": "subscribe", "markets": markets}))
        else:
            ws = await connect(url, max_size=None, compression=None)
            await ws.send(msgpack.packb({"markets": markets}))
        ready.put(1)
        try:
            async with asyncio.timeout(duration_s + 20):
                async for frame in ws:
                    msg = msgpack.unpackb(frame)
                    items = msg["items"] if msg.get("op") == "batch" else [msg]
                    now = time.time() * 1000
                    for it in items:
                        if kind == "oddsfeed":
                            if it.get("op") != "delta":
                                if it.get("op") == "snapshot":
                                    last[it["market"]["id"]] = it["market"]["version"]
                                continue
                            m, v, base = it["m"], it["v"], it["base"]
                            if m in last and base != last[m]:
                                stats["gaps"] += 1
                            # a conflated delta delivers every version from base+1 to v
                            stats["messages"] += v - base if m in last else 1
                            last[m] = v
                            if go.is_set():
                                lat.append((now - it["ts"]) / 1000)
                        else:
                            m, v = it["m"], it["v"]
                            if m in last and v != last[m] + 1:
                                stats["gaps"] += 1
                            last[m] = v
                            stats["messages"] += 1
                            if go.is_set():
                                lat.append((now - it["ts"]) / 1000)
        except TimeoutError:
            pass
        finally:
            await ws.close()

    async def main() -> None:
        tasks = [asyncio.create_task(one(subs[i])) for i in range(conns)]
        await asyncio.gather(*tasks, return_exceptions=True)

    with contextlib.suppress(Exception):
        uvloop.run(asyncio.wait_for(main(), duration_s + 60))
    out.put({"lat": lat[::max(1, len(lat) // 20000)], "n_lat": len(lat), **stats})


# ---------------------------------------------------------------- the run


async def _drive_updates(kind: str, redis_url: str, markets: list[str], rate: float,
                         duration_s: float, go: Any) -> int:
    """Apply (oddsfeed) or publish (baseline) ``rate`` updates/s for ``duration_s``."""
    from redis.asyncio import Redis

    from oddsfeed.model import MarketUpdate
    from oddsfeed.store import Store

    store = await Store.connect(redis_url) if kind == "oddsfeed" else None
    client = Redis.from_url(redis_url) if kind != "oddsfeed" else None
    versions = dict.fromkeys(markets, 0)
    rng = random.Random(5)
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    go.set()
    sem = asyncio.Semaphore(64)
    pending: set[asyncio.Task[Any]] = set()

    async def one(m: str, price: int) -> None:
        async with sem:
            now_ms = int(time.time() * 1000)
            if store is not None:
                await store.apply(MarketUpdate(market=m, selections={"h": {"price": price}},
                                               ts=now_ms))
            else:
                versions[m] += 1
                assert client is not None
                await client.publish(f"naive:{m}", msgpack.packb(
                    {"m": m, "v": versions[m], "ts": now_ms, "sel": {"h": {"price": price}}}))

    while loop.time() - start < duration_s:
        target = int((loop.time() - start) * rate)
        while sent < target:
            t = asyncio.create_task(one(rng.choice(markets), 11000 + sent % 80000))
            pending.add(t)
            t.add_done_callback(pending.discard)
            sent += 1
        await asyncio.sleep(0.002)
    await asyncio.gather(*pending)
    if store:
        await store.close()
    if client:
        await client.aclose()
    return sent


def run_scenario(kind: str, redis_url: str, *, conns: int, markets: int, subs_per_conn: int,
                 rate: float, duration_s: float, procs: int = 2) -> dict[str, Any]:
    """One measurement of one implementation; returns its figures."""
    port, http_port = free_port(), free_port()
    if kind == "oddsfeed":
        server = spawn(["-m", "oddsfeed", "serve", "--workers", "1", "--redis-url", redis_url,
                        "--ws-port", str(port), "--http-port", str(http_port)],
                       env={"ODDSFEED_AUTH__ANONYMOUS_READ": "true",
                            "ODDSFEED_FANOUT__IP_CONNECT_PER_S": "100000",
                            "ODDSFEED_FANOUT__MAX_CONNECTIONS": "100000",
                            "ODDSFEED_LOG__LEVEL": "warning"})
        wait_http(f"http://127.0.0.1:{http_port}/readyz")
        url = f"ws://127.0.0.1:{port}/ws"
        # the worker is a child of the supervisor
        proc = psutil.Process(server.pid)
        deadline = time.monotonic() + 10
        while not proc.children() and time.monotonic() < deadline:
            time.sleep(0.05)
        kids = [c for c in proc.children() if "resource_tracker" not in " ".join(c.cmdline())]
        target = max(kids, key=lambda c: c.memory_info().rss) if kids else proc
    else:
        server = spawn(["-c", NAIVE, str(port), redis_url])
        url = f"ws://127.0.0.1:{port}/ws"
        target = psutil.Process(server.pid)
        time.sleep(1.0)
    mids = [f"f{i}" for i in range(markets)]
    if kind == "oddsfeed":
        async def create() -> None:
            from oddsfeed.model import MarketUpdate
            from oddsfeed.store import Store

            s = await Store.connect(redis_url)
            for m in mids:
                await s.apply(MarketUpdate(market=m, fields={"event": "e", "sport": "s",
                                                             "name": m},
                                           selections={"h": {"name": "H", "price": 20000}},
                                           create=True, replace=True))
            await s.close()
        asyncio.run(create())
    rng = random.Random(9)
    subs = [rng.sample(mids, subs_per_conn) for _ in range(conns)]
    ctx = mp.get_context("spawn")
    out, ready, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    per = [conns // procs + (1 if i < conns % procs else 0) for i in range(procs)]
    workers = []
    offset = 0
    for n in per:
        p = ctx.Process(target=_load_proc, args=(url, kind, n, subs[offset:offset + n],
                                                  duration_s, out, ready, go))
        p.start()
        workers.append(p)
        offset += n
    for _ in range(conns):
        ready.get(timeout=120)
    time.sleep(1.0)  # let snapshots drain
    rss = target.memory_info().rss
    cpu0 = target.cpu_times()
    t0 = time.monotonic()
    sent = asyncio.run(_drive_updates(kind, redis_url, mids, rate, duration_s, go))
    elapsed = time.monotonic() - t0
    cpu1 = target.cpu_times()
    time.sleep(2.0)  # let the tail arrive
    results = [out.get(timeout=duration_s + 90) for _ in workers]
    for p in workers:
        p.join(timeout=30)
        if p.is_alive():
            p.kill()
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(15)
    except Exception:
        server.kill()
    cpu_s = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    lat = [x for r in results for x in r["lat"]]
    received = sum(r["messages"] for r in results)
    expected = sent * conns * subs_per_conn / markets
    return {"impl": kind, "conns": conns, "markets": markets, "subs_per_conn": subs_per_conn,
            "offered_updates_per_s": rate, "updates": sent,
            "delivered_per_s": round(received / elapsed),
            "expected_per_s": round(expected / elapsed),
            "delivery_ratio": round(received / expected, 3) if expected else 0,
            "p50_ms": round(pct(lat, 50) * 1000, 2), "p99_ms": round(pct(lat, 99) * 1000, 2),
            "max_ms": round(max(lat, default=0) * 1000, 2),
            "server_cpu_s_per_s": round(cpu_s / elapsed, 3),
            "deliveries_per_cpu_s": round(received / cpu_s) if cpu_s else 0,
            "rss_mb": round(rss / 2**20, 1), "kb_per_conn": round(rss / 1024 / conns, 1),
            "gaps": sum(r["gaps"] for r in results)}


def idle_memory(redis_url: str, conns: int) -> dict[str, Any]:
    """RSS of one worker holding ``conns`` idle subscribed connections."""
    res = run_scenario("oddsfeed", redis_url, conns=conns, markets=100, subs_per_conn=1,
                       rate=1, duration_s=2)
    return {"conns": conns, "rss_mb": res["rss_mb"], "kb_per_conn": res["kb_per_conn"]}


def run(quick: bool) -> dict[str, Any]:
    from oddsfeed.embedded import EmbeddedValkey

    conns = 1000
    duration = 3.0 if quick else 10.0
    rates = [100, 300, 600] if quick else [100, 300, 600, 1000, 2000, 3000]
    rows: list[dict[str, Any]] = []
    saturation: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    with EmbeddedValkey(extra_args=("--maxclients", "60000")) as vk:
        env = environment(vk.url)
        for kind in ("naive", "oddsfeed"):
            for rate in rates:
                r = run_scenario(kind, vk.url, conns=conns, markets=100, subs_per_conn=5,
                                 rate=rate, duration_s=duration)
                saturation.append(r)
                print(f"  {kind} {rate}/s -> {r['delivered_per_s']} msg/s p99 {r['p99_ms']} ms "
                      f"cpu {r['server_cpu_s_per_s']}", file=sys.stderr)
                if r["p99_ms"] > 100 or r["delivery_ratio"] < 0.95:
                    break
        for kind in ("naive", "oddsfeed"):
            ok = [r for r in saturation if r["impl"] == kind and r["p99_ms"] <= 100
                  and r["delivery_ratio"] >= 0.95]
            best = max(ok or [r for r in saturation if r["impl"] == kind],
                       key=lambda r: r["deliveries_per_cpu_s"])
            rows.append({**best, "sustained": bool(ok)})
        base = rows[0]["deliveries_per_cpu_s"] or 1
        for r in rows:
            r["ratio_per_cpu"] = round(r["deliveries_per_cpu_s"] / base, 2)
        for c in ([500, 1500] if quick else [1000, 5000, 10000]):
            memory.append(idle_memory(vk.url, c))
        for prev, cur in itertools.pairwise(memory):
            cur["marginal_kb_per_conn"] = round(
                (cur["rss_mb"] - prev["rss_mb"]) * 1024 / (cur["conns"] - prev["conns"]), 1)
    return {"scenario": "fanout", "params": {"conns": conns, "markets": 100,
                                             "subs_per_conn": 5, "duration_s": duration},
            "env": env, "rows": rows, "saturation": saturation, "memory": memory,
            "columns": ["impl", "offered_updates_per_s", "delivered_per_s", "p50_ms", "p99_ms",
                        "max_ms", "server_cpu_s_per_s", "deliveries_per_cpu_s", "ratio_per_cpu",
                        "kb_per_conn", "gaps", "delivery_ratio"]}


def main() -> None:
    cli("fanout", run, __doc__)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
