"""What the risk signals cost the request path, measured from outside: two `oddsfeed serve
--workers 1` servers, one with ``risk.enabled`` off and one with it on, each on an embedded
Valkey of its own, driven at the same time (each by its own load generator of
bench/request_path.py: wrk for HTTP, the compiled WebSocket client), saturated. Per row
and server: requests per second, p50/p99, and the CPU per request of the server's process
tree plus its Valkey's (the recorder's work lands in both). ``cpu_cost`` = on/off - 1 of
that CPU per request (the figure that holds on a shared machine), ``rate_cost`` = 1 -
on/off of requests per second; each the median over the rounds, with the spread of the
paired CPU costs (``cpu_cost_iqr``: their interquartile range).

Why at the same time: on this shared 2-core VM a server's CPU per request moves by up to
2x from one few-second measurement to the next (other work, and the fan-out's adaptive
batching), so two servers measured in turn differ by that much for nothing; measured at
once, both see the same machine. ``BENCH_TURNS=1`` measures them in turn instead (one shared
Valkey, the first of a pair alternating by round), as the earlier rounds did.

Each measurement's CPU window runs past the load by ``TAIL_S`` so that a server is charged
the work its requests left behind: the recorder's last batch (0.5 s linger) and the beat
judging of its accepted legs, which the bench makes due 1 s after acceptance
(``risk.beat_window_ms`` = 1000; with the default 10 s window that work, and its Valkey
CPU, would land in a later measurement, or the other server's). Both servers get the same
tail.

    python -m bench.risk_cost [--quick] [--json PATH]

``BENCH_ROUNDS=N`` and ``BENCH_SECONDS=S`` set the rounds and each measurement's length
(more, shorter rounds narrow a row's paired median on a noisy machine),
``BENCH_ROWS="WS validate 1 leg"`` measures only the rows named (separated by ``,``),
``BENCH_AA=1`` runs both servers with risk off (an A/A run: the harness's own spread).

Bisecting the recorder's cost: ``BENCH_PARTS=offer|fold|writes|all`` runs the "on" server
with only that much of the recorder (``risk.debug_parts``: "offer" takes each batch and
drops it, "fold" also sums it, "writes" also writes the counts and beat-queue legs, "all"
also sweeps). Every row reports the server's tree and its Valkey apart (``server_us``,
``valkey_us_per_req``), the worker's cyclic collections per 1,000 requests by generation
from its ``/metrics`` (``gc_per_k``), and the Valkey commands per request that differ
between the two (``cmd_diff``: calls and µs of ``INFO commandstats`` per request, on minus
off). ``BENCH_GC=1`` also times every collection (``gc_us``: µs per request by generation,
from ``gc.callbacks`` in the servers, bench/gcprobe); ``BENCH_PERF=1`` counts the worker's
context switches, CPU migrations and page faults per request with ``perf stat`` (software
events: this VM exposes no hardware counters).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis

from oddsfeed.auth import Authenticator
from oddsfeed.embedded import EmbeddedValkey
from oddsfeed.settings import load_settings

from .common import cli, environment
from .request_path import (
    CONNS,
    HTTP_ROWS,
    MARKETS,
    SECRET,
    _seed,
    _Server,
    _wrk,
    _ws,
    wrk_binary,
    ws_loadgen,
)

# Past the load: the last batch's linger (0.5 s), the beat window (1 s) and one sweep
# interval (0.5 s).
TAIL_S = 2.0
BEAT_WINDOW_MS = 1000
ROWS = ["POST /v1/bets/validate 1 leg", "POST /v1/bets/validate 5 legs", "WS validate 1 leg"]


def _measure(server: _Server, token: str, row: str, seconds: int) -> dict[str, Any]:
    """One row on one server; ``cpu_us``: CPU per request of the server's tree and Valkey
    from the load's start to ``TAIL_S`` after its end."""
    probe = _Probe(server)
    cpu0, store0, t0 = server.cpu_s(), server.store_cpu_s(), time.monotonic()
    if row.startswith("WS"):
        res = _ws(server, token, 1, seconds)
        # As _ws counts them: the client's warm-up second runs at the measured rate too.
        n = res["per_s"] * (time.monotonic() - t0)
    else:
        _, path, lua, extra = next(r for r in HTTP_ROWS if r[0] == row)
        res = _wrk(server, path, lua % {"token": token, "markets": MARKETS, **extra},
                   seconds, CONNS)
        n = res["per_s"] * seconds
    time.sleep(TAIL_S)
    cpu, store_cpu = server.cpu_s() - cpu0, server.store_cpu_s() - store0
    res["cpu_us"] = round((cpu + store_cpu) / n * 1e6, 1) if n else 0.0
    res["server_us"] = round(cpu / n * 1e6, 2) if n else 0.0
    res["valkey_us_per_req"] = round(store_cpu / n * 1e6, 2) if n else 0.0
    res.update(probe.finish(n))
    return res


_GC_LINE = re.compile(r'^python_gc_collections_total\{generation="(\d)"\} ([0-9.e+]+)$', re.M)


