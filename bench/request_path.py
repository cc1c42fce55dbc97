"""Request-path benchmark: external load generators against ``oddsfeed serve`` on an
embedded Valkey with 20 markets: `wrk` (never a Python client in the server's process) for
HTTP and a compiled WebSocket client (``request_loadgen.c``) for the ``validate`` op.
Rows: ``GET /healthz`` (the bare handler, the baseline of every ratio), ``GET
/v1/markets/{id}``, 1-leg and 5-leg ``POST /v1/bets/validate``, ``PATCH`` of one price,
``POST /v1/odds`` with 100 items, and WebSocket validate (1 and 5 legs); each at saturation
(wrk -t1 -c32; the WebSocket client 32 connections x 8 in flight) and HTTP at about half
of its saturated rate (fewer connections paced by a ``delay()`` Lua script: a closed loop
with think time, as Debian's wrk has no fixed-rate mode); with ``--workers 1`` and
``--workers 2``, and ``redis.auto_pipeline`` off then on for one worker. Figures: req/s,
p50/p99 and requests per server CPU-second (the whole process tree), with ratios to
``/healthz`` of the same server in the same run, and the Valkey CPU per request.

    python -m bench.request_path [--quick] [--json PATH]

Profile a scenario by hand: start the server as :func:`_Server` does, then
``.venv/bin/py-spy record --pid <worker pid> --duration 8`` while wrk runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import redis

from oddsfeed.auth import Authenticator
from oddsfeed.core.model import MarketUpdate
from oddsfeed.embedded import EmbeddedValkey
from oddsfeed.freeport import LOOPBACK, free_port
from oddsfeed.settings import load_settings
from tests.procs import stop_process
from tests.sysdeps import ensure_debian

from .common import build_c, cli, environment, wait_http

SECRET = "bench-secret-0123456789-0123456789"
MARKETS = 20
WRK = "/usr/bin/wrk"
CONNS = 32
WS_DEPTH = 8  # validations in flight per WebSocket connection
# Each WebSocket connection sends far more than the per-connection message limit (100/s,
# burst 200): the limit is raised so that the rows measure validation, not the limiter.
BENCH_ENV = {"ODDSFEED_FANOUT__RATE_LIMIT_PER_S": "1000000",
             "ODDSFEED_FANOUT__RATE_LIMIT_BURST": "1000000"}

# One POST body per request, the legs spread over the 20 markets (a Lua script of wrk's).
_POST_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
local bodies = {}
for i = 0, %(markets)d - 1 do
  local legs = {}
  for k = 0, %(legs)d - 1 do
    legs[#legs + 1] = string.format(
      '{"market":"m%%d","selection":"h","price":2.5}', (i + k) %% %(markets)d)
  end
  bodies[#bodies + 1] = '{"legs":[' .. table.concat(legs, ",") .. ']}'
end
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, bodies[(n %% #bodies) + 1])
end
"""

_GET_LUA = """
wrk.headers["Authorization"] = "Bearer %(token)s"
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/v1/markets/m" .. (n %% %(markets)d))
end
"""

# A real change each time: the price of one selection walks over 50 values.
_PATCH_LUA = """
wrk.method = "PATCH"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
local n = 0
request = function()
  n = n + 1
  local body = string.format('{"selections":{"a":{"price":%%.2f}}}', 2 + (n %% 50) / 100)
  return wrk.format(nil, "/v1/markets/m" .. (n %% %(markets)d), nil, body)
end
"""

# 100 items over the 20 markets, each a real change of one price.
_ODDS_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
local n = 0
request = function()
  n = n + 1
  local items = {}
  for i = 0, 99 do
    items[#items + 1] = string.format('{"market":"m%%d","selections":{"a":{"price":%%.2f}}}',
      i %% %(markets)d, 2 + ((n * 7 + i) %% 50) / 100)
  end
  return wrk.format(nil, nil, nil, '{"updates":[' .. table.concat(items, ",") .. ']}')
