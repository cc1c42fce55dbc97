"""Runs the fan-out scenarios: one oddsfeed worker (`serve --workers 1`) and the naive
baseline under the same load in the same run, a saturation search, and idle memory; the
servers, driver and load generators they use are in ``harness``."""

from __future__ import annotations

import itertools
import random
import sys
import time
from typing import Any

import psutil

from ..common import environment, pct
from .harness import (
    Load,
    Server,
    busy_cpu_s,
    cpu_s,
    create_markets,
    drive,
    fd_limit,
    proc_cpu_s,
    profile,
)


def run_scenario(kind: str, redis_url: str, *, conns: int, markets: int, subs_per_conn: int,
                 rate: float, duration_s: float, procs: int = 2,
                 workers: int = 1, encoding: str = "msgpack",
                 valkey_pid: int | None = None, tree: str | None = None,
                 label: str | None = None,
                 extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """One measurement of one implementation at one offered rate; returns its figures
    (``workers``: oddsfeed worker processes, CPU and RSS summed over them; ``encoding``:
    what the clients ask for; ``valkey_pid``: the store process, whose own CPU per update
    is then reported; ``extra_env``: added to the oddsfeed server's environment)."""
    import uvloop

    mids = [f"f{i}" for i in range(markets)]
    if kind != "naive":
        create_markets(redis_url, mids)
    server = Server(kind, redis_url, extra_env=extra_env,
                    workers=workers if kind == "oddsfeed" else 1, tree=tree, markets=mids)
    try:
        rng = random.Random(9)
        subs = [rng.sample(mids, subs_per_conn) for _ in range(conns)]
        t_ramp = time.monotonic()
        load = Load("oddsfeed" if kind == "oddsfeed" else "naive", server.port, subs, procs,
                    encoding=encoding)
        ramp_s = time.monotonic() - t_ramp  # every connection open and holding its snapshots
        time.sleep(1.0)  # let snapshots drain
        rss = server.rss()
        load.start()
        cpu0, t0 = server.cpu_s(), time.monotonic()
        busy0 = psutil.cpu_times()
        gen0 = load.cpu_s()
        me = [psutil.Process()]  # the driver runs in this process
        drv0 = cpu_s(me)
        vk0 = proc_cpu_s(valkey_pid) if valkey_pid else 0.0
        profiler = profile(server, label or kind, rate, duration_s)
        apply_ms: list[float] = []
        sent = uvloop.run(drive(kind, redis_url, mids, rate, duration_s, apply_ms, encoding,
                                tree))
        elapsed = time.monotonic() - t0
        vk_s = proc_cpu_s(valkey_pid) - vk0 if valkey_pid else 0.0
        busy1 = psutil.cpu_times()
        drv_s = cpu_s(me) - drv0
        time.sleep(1.0)  # the tail
        server_s = server.cpu_s() - cpu0
        gen_s = load.cpu_s() - gen0
        results = load.finish()
        if profiler is not None:
            profiler.wait(30)
    finally:
        server.stop()
    lat = [x for r in results for x in r["lat_ms"]]
    received = sum(r["messages"] for r in results)
    expected = sent * conns * subs_per_conn / markets
    return {"impl": label or kind, "workers": workers if kind == "oddsfeed" else 1,
            "conns": load.connected, "markets": markets,
            "subs_per_conn": subs_per_conn, "offered_updates_per_s": rate, "updates": sent,
            "delivered_per_s": round(received / elapsed),
            "expected_per_s": round(expected / elapsed),
            "delivery_ratio": round(received / expected, 3) if expected else 0,
            "p50_ms": round(pct(lat, 50), 2), "p99_ms": round(pct(lat, 99), 2),
            "max_ms": round(max(lat, default=0), 2),
            # how long the apply (or publish) itself took: part of every latency above
            "apply_p50_ms": round(pct(apply_ms, 50), 2),
            "apply_p99_ms": round(pct(apply_ms, 99), 2),
            "server_cpu_s_per_s": round(server_s / elapsed, 3),
            "loadgen_cpu_s_per_s": round(gen_s / elapsed, 3),
            # the process applying (or publishing) the updates
            "driver_cpu_s_per_s": round(drv_s / elapsed, 3),
            # every process on the machine (server, load generators, driver, Valkey): near
            # the core count, latency also measures the machine's run queue
            "machine_busy_cores": round(busy_cpu_s(busy0, busy1) / elapsed, 2),
            "ramp_s": round(ramp_s, 1), "encoding": encoding,
            # the store's own CPU per update (the apply script or PUBLISH, and the pub/sub
            # writes to the server under test)
            "valkey_cpu_us_per_update": round(vk_s * 1e6 / sent, 1) if sent and valkey_pid
            else None,
            "deliveries_per_cpu_s": round(received / server_s) if server_s else 0,
            "frames": sum(r["frames"] for r in results),
            # live messages per frame the clients read (several share a `batch` frame)
            "messages_per_frame": round(received / max(1, sum(r["frames"] for r in results)), 2),
            "rss_mb": round(rss / 2**20, 1), "kb_per_conn": round(rss / 1024 / conns, 1),
            "gaps": sum(r["gaps"] for r in results)}


def idle_memory(redis_url: str, steps: list[int], kind: str = "oddsfeed") -> list[dict[str, Any]]:
    """RSS of one server holding 0, then each of ``steps`` idle subscribed connections.

    One process cannot hold more connections than its open-file limit: oddsfeed then runs
    as many workers as that takes (RSS summed over them, ``workers`` in each row); the
    naive server (a single process) stops at the limit."""
    per_process = int(fd_limit() * 0.8)
    if kind != "oddsfeed":
        steps = [n for n in steps if n <= per_process]
    workers = max(1, -(-max(steps, default=1) // per_process)) if kind == "oddsfeed" else 1
    mids = [f"f{i}" for i in range(100)]
    if kind == "oddsfeed":
        create_markets(redis_url, mids)
    server = Server(kind, redis_url, workers=workers)
    rows: list[dict[str, Any]] = []
    loads: list[Load] = []
    try:
        time.sleep(0.5)
        base = server.rss()
        rows.append({"impl": kind, "conns": 0, "workers": workers,
                     "rss_mb": round(base / 2**20, 1)})
        print(f"  idle memory {kind}: base {rows[0]['rss_mb']} MiB", file=sys.stderr)
        have = 0
        rng = random.Random(1)
        for n in steps:
            subs = [[rng.choice(mids)] for _ in range(n - have)]
            loads.append(Load(kind, server.port, subs, procs=2,
                              first_ip=loads[-1].next_ip if loads else 2))
            have = n
            time.sleep(1.5)
            rss = server.rss()
            held = sum(ld.connected for ld in loads)  # what actually connected
            rows.append({"impl": kind, "conns": held, "workers": workers,
                         "rss_mb": round(rss / 2**20, 1),
                         "kb_per_conn": round((rss - base) / 1024 / max(1, held), 1)})
            print(f"  idle memory {kind}: {n} conns {rows[-1]['rss_mb']} MiB "
                  f"({rows[-1]['kb_per_conn']} KB/conn)", file=sys.stderr)
        for prev, cur in itertools.pairwise(rows):
            if prev["conns"]:
                cur["marginal_kb_per_conn"] = round(
                    (cur["rss_mb"] - prev["rss_mb"]) * 1024 / (cur["conns"] - prev["conns"]), 1)
    finally:
        for ld in loads:
            ld.finish()
        server.stop()
    return rows


# The several-markets scenario's failure rule: p99 over this fails a step.
P99_LIMIT_MS = 100.0


def sustained(r: dict[str, Any], p99_limit_ms: float = P99_LIMIT_MS) -> bool:
    """p99 <= ``p99_limit_ms`` and >= 95% delivered; for oddsfeed also no gap. The naive
    baseline is at-most-once by design (Valkey drops a pub/sub reader that falls behind,
    broadcast skips busy connections): its gaps are reported, not held against its
    throughput."""
    ok = r["p99_ms"] <= p99_limit_ms and r["delivery_ratio"] >= 0.95
    return bool(ok and (r["gaps"] == 0 or r["impl"].startswith("naive")))


def run(quick: bool) -> dict[str, Any]:
    """The whole fan-out benchmark; returns rows for the report.

    1. Saturation at 1,000 connections (5 of 100 markets each): both implementations at
       rising update rates until each stops being sustained (p99 > 100 ms, < 95% delivered,
       or a gap); the headline compares each one's best sustained row.
    2. 10,000 connections at 100 updates/s (50,000 deliveries/s), both implementations
       (three runs each in full mode; the median-p99 run is reported).
    3. Idle memory against connection count (oddsfeed; the naive one too in full mode).
    """
    from oddsfeed.embedded import EmbeddedValkey

    conns = 1000
    duration = 3.0 if quick else 8.0
    rates = ([1000, 2000, 3000, 5000] if quick
             else [500, 1000, 1500, 2000, 2500, 3000, 4000, 5000, 6000, 8000])
    saturation: list[dict[str, Any]] = []
    with EmbeddedValkey(extra_args=("--maxclients", "100000")) as vk:
        env = environment(vk.url)
        for rate in rates:
            row = {}
            for kind in ("naive", "oddsfeed"):
                if any(r["impl"] == kind and not sustained(r) for r in saturation):
                    continue  # this one is past saturation already
                r = run_scenario(kind, vk.url, conns=conns, markets=100, subs_per_conn=5,
                                 rate=rate, duration_s=duration)
                if not sustained(r):
                    # the machine is shared: one noisy step must not end the search, so a
                    # failed step is measured once more and the second figure stands
                    _say(r, "(repeating the step)")
                    r = run_scenario(kind, vk.url, conns=conns, markets=100, subs_per_conn=5,
                                     rate=rate, duration_s=duration)
                    r["repeated"] = True
                r["scenario"] = "1k"
                saturation.append(r)
                row[kind] = r
                _say(r)
            if "naive" in row and "oddsfeed" in row and row["naive"]["deliveries_per_cpu_s"]:
                row["oddsfeed"]["ratio_per_cpu_same_rate"] = round(
                    row["oddsfeed"]["deliveries_per_cpu_s"]
                    / row["naive"]["deliveries_per_cpu_s"], 2)
            if not row:
                break
        rows = []
        for kind in ("naive", "oddsfeed"):
            ok = [r for r in saturation if r["impl"] == kind and sustained(r)]
            best = max(ok or [r for r in saturation if r["impl"] == kind],
                       key=lambda r: r["delivered_per_s"])
            rows.append({**best, "sustained": bool(ok)})
        base = rows[0]["deliveries_per_cpu_s"] or 1
        for r in rows:
            r["ratio_per_cpu"] = round(r["deliveries_per_cpu_s"] / base, 2)
        # 10,000 connections x 5 of 100 markets: each update reaches 500 of them. The tail
        # here swings with the shared machine (p99 10-60 ms in runs of the same code), so
        # full mode measures each implementation three times, interleaved, and reports the
        # run with the median p99 along with every run's p99.
        reps = 1 if quick else 3
        # full mode adds oddsfeed with 2 workers (SO_REUSEPORT, CPU and RSS summed): each
        # update's sends split over both cores, the deployment answer to this tail
        variants = [("naive", 1), ("oddsfeed", 1)] + ([] if quick else [("oddsfeed", 2)])
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {v: [] for v in variants}
        for _ in range(reps):
            for kind, workers in variants:
                r = run_scenario(kind, vk.url, conns=10_000, markets=100, subs_per_conn=5,
                                 rate=100, duration_s=duration, workers=workers)
                runs[(kind, workers)].append(r)
                _say(r, f"{workers} workers" if workers > 1 else "")
        big = []
        for (_kind, workers), done in runs.items():
            ranked = sorted(done, key=lambda r: r["p99_ms"])
            r = {**ranked[len(ranked) // 2], "runs": reps,
                 "scenario": "10k" if workers == 1 else f"10k, {workers} workers",
                 "p99_runs_ms": [x["p99_ms"] for x in done]}
            big.append(r)
        rows += big
        steps = [1000, 5000] if quick else [1000, 10_000, 50_000]
        memory = idle_memory(vk.url, steps)
        if not quick:
            memory += idle_memory(vk.url, steps, kind="naive")
    return {"scenario": "fanout",
            "params": {"conns": conns, "markets": 100, "subs_per_conn": 5,
                       "duration_s": duration, "rates": rates, "p99_limit_ms": P99_LIMIT_MS,
                       "c10k": {"conns": 10_000, "rate": 100}, "idle_steps": steps},
            "env": env, "rows": rows, "saturation": saturation, "memory": memory,
            "columns": ["impl", "scenario", "workers", "conns", "offered_updates_per_s",
                        "delivered_per_s",
                        "p50_ms", "p99_ms", "max_ms", "server_cpu_s_per_s",
                        "deliveries_per_cpu_s", "ratio_per_cpu", "ratio_per_cpu_same_rate",
                        "kb_per_conn", "gaps", "delivery_ratio", "machine_busy_cores",
                        "p99_runs_ms"]}


def _say(r: dict[str, Any], note: str = "") -> None:
    print(f"  {r['impl']} {r['conns']} conns {r['offered_updates_per_s']}/s -> "
          f"{r['delivered_per_s']} msg/s p50 {r['p50_ms']} p99 {r['p99_ms']} ms "
          f"cpu {r['server_cpu_s_per_s']} ({r['deliveries_per_cpu_s']}/cpu-s) "
          f"gaps {r['gaps']} machine {r['machine_busy_cores']} cores {note}", file=sys.stderr)
