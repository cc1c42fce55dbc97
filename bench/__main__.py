"""`make bench`: every benchmark in one run, one JSON file, a Markdown report with ratios to
each scenario's baseline, and plots.

    python -m bench [--quick]
                    [--only store,fanout,fanout_one,validation,requests,risk_cost,ingest,risk]
                    [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from . import fanout, ingest, request_path, risk_cost, risk_precision, store, validation
from .common import RESULTS, table
from .fanout import one_market

# Each takes `quick` and returns its figures (some as a coroutine).
SCENARIOS: dict[str, Callable[[bool], Any]] = {
    "store": store.run, "fanout": fanout.run, "fanout_one": one_market.run,
    "validation": validation.run, "requests": request_path.run, "risk_cost": risk_cost.run,
    "ingest": ingest.run,
    "risk": risk_precision.run}


def plots(results: dict[str, Any], stem: Path) -> list[str]:
    """Latency against offered load (fan-out saturation) and memory against connections."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out = []
    fan = results.get("fanout")
    if fan:
        fig, ax = plt.subplots(figsize=(7, 4))
        for impl in ("naive", "oddsfeed"):
            pts = [r for r in fan["saturation"] if r["impl"] == impl]
            x = [r["delivered_per_s"] for r in pts]
            ax.plot(x, [r["p50_ms"] for r in pts], "o--", label=f"{impl} p50")
            ax.plot(x, [r["p99_ms"] for r in pts], "o-", label=f"{impl} p99")
        ax.set_xlabel("delivered messages/s")
        ax.set_ylabel("apply -> receive latency (ms)")
        ax.set_yscale("log")
        ax.set_title("fan-out saturation (1 worker, 1,000 connections)")
        ax.legend()
        path = stem.with_name(stem.name + "-latency.png")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        out.append(path.name)
        fig, ax = plt.subplots(figsize=(7, 4))
        for impl in ("naive", "oddsfeed"):
            mem = [m for m in fan["memory"] if m["impl"] == impl]
            if mem:
                base = mem[0]["rss_mb"]  # the empty server (all its workers)
                ax.plot([m["conns"] for m in mem], [m["rss_mb"] - base for m in mem], "o-",
                        label=impl)
        ax.legend()
        ax.set_xlabel("idle subscribed connections")
        ax.set_ylabel("RSS above the empty server (MiB)")
        ax.set_title("memory against connection count")
        path = stem.with_name(stem.name + "-memory.png")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        out.append(path.name)
    return out


def report(results: dict[str, Any], images: list[str], mode: str) -> str:
    lines = [f"# oddsfeed benchmarks ({mode}, {date.today()}, {socket.gethostname()})", "",
             "Ratios compare each figure with its baseline measured in the same run; absolute "
             "numbers only describe this (shared, noisy) machine. See docs/performance.md.", ""]
    env: dict[str, Any] = next((r["env"] for r in results.values() if "env" in r), {})
    lines += ["Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), ""]
    for name, res in results.items():
        lines += [f"## {name}", "", f"Parameters: `{json.dumps(res.get('params', {}))}`", "",
                  table(res["rows"], res["columns"]), ""]
        if name == "fanout":
            lines += ["Saturation search:", "", table(res["saturation"], res["columns"]), "",
                      "Idle memory:", "",
                      table(res["memory"], ["impl", "workers", "conns", "rss_mb", "kb_per_conn",
                                            "marginal_kb_per_conn"]), ""]
        if name == "fanout_one":
            lines += ["Saturation search:", "", table(res["saturation"], res["columns"]), ""]
    for img in images:
        lines += [f"![{img}]({img})", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="the everyday run (< 3 minutes)")
    ap.add_argument("--only", default=",".join(SCENARIOS))
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    results: dict[str, Any] = {}
    for name in args.only.split(","):
        t0 = time.monotonic()
        print(f"== {name}", file=sys.stderr)
        fn = SCENARIOS[name]  # each one is bounded in time and stops its own processes
        res: dict[str, Any] = fn(args.quick)
        if asyncio.iscoroutine(res):
            res = asyncio.run(res)
        res["elapsed_s"] = round(time.monotonic() - t0, 1)
        results[name] = res
        print(table(res["rows"], res["columns"]), file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{date.today()}-{socket.gethostname()}"
    n = 2
    while stem.with_suffix(".json").exists():  # a second run the same day keeps the first
        stem = out / f"{date.today()}-{socket.gethostname()}-{n}"
        n += 1
    mode = "quick" if args.quick else "full"
    stem.with_suffix(".json").write_text(json.dumps({"mode": mode, "results": results},
                                                    indent=2))
    images = plots(results, stem)
    stem.with_suffix(".md").write_text(report(results, images, mode))
    latest = out / "latest.md"
    latest.write_text(report(results, images, mode))
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}", file=sys.stderr)


if __name__ == "__main__":
    main()