end
"""

# Paced rows: each connection waits this long before its next request.
_DELAY_LUA = """
delay = function()
  return %(delay_ms)d
end
"""

# wrk's own summary line, printed by the done() callback: exact percentiles in microseconds.
_DONE_LUA = """
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.connect + summary.errors.read
      + summary.errors.write + summary.errors.timeout))
end
"""

# (row, path, Lua script, its parameters); /healthz first: every ratio's baseline.
HTTP_ROWS: list[tuple[str, str, str, dict[str, int]]] = [
    ("GET /healthz", "/healthz", "", {}),
    ("GET /v1/markets/{id}", "/", _GET_LUA, {}),
    ("POST /v1/bets/validate 1 leg", "/v1/bets/validate", _POST_LUA, {"legs": 1}),
    ("POST /v1/bets/validate 5 legs", "/v1/bets/validate", _POST_LUA, {"legs": 5}),
    ("PATCH /v1/markets/{id} 1 price", "/", _PATCH_LUA, {}),
    ("POST /v1/odds 100 items", "/v1/odds", _ODDS_LUA, {}),
]
WS_ROWS = [("WS validate 1 leg", 1), ("WS validate 5 legs", 5)]


def wrk_binary() -> str:
    """``wrk``, installed from Debian when missing (as the tests install Chromium)."""
    if not ensure_debian(WRK, "wrk"):
        raise SystemExit(f"the request benchmark needs wrk ({WRK}): apt-get install wrk")
    return WRK


def ws_loadgen() -> str:
    """request_loadgen.c compiled once per source version into ``build/`` (gcc or cc)."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None and not ensure_debian("/usr/bin/gcc", "gcc"):
        raise SystemExit("the request benchmark needs a C compiler: apt-get install gcc")
    cc = cc or "/usr/bin/gcc"
    return build_c(cc, Path(__file__).with_name("request_loadgen.c"))


class _Server:
    """``oddsfeed serve --workers N`` in a process group of its own; CPU of the whole tree."""

    def __init__(self, redis_url: str, auto_pipeline: bool, workers: int,
                 store_pid: int | None = None, extra_env: dict[str, str] | None = None) -> None:
        self.store = psutil.Process(store_pid) if store_pid else None
        self.http_port = free_port()
        self.ws_port = free_port()
        env = {**os.environ, "ODDSFEED_AUTH__HS256_SECRET": SECRET,
               "ODDSFEED_REDIS__AUTO_PIPELINE": "true" if auto_pipeline else "false",
               "ODDSFEED_LOG__LEVEL": "warning", **BENCH_ENV, **(extra_env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "oddsfeed", "serve", "--workers", str(workers),
             "--host", LOOPBACK, "--http-port", str(self.http_port),
             "--ws-port", str(self.ws_port), "--redis-url", redis_url], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_http(f"http://{LOOPBACK}:{self.http_port}/readyz")

    def cpu_s(self) -> float:
        total = 0.0
        try:
            root = psutil.Process(self.proc.pid)
            for p in [root, *root.children(recursive=True)]:
                try:
                    t = p.cpu_times()
                except psutil.Error:
                    continue
                total += t.user + t.system
        except psutil.Error:
            pass
        return total

    def store_cpu_s(self) -> float:
        """CPU seconds of the Valkey process so far (0 when it is not known)."""
        if self.store is None:
            return 0.0
        t = self.store.cpu_times()
        return t.user + t.system

    def worker_pid(self) -> int:
        """The busiest process of the tree (the worker, not the supervisor or helpers)."""
        procs = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(True)]
        return max(procs, key=lambda p: sum(p.cpu_times()[:2])).pid

    def stop(self) -> None:
        stop_process(self.proc)


@contextmanager
def _server(redis_url: str, auto_pipeline: bool, workers: int = 1,
            store_pid: int | None = None) -> Iterator[_Server]:
    server = _Server(redis_url, auto_pipeline, workers, store_pid)
    try:
        yield server
    finally:
        server.stop()


