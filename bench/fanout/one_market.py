"""Fan-out per message: each connection subscribed to exactly one market, JSON.

With one market per connection an update reaches few subscribers (10 at 1,000 connections
on 100 markets), so what each update costs the server once (reading it from the store,
the continuity check, encoding, framing) weighs more than what each delivery costs. Both
servers run under the same load in the same run, with the compiled load generator:

1. Saturation at 1,000 connections x 1 of 100 markets: rising update rates until a step
   is not sustained (the issue's rule for this workload: under 95% delivered or p99 over
   ``P99_LIMIT_MS``, 250 ms, or a gap; the several-markets scenario keeps its 100 ms); the
   headline compares each one's best sustained row per server CPU-second.
2. Moderate load: 5,000 connections x 1 of 100 markets at 200 updates/s (10,000
   deliveries/s), interleaved runs (three in full mode), the median-p99 run reported.

Every row carries ``valkey_cpu_us_per_update``, the store process's own CPU per update, and
``apply_p50_ms``/``apply_p99_ms``, how long the driver's write took (oddsfeed and
naive-script: the apply script; naive: a PUBLISH), which is part of every latency figure of
that row. ``naive`` is fed by a bare PUBLISH of a prebuilt JSON message; ``naive-script``
is the same server fed as oddsfeed is, by the apply script, listening with redis-py on the
channels the script publishes on and broadcasting each delta's JSON body: the issue's
workload, where latency includes the script's time. Ratios are against both
(``ratio_per_cpu``, ``ratio_per_cpu_vs_script``, ``p99_vs_naive``, ``p99_vs_naive_script``).
With ``BENCH_AB_TREE=DIR`` (a directory holding another checkout's ``oddsfeed`` package,
e.g. from ``git archive``), that oddsfeed runs too, as ``oddsfeed-base``, interleaved with
the others at every step: an A/B comparison within one run. ``BENCH_AB_ENV="K=V K2=V2"``
adds settings to oddsfeed-base's environment only (e.g. the same code with another
``ODDSFEED_FANOUT__BATCH_WINDOW_MAX_MS``). ``BENCH_RATES="4000 8000"`` measures every
server at exactly those rates (no stop at the first failed step, no repeat: CPU per
delivery at equal rates on a busy machine), ``BENCH_MODERATE_RUNS=N`` sets the moderate
load's runs per server (0: none), ``BENCH_IMPLS="oddsfeed oddsfeed-base"`` measures only
those servers (an A/B of CPU per delivery without the naive rows).

    python -m bench.fanout.one_market [--quick] [--json PATH]
"""

from __future__ import annotations

import os
from typing import Any

from .runner import _say, run_scenario, sustained

ENCODING = "json"
MARKETS = 100
# A step whose p99 exceeds this is not sustained (this workload's failure rule).
P99_LIMIT_MS = 250.0


def ok(r: dict[str, Any]) -> bool:
    """Whether row ``r`` is sustained under this scenario's rule."""
    return sustained(r, P99_LIMIT_MS)


def impls() -> list[str]:
    """The servers measured: naive fed by PUBLISH, naive fed by the apply script
    (``naive-script``), oddsfeed, and oddsfeed-base with BENCH_AB_TREE."""
    every = ["naive", "naive-script", "oddsfeed"] + (
        ["oddsfeed-base"] if os.environ.get("BENCH_AB_TREE") else [])
    chosen = os.environ.get("BENCH_IMPLS", "").split()
    return [k for k in every if k in chosen] if chosen else every


def saturation(redis_url: str, valkey_pid: int, rates: list[int],
               duration_s: float, fixed: bool = False) -> list[dict[str, Any]]:
    """Both servers at each of ``rates`` until each stops being sustained (a failed step is
    measured once more, the second figure stands; ``fixed``: every rate once, whatever
    fails); returns every measured row."""
    rows: list[dict[str, Any]] = []
    for rate in rates:
        step: dict[str, dict[str, Any]] = {}
        for kind in impls():
            if not fixed and any(r["impl"] == kind and not ok(r) for r in rows):
                continue
            r = _one(kind, redis_url, valkey_pid, 1000, rate, duration_s)
            if not fixed and not ok(r):
                _say(r, "(repeating the step)")
                r = _one(kind, redis_url, valkey_pid, 1000, rate, duration_s)
                r["repeated"] = True
            r["scenario"] = "1k x 1 market"
            r["p99_limit_ms"] = P99_LIMIT_MS
            rows.append(r)
            step[kind] = r
            _say(r, "" if ok(r) else f"not sustained (p99 limit {P99_LIMIT_MS:g} ms)")
        naive = step.get("naive", {}).get("deliveries_per_cpu_s")
        scripted = step.get("naive-script", {}).get("deliveries_per_cpu_s")
        for kind, r in step.items():
            if naive and kind != "naive":
                r["ratio_per_cpu_same_rate"] = round(r["deliveries_per_cpu_s"] / naive, 2)
            if scripted and not kind.startswith("naive"):
                r["ratio_per_cpu_same_rate_vs_script"] = round(
                    r["deliveries_per_cpu_s"] / scripted, 2)
        if not step:
            break
    return rows


