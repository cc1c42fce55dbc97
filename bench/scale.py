"""The scale benchmark: deliveries per server CPU-second with 1, 2 and 3 fan-out nodes.

The deployment of tests/deploy/netns.py (each node `oddsfeed serve --workers 1` in its own
network namespace, a 3-primary Valkey cluster, HAProxy in front); the fan-out benchmark's
load generator (bench/fanout) holds the connections through HAProxy and checks every
delta for gaps; updates are applied to the cluster at a fixed rate. Server CPU is every
process of every node; HAProxy's CPU is reported beside it, not in it. Needs root (network
namespaces) and HAProxy.

    python -m bench.scale [--nodes 1,2,3] [--conns 3000] [--rate 200] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from oddsfeed.core.model import MarketUpdate
from oddsfeed.store import Store
from tests.deploy.netns import Topology

from .common import environment, pct, table, write_json
from .fanout.harness import SERVER_ENV, Load, cpu_s

COLUMNS = ["nodes", "conns", "conns_per_node", "delivered_per_s", "server_cpu_s_per_s",
           "deliveries_per_cpu_s", "haproxy_cpu_s_per_s", "p50_ms", "p99_ms", "gaps",
           "machine_busy_cores"]


async def create(url: str, mids: list[str]) -> None:
    store = await Store.connect(url, cluster=True)
    await store.apply_many([MarketUpdate(
        market=m, fields={"event": "e", "sport": "s", "name": m},
        selections={"h": {"name": "H", "price": 20000}}, create=True, replace=True)
        for m in mids])
    await store.close()


async def drive(url: str, mids: list[str], rate: float, seconds: float) -> int:
    """Apply ``rate`` price updates/s for ``seconds``, in 10 ms batches; returns how many."""
    store = await Store.connect(url, cluster=True)
    rng = random.Random(5)
    loop = asyncio.get_running_loop()
    start, sent = loop.time(), 0
    while (now := loop.time() - start) < seconds:
        due = int(now * rate) - sent
        if due > 0:
            ts = int(time.time() * 1000)
            await store.apply_many([MarketUpdate(
                market=rng.choice(mids), selections={"h": {"price": 11000 + (sent + i) % 80000}},
                ts=ts) for i in range(due)])
            sent += due
        await asyncio.sleep(0.01)
    await store.close()
    return sent


def node_processes(topo: Topology) -> list[psutil.Process]:
    """Every process of every running node (its parent and its worker)."""
    procs = []
    for node in topo.nodes:
        if node.proc is not None:
            parent = psutil.Process(node.proc.pid)
            procs += [parent, *parent.children(recursive=True)]
    return procs


def measure(n_nodes: int, conns: int, markets: int, subs: int, rate: float,
            seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="oddsfeed-scale-") as tmp, Topology(
            n_nodes=n_nodes, workdir=Path(tmp), ingest_rate=0,
            node_env={**SERVER_ENV, "ODDSFEED_LOG__FORMAT": "json"}) as topo:
        mids = [f"s{i}" for i in range(markets)]
        asyncio.run(create(topo.store_url, mids))
        rng = random.Random(9)
        load = Load("oddsfeed", topo.ws_port, [rng.sample(mids, subs) for _ in range(conns)])
        per_node = [topo.connections(n) for n in topo.nodes]
        time.sleep(1.0)  # snapshots drained
        servers = node_processes(topo)
        assert topo.haproxy is not None
        balancer = [psutil.Process(topo.haproxy.pid)]
        load.start()
        cpu0, hp0, busy0, t0 = cpu_s(servers), cpu_s(balancer), psutil.cpu_times(), time.monotonic()
        sent = asyncio.run(drive(topo.store_url, mids, rate, seconds))
        elapsed = time.monotonic() - t0
        busy1 = psutil.cpu_times()
        time.sleep(1.0)  # the tail
        server_s, haproxy_s = cpu_s(servers) - cpu0, cpu_s(balancer) - hp0
        results = load.finish()
    received = sum(r["messages"] for r in results)
    lat = [x for r in results for x in r["lat_ms"]]
    busy = (sum(busy1) - busy1.idle) - (sum(busy0) - busy0.idle)
    return {"nodes": n_nodes, "conns": load.connected, "conns_per_node": per_node,
            "updates": sent, "expected_per_s": round(sent * conns * subs / markets / elapsed),
            "delivered_per_s": round(received / elapsed),
            "server_cpu_s_per_s": round(server_s / elapsed, 3),
            "deliveries_per_cpu_s": round(received / server_s) if server_s else 0,
            "haproxy_cpu_s_per_s": round(haproxy_s / elapsed, 3),
            "p50_ms": round(pct(lat, 50), 2), "p99_ms": round(pct(lat, 99), 2),
            "gaps": sum(r["gaps"] for r in results),
            "machine_busy_cores": round(busy / elapsed, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", default="1,2,3")
    ap.add_argument("--conns", type=int, default=3000)
    ap.add_argument("--markets", type=int, default=200)
    ap.add_argument("--subs", type=int, default=10, help="markets per connection")
    ap.add_argument("--rate", type=float, default=200.0, help="updates/s")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--json", help="write the results here (default: bench/results/)")
    args = ap.parse_args()
    rows = []
    for n in (int(x) for x in args.nodes.split(",")):
        rows.append(measure(n, args.conns, args.markets, args.subs, args.rate, args.seconds))
        print(table(rows[-1:], COLUMNS), flush=True)
    print(table(rows, COLUMNS))
    out = write_json("scale", {"environment": environment(), "args": vars(args), "rows": rows},
                     args.json)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