class _Probe:
    """What one measurement of ``server`` did besides CPU: the worker's collections (its
    ``/metrics``; timed too with BENCH_GC), its Valkey's commands (``INFO commandstats``)
    and, with BENCH_PERF, the worker's software perf counters."""

    def __init__(self, server: _Server) -> None:
        self.server = server
        self.gc0 = _gc_counts(server)
        self.gc_time0 = _gc_times(server)
        self.cmd0 = _commandstats(server)
        self.perf: subprocess.Popen[bytes] | None = None
        if os.environ.get("BENCH_PERF", "") not in ("", "0"):
            fd, self.perf_path = tempfile.mkstemp(suffix=".perf")
            os.close(fd)
            self.perf = subprocess.Popen(
                ["perf", "stat", "-x", ",", "-o", self.perf_path, "-e",
                 "context-switches,cpu-migrations,page-faults",
                 "-p", str(server.worker_pid())],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def finish(self, n: float) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if not n:
            return out
        gc1 = _gc_counts(self.server)
        out["gc_per_k"] = [round((b - a) / n * 1000, 3) for a, b in zip(self.gc0, gc1)]
        times1 = _gc_times(self.server)
        if times1 is not None and self.gc_time0 is not None:
            out["gc_us"] = [round((b - a) / n * 1e6, 3)
                            for a, b in zip(self.gc_time0, times1)]
        cmd1 = _commandstats(self.server)
        out["cmds"] = {k: [round((v[0] - self.cmd0.get(k, (0, 0))[0]) / n, 4),
                           round((v[1] - self.cmd0.get(k, (0, 0))[1]) / n, 3)]
                       for k, v in cmd1.items() if v[0] != self.cmd0.get(k, (0, 0))[0]}
        if self.perf is not None:
            self.perf.send_signal(signal.SIGINT)
            self.perf.wait(10)
            counters = {}
            with open(self.perf_path) as f:
                for line in f:
                    fields = line.strip().split(",")
                    if len(fields) > 2 and fields[0].replace(".", "").isdigit():
                        counters[fields[2]] = float(fields[0])
            os.unlink(self.perf_path)
            out["perf_per_k"] = {k: round(v / n * 1000, 2) for k, v in counters.items()}
        return out


def _gc_counts(server: _Server) -> list[float]:
    """The worker's cyclic collections so far, by generation (its Prometheus metrics)."""
    url = f"http://127.0.0.1:{server.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    found = {int(g): float(v) for g, v in _GC_LINE.findall(text)}
    return [found.get(g, 0.0) for g in range(3)]


def _gc_times(server: _Server) -> list[float] | None:
    """The worker's seconds in cyclic collections so far, by generation (BENCH_GC's probe;
    None without it)."""
    gc_dir = getattr(server, "gc_dir", None)
    if gc_dir is None:
        return None
    try:
        with open(os.path.join(gc_dir, f"{server.worker_pid()}.json")) as f:
            return [float(x) for x in json.load(f)["seconds"]]
    except (OSError, ValueError):
        return None


def _commandstats(server: _Server) -> dict[str, tuple[int, int]]:
    """Calls and µs so far per command of ``server``'s Valkey."""
    url = getattr(server, "valkey_url", None)
    if url is None:
        return {}
    with redis.Redis.from_url(url) as c:
        stats = c.info("commandstats")
    return {k.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
            for k, v in stats.items()}


def _iqr(values: list[float]) -> float:
    """The interquartile range of ``values`` (0 for fewer than 4)."""
    if len(values) < 4:
        return 0.0
    q = statistics.quantiles(values, n=4)
    return q[2] - q[0]


def run(quick: bool) -> dict[str, Any]:
    seconds, rounds = (2, 3) if quick else (5, 5)
    rounds = int(os.environ.get("BENCH_ROUNDS", rounds))
    seconds = int(os.environ.get("BENCH_SECONDS", seconds))
    wanted = os.environ.get("BENCH_ROWS")
    aa = os.environ.get("BENCH_AA", "") not in ("", "0")
    rows_run = [r for r in ROWS if wanted is None or r in wanted.split(",")]
    wrk_binary()
    ws_loadgen()
    settings = load_settings(None, {}, {"auth.hs256_secret": SECRET})
    token = Authenticator(settings.auth).mint(
        "bench", ["odds:read", "odds:write", "bets:validate"], ttl_s=3600, now_s=int(time.time()))
    together = os.environ.get("BENCH_TURNS", "") in ("", "0")
    parts = os.environ.get("BENCH_PARTS", "all")
    gc_dir = (tempfile.mkdtemp(prefix="risk-cost-gc-")
              if os.environ.get("BENCH_GC", "") not in ("", "0") else None)
    probe_env = ({"PYTHONPATH": os.pathsep.join(
        [os.path.join(os.path.dirname(__file__), "gcprobe"), os.environ.get("PYTHONPATH", "")]),
        "BENCH_GC_DIR": gc_dir} if gc_dir else {})
    got: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    with contextlib.ExitStack() as stack:
        # Together: each server has a Valkey of its own (its CPU is the server's alone);
        # in turns both share one, as in the request bench.
        vks = [stack.enter_context(EmbeddedValkey()) for _ in range(2 if together else 1)]
        env = environment(vks[0].url)
        for vk in vks:
            _seed(vk.url)
            with redis.Redis.from_url(vk.url) as c:
                assert c.exists("of:{m:m0}")
        servers: dict[bool, _Server] = {}
        for on in (False, True):
            vk = vks[on] if together else vks[0]
            servers[on] = _Server(vk.url, True, 1, vk.pid, {
                "ODDSFEED_RISK__ENABLED": "true" if on and not aa else "false",
                "ODDSFEED_RISK__DEBUG_PARTS": parts,
                "ODDSFEED_RISK__BEAT_WINDOW_MS": str(BEAT_WINDOW_MS), **probe_env})
            stack.callback(servers[on].stop)
            if together:
                servers[on].valkey_url = vk.url  # type: ignore[attr-defined]
            servers[on].gc_dir = gc_dir  # type: ignore[attr-defined]
        for n in range(rounds):
            for row in rows_run:
                # Which server goes first alternates by round: a bias of the first (or the
                # second) of a pair falls on both.
                order = (False, True) if n % 2 == 0 else (True, False)
                if together:
                    with ThreadPoolExecutor(2) as pool:
                        futures = {on: pool.submit(_measure, servers[on], token, row, seconds)
                                   for on in order}
                    for on in order:
                        got.setdefault((row, on), []).append(futures[on].result())
                else:
                    for on in order:
                        got.setdefault((row, on), []).append(
                            _measure(servers[on], token, row, seconds))
    rows: list[dict[str, Any]] = []
    for row in rows_run:
        offs, ons = got[(row, False)], got[(row, True)]
        med = {k: {f: round(statistics.median(r[f] for r in runs), 2) for f in
                   ("per_s", "p50_ms", "p99_ms", "cpu_us", "server_us", "valkey_us_per_req")}
               for k, runs in (("off", offs), ("on", ons))}
        extra = {f"{k}_{f}": _median_of(runs, f) for k, runs in (("off", offs), ("on", ons))
                 for f in ("gc_per_k", "gc_us", "perf_per_k")}
        paired = [b["cpu_us"] / a["cpu_us"] - 1 for a, b in zip(offs, ons, strict=True)]
        rows.append({
            "request": row, **{f"{k}_{f}": v for k, m in med.items() for f, v in m.items()},
            "cpu_cost": round(statistics.median(paired), 3),
            "cpu_cost_iqr": round(_iqr(paired), 3),
            "rate_cost": round(statistics.median(1 - b["per_s"] / a["per_s"]
                                                 for a, b in zip(offs, ons, strict=True)), 3),
            **{k: v for k, v in extra.items() if v is not None},
            "cmd_diff": _cmd_diff(offs, ons)})
    raw = {row: {k: [r["cpu_us"] for r in got[(row, on)]] for k, on in (("off", False),
                                                                          ("on", True))}
           for row in rows_run}
    for done in rows:
        print(done["request"], {k: v for k, v in done.items()
                               if k.endswith(("gc_per_k", "gc_us", "perf_per_k", "cmd_diff"))})
    return {"scenario": "risk_cost", "raw_cpu_us": raw,
            "params": {"tool": "wrk -t1; bench/request_loadgen.c", "connections": CONNS,
                       "seconds": seconds, "rounds": rounds, "markets": MARKETS,
                       "tail_s": TAIL_S, "beat_window_ms": BEAT_WINDOW_MS, "aa": aa,
                       "together": together, "parts": parts},
            "env": env, "rows": rows,
            "columns": ["request", "off_per_s", "on_per_s", "off_p99_ms", "on_p99_ms",
                        "off_cpu_us", "on_cpu_us", "off_server_us", "on_server_us",
                        "off_valkey_us_per_req",
                        "on_valkey_us_per_req", "cpu_cost", "cpu_cost_iqr", "rate_cost"]}


def _median_of(runs: list[dict[str, Any]], field: str) -> Any:
    """The per-key median of a list or dict field over the rounds (None when absent)."""
    vals = [r[field] for r in runs if field in r]
    if not vals:
        return None
    if isinstance(vals[0], dict):
        return {k: round(statistics.median(v.get(k, 0.0) for v in vals), 3) for k in vals[0]}
    return [round(statistics.median(v[i] for v in vals), 3) for i in range(len(vals[0]))]


def _cmd_diff(offs: list[dict[str, Any]], ons: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per Valkey command, the median calls and µs per request of "on" minus "off"."""
    names = {k for r in offs + ons for k in r.get("cmds", {})}
    out = {}
    for name in sorted(names):
        diff = [statistics.median(r.get("cmds", {}).get(name, [0, 0])[i] for r in ons)
                - statistics.median(r.get("cmds", {}).get(name, [0, 0])[i] for r in offs)
                for i in (0, 1)]
        if diff[0] or diff[1]:
            out[name] = [round(diff[0], 4), round(diff[1], 3)]
    return out


def main() -> None:
    cli("risk_cost", run, __doc__)


if __name__ == "__main__":
    main()