def _settle(server: _Server, limit_s: float = 5.0) -> None:
    """Wait (at most ``limit_s``) until the server is idle: below 5% of a core over 0.2 s.
    A row's load generator stops with requests in flight (32 ``POST /v1/odds`` of 100 items
    are ~0.3 s of work); without the wait they run into the next row's first requests,
    whose tail (p99) and CPU count then hold the previous row's work."""
    deadline = time.monotonic() + limit_s
    cpu = server.cpu_s()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = server.cpu_s()
        if now - cpu < 0.01:
            return
        cpu = now


def _wrk(server: _Server, path: str, script: str, seconds: int, conns: int) -> dict[str, Any]:
    _settle(server)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script + _DONE_LUA)
    try:
        cpu0, store0 = server.cpu_s(), server.store_cpu_s()
        out = subprocess.run(
            [wrk_binary(), "-t1", f"-c{conns}", f"-d{seconds}s", "-s", f.name,
             f"http://{LOOPBACK}:{server.http_port}{path}"],
            capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
        cpu, store_cpu = server.cpu_s() - cpu0, server.store_cpu_s() - store0
    finally:
        Path(f.name).unlink()
    m = re.search(r"^RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)$", out, re.M)
    if not m:
        raise RuntimeError(f"no result line in wrk's output: {out!r}")
    n, dur_us, p50, p99, bad_status, sock_errors = (int(x) for x in m.groups())
    return {"per_s": round(n / (dur_us / 1e6)), "p50_ms": round(p50 / 1000, 2),
            "p99_ms": round(p99 / 1000, 2), "per_cpu_s": round(n / cpu) if cpu > 0 else 0,
            "server_cpu_s": round(cpu, 2), "valkey_us_per_req": round(store_cpu / n * 1e6, 1),
            "errors": bad_status + sock_errors}


def _ws(server: _Server, token: str, legs: int, seconds: int) -> dict[str, Any]:
    """The compiled WebSocket client: 32 connections x 8 validations in flight."""
    _settle(server)
    cpu0, store0 = server.cpu_s(), server.store_cpu_s()
    t0 = time.monotonic()
    out = subprocess.run(
        [ws_loadgen(), LOOPBACK, str(server.ws_port), token, str(CONNS), str(WS_DEPTH),
         str(seconds), str(MARKETS), str(legs)],
        capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    # The client's warm-up second is in the CPU window too: count the requests of the
    # whole window at the measured rate.
    cpu, store_cpu = server.cpu_s() - cpu0, server.store_cpu_s() - store0
    res = json.loads(out)
    per_s = res["requests"] / res["seconds"]
    window_requests = per_s * (time.monotonic() - t0)
    return {"per_s": round(per_s), "p50_ms": round(res["p50_us"] / 1000, 2),
            "p99_ms": round(res["p99_us"] / 1000, 2),
            "per_cpu_s": round(window_requests / cpu) if cpu > 0 else 0,
            "server_cpu_s": round(cpu, 2),
            "valkey_us_per_req": round(store_cpu / window_requests * 1e6, 1)
            if window_requests else 0, "errors": res["errors"]}


def _paced_wrk(server: _Server, path: str, script: str, seconds: int, target_per_s: float
               ) -> dict[str, Any]:
    """wrk at about ``target_per_s``: connections that wait ``delay_ms`` after each answer.
    A connection's rate is 1 / (delay + latency), so a run that fell short of the target by
    more than 15% is run again with proportionally more connections."""
    delay_ms = 8
    conns = max(2, round(target_per_s * (delay_ms + 1) / 1000))
    res: dict[str, Any] = {}
    for _ in range(2):
        paced = script + _DELAY_LUA % {"delay_ms": delay_ms}
        res = _wrk(server, path, paced, seconds, min(conns, 256))
        if res["per_s"] >= 0.85 * target_per_s or conns >= 256:
            break
        conns = round(conns * target_per_s / max(res["per_s"], 1))
    return {**res, "target_per_s": round(target_per_s)}


def _seed(url: str) -> None:
    import asyncio

    from oddsfeed.store import Store

    async def go() -> None:
        store = await Store.connect(url)
        try:
            for i in range(MARKETS):
                await store.apply(MarketUpdate(
                    market=f"m{i}", fields={"event": f"e{i % 4}", "sport": "s", "name": "n"},
                    selections={"h": {"name": "H", "price": 25000},
                                "a": {"name": "A", "price": 30000}}, create=True))
        finally:
            await store.close()

    asyncio.run(go())


def _row(name: str, workers: int, auto: bool, load: str, res: dict[str, Any],
         base: dict[str, Any]) -> dict[str, Any]:
    return {"request": name, "workers": workers, "auto_pipeline": auto, "load": load, **res,
            "x_healthz_per_s": round(res["per_s"] / base["per_s"], 2) if base["per_s"] else 0,
            "x_healthz_per_cpu_s": (round(res["per_cpu_s"] / base["per_cpu_s"], 2)
                                    if base["per_cpu_s"] else 0)}


def _pass(server: _Server, token: str, workers: int, auto: bool, seconds: int,
          half: bool) -> list[dict[str, Any]]:
    """Every row on one server at saturation (and at half of it when ``half``)."""
    rows: list[dict[str, Any]] = []
    base: dict[str, Any] = {}
    saturated: dict[str, dict[str, Any]] = {}
    for name, path, lua, extra in HTTP_ROWS:
        script = lua % {"token": token, "markets": MARKETS, **extra} if lua else ""
        res = _wrk(server, path, script, seconds, CONNS)
        base = base or res
        saturated[name] = res
        rows.append(_row(name, workers, auto, "saturated", res, base))
    for name, legs in WS_ROWS:
        rows.append(_row(name, workers, auto, "saturated", _ws(server, token, legs, seconds),
                         base))
    if not half:
        return rows
    half_base: dict[str, Any] = {}
    for name, path, lua, extra in HTTP_ROWS:
        script = lua % {"token": token, "markets": MARKETS, **extra} if lua else ""
        res = _paced_wrk(server, path, script, seconds, saturated[name]["per_s"] / 2)
        half_base = half_base or res
        rows.append(_row(name, workers, auto, "half", res, half_base))
    return rows


def run(quick: bool) -> dict[str, Any]:
    seconds = 2 if quick else 8
    wrk_binary()
    ws_loadgen()
    settings = load_settings(None, {}, {"auth.hs256_secret": SECRET})
    token = Authenticator(settings.auth).mint(
        "bench", ["odds:read", "odds:write", "bets:validate"], ttl_s=3600, now_s=int(time.time()))
    rows: list[dict[str, Any]] = []
    with EmbeddedValkey() as vk:
        env = environment(vk.url)
        _seed(vk.url)
        with redis.Redis.from_url(vk.url) as c:
            assert c.exists("of:{m:m0}")
        for workers, auto in ((1, False), (1, True), (2, True)):
            with _server(vk.url, auto, workers, vk.pid) as server:
                # The quick run paces one worker only (it stays near two minutes).
                rows += _pass(server, token, workers, auto, seconds,
                              half=auto and (workers == 1 or not quick))
    return {"scenario": "requests",
            "params": {"tool": "wrk -t1; bench/request_loadgen.c", "connections": CONNS,
                       "ws_in_flight_per_connection": WS_DEPTH, "seconds": seconds,
                       "markets": MARKETS},
            "env": env, "rows": rows,
            "columns": ["request", "workers", "auto_pipeline", "load", "target_per_s", "per_s",
                        "p50_ms", "p99_ms", "per_cpu_s", "x_healthz_per_s", "x_healthz_per_cpu_s",
                        "valkey_us_per_req", "errors"]}


def main() -> None:
    cli("request_path", run, __doc__)


if __name__ == "__main__":
    main()
