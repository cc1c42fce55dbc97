"""Shared helpers of the benchmarks: environment, percentiles, servers, reports."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


BUILD = Path(__file__).resolve().parent / "build"


def build_c(cc: str, src: Path, *headers: Path) -> str:
    """``src`` compiled with ``cc`` into ``bench/build``, once per version of its sources
    (the name carries their digest); built under a temporary name and renamed, so runs
    that build at the same time never execute a half-written file."""
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in (src, *headers))).hexdigest()
    exe = BUILD / f"{src.stem}-{digest[:12]}"
    if not exe.exists():
        BUILD.mkdir(parents=True, exist_ok=True)
        tmp = exe.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run([cc, "-O2", "-Wall", "-o", str(tmp), str(src)], check=True)
        tmp.replace(exe)
    return str(exe)


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of ``values`` (nearest rank); 0 for none."""
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def summary_ms(latencies_s: Sequence[float]) -> dict[str, float]:
    return {"p50_ms": round(pct(latencies_s, 50) * 1000, 3),
            "p99_ms": round(pct(latencies_s, 99) * 1000, 3),
            "max_ms": round(max(latencies_s, default=0) * 1000, 3),
            "mean_ms": round(statistics.fmean(latencies_s) * 1000, 3) if latencies_s else 0.0}


def environment(redis_url: str | None = None) -> dict[str, Any]:
    """Versions and machine facts recorded beside every figure."""
    env: dict[str, Any] = {"python": platform.python_version(), "host": socket.gethostname(),
                           "cpus": os.cpu_count(), "platform": platform.platform()}
    for pkg in ("oddsfeed", "websockets", "uvloop", "redis", "aiohttp", "msgpack"):
        try:
            env[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            env[pkg] = None
    if redis_url:
        import redis

        with redis.Redis.from_url(redis_url) as c:
            env["redis_server"] = c.info("server").get("redis_version")
    return env


def wait_http(url: str, timeout_s: float = 30.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def spawn(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, *args], env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def write_json(name: str, data: dict[str, Any], path: str | None = None) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = Path(path) if path else RESULTS / f"{date.today()}-{socket.gethostname()}-{name}.json"
    out.write_text(json.dumps(data, indent=2))
    return out


def table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    """A Markdown table of ``rows`` with ``cols``."""
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    return "\n".join(lines)


def cli(name: str, run: Any, doc: str | None) -> None:
    """The command line of one scenario module: ``--quick`` and ``--json PATH``."""
    import argparse
    import asyncio

    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    res = run(args.quick)
    if asyncio.iscoroutine(res):
        res = asyncio.run(res)
    print(table(res["rows"], res["columns"]))
    if "memory" in res:
        print(table(res["memory"], ["conns", "rss_mb", "kb_per_conn", "marginal_kb_per_conn"]))
    if args.json:
        write_json(name, res, args.json)