def moderate(redis_url: str, valkey_pid: int, reps: int,
             duration_s: float) -> list[dict[str, Any]]:
    """5,000 connections at 200 updates/s (10,000 deliveries/s), ``reps`` interleaved runs
    per server; returns each server's median-p99 run with every run's p99."""
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in impls()}
    for _ in range(reps):
        for kind in runs:
            r = _one(kind, redis_url, valkey_pid, 5000, 200, duration_s)
            runs[kind].append(r)
            _say(r, "(moderate)")
    out = []
    for done in runs.values():
        ranked = sorted(done, key=lambda r: r["p99_ms"])
        out.append({**ranked[len(ranked) // 2], "runs": reps, "scenario": "5k x 1 market, 10k/s",
                    "p99_runs_ms": [x["p99_ms"] for x in done]})
    return out


def _one(label: str, redis_url: str, valkey_pid: int, conns: int, rate: float,
         duration_s: float) -> dict[str, Any]:
    base = label == "oddsfeed-base"
    env = dict(kv.split("=", 1) for kv in os.environ.get("BENCH_AB_ENV", "").split())
    return run_scenario("oddsfeed" if base else label, redis_url, conns=conns,
                        markets=MARKETS, subs_per_conn=1, rate=rate, duration_s=duration_s,
                        encoding=ENCODING, valkey_pid=valkey_pid,
                        tree=os.environ["BENCH_AB_TREE"] if base else None, label=label,
                        extra_env=env if base else None)


def run(quick: bool) -> dict[str, Any]:
    """The whole one-market-per-connection benchmark; returns rows for the report."""
    from oddsfeed.embedded import EmbeddedValkey

    from ..common import environment

    duration = 3.0 if quick else 8.0
    rates = ([2000, 4000, 8000, 12000, 16000] if quick
             else [2000, 4000, 6000, 8000, 10000, 12000, 14000, 16000, 20000, 24000])
    if os.environ.get("BENCH_RATES"):
        rates = [int(x) for x in os.environ["BENCH_RATES"].split()]
    reps = int(os.environ.get("BENCH_MODERATE_RUNS", 1 if quick else 3))
    with EmbeddedValkey(extra_args=("--maxclients", "100000")) as vk:
        env = environment(vk.url)
        sat = saturation(vk.url, vk.pid, rates, duration,
                         fixed=bool(os.environ.get("BENCH_RATES")))
        rows = []
        for kind in impls():
            good = [r for r in sat if r["impl"] == kind and ok(r)]
            best = max(good or [r for r in sat if r["impl"] == kind],
                       key=lambda r: r["delivered_per_s"])
            rows.append({**best, "sustained": bool(good)})
        by = {r["impl"]: r["deliveries_per_cpu_s"] or 1 for r in rows}
        base = by.get("naive", 1)
        scripted = by.get("naive-script", 1)
        for r in rows:
            r["ratio_per_cpu"] = round(r["deliveries_per_cpu_s"] / base, 2)
            r["ratio_per_cpu_vs_script"] = round(r["deliveries_per_cpu_s"] / scripted, 2)
        mod = moderate(vk.url, vk.pid, reps, duration) if reps else []
        p99 = {r["impl"]: r["p99_ms"] or 1 for r in mod}
        p99_naive = p99.get("naive", 1)
        p99_scripted = p99.get("naive-script", 1)
        for r in mod:
            r["p99_vs_naive"] = round(r["p99_ms"] / p99_naive, 2)
            r["p99_vs_naive_script"] = round(r["p99_ms"] / p99_scripted, 2)
        rows += mod
    return {"scenario": "fanout_one",
            "params": {"conns": 1000, "markets": MARKETS, "subs_per_conn": 1,
                       "encoding": ENCODING, "duration_s": duration, "rates": rates,
                       "p99_limit_ms": P99_LIMIT_MS,
                       "moderate": {"conns": 5000, "rate": 200, "runs": reps}},
            "env": env, "rows": rows, "saturation": sat,
            "columns": ["impl", "scenario", "conns", "offered_updates_per_s", "delivered_per_s",
                        "p50_ms", "p99_ms", "max_ms", "server_cpu_s_per_s",
                        "deliveries_per_cpu_s", "ratio_per_cpu", "ratio_per_cpu_vs_script",
                        "ratio_per_cpu_same_rate", "ratio_per_cpu_same_rate_vs_script",
                        "messages_per_frame", "p99_vs_naive", "p99_vs_naive_script",
                        "p99_limit_ms", "sustained",
                        "apply_p50_ms", "apply_p99_ms",
                        "valkey_cpu_us_per_update", "gaps", "delivery_ratio",
                        "machine_busy_cores", "p99_runs_ms"]}


def main() -> None:
    import signal
    import sys

    from ..common import cli

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    cli("fanout_one", run, __doc__)


if __name__ == "__main__":
    main()
