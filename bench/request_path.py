"""Request-path benchmark: `wrk` (an external load generator, never a Python client in the
server's process) against ``oddsfeed serve --workers 1`` on an embedded Valkey with 20
markets: req/s, p50/p99 and requests per server CPU-second for 1-leg and 5-leg
``POST /v1/bets/validate`` and ``GET /v1/markets/{id}``, each beside the bare
``GET /healthz`` of the same server in the same run, with ``redis.auto_pipeline`` off and
on (the store's per-call client, then batched reads).

    python -m bench.request_path [--quick] [--json PATH]

Profile a scenario by hand: start the server as :func:`_Server` does, then
``.venv/bin/py-spy record --pid <worker pid> --duration 8`` while wrk runs.
"""

from __future__ import annotations

import os
import re
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

from .common import cli, environment, wait_http

SECRET = "bench-secret-0123456789-0123456789"
MARKETS = 20
WRK = "/usr/bin/wrk"

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

# wrk's own summary line, printed by the done() callback: exact percentiles in microseconds.
_DONE_LUA = """
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.connect + summary.errors.read
      + summary.errors.write + summary.errors.timeout))
end
"""


def wrk_binary() -> str:
    """``wrk``, installed from Debian when missing (as the tests install Chromium)."""
    if not ensure_debian(WRK, "wrk"):
        raise SystemExit(f"the request benchmark needs wrk ({WRK}): apt-get install wrk")
    return WRK


class _Server:
    """``oddsfeed serve --workers 1`` in a process group of its own; CPU of the whole tree."""

    def __init__(self, redis_url: str, auto_pipeline: bool) -> None:
        self.http_port = free_port()
        env = {**os.environ, "ODDSFEED_AUTH__HS256_SECRET": SECRET,
               "ODDSFEED_REDIS__AUTO_PIPELINE": "true" if auto_pipeline else "false",
               "ODDSFEED_LOG__LEVEL": "warning"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "oddsfeed", "serve", "--workers", "1", "--host", LOOPBACK,
             "--http-port", str(self.http_port), "--ws-port", str(free_port()),
             "--redis-url", redis_url], env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
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

    def worker_pid(self) -> int:
        """The busiest process of the tree (the worker, not the supervisor or helpers)."""
        procs = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(True)]
        return max(procs, key=lambda p: sum(p.cpu_times()[:2])).pid

    def stop(self) -> None:
        stop_process(self.proc)


@contextmanager
def _server(redis_url: str, auto_pipeline: bool) -> Iterator[_Server]:
    server = _Server(redis_url, auto_pipeline)
    try:
        yield server
    finally:
        server.stop()


def _wrk(server: _Server, path: str, script: str, seconds: int, conns: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script + _DONE_LUA)
    try:
        cpu0 = server.cpu_s()
        out = subprocess.run(
            [wrk_binary(), "-t1", f"-c{conns}", f"-d{seconds}s", "-s", f.name,
             f"http://{LOOPBACK}:{server.http_port}{path}"],
            capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
        cpu = server.cpu_s() - cpu0
    finally:
        Path(f.name).unlink()
    m = re.search(r"^RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)$", out, re.M)
    if not m:
        raise RuntimeError(f"no result line in wrk's output: {out!r}")
    n, dur_us, p50, p99, bad_status, sock_errors = (int(x) for x in m.groups())
    return {"per_s": round(n / (dur_us / 1e6)), "p50_ms": round(p50 / 1000, 2),
            "p99_ms": round(p99 / 1000, 2), "per_cpu_s": round(n / cpu) if cpu > 0 else 0,
            "server_cpu_s": round(cpu, 2), "errors": bad_status + sock_errors}


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


def run(quick: bool) -> dict[str, Any]:
    seconds = 3 if quick else 8
    conns = 32
    wrk_binary()
    settings = load_settings(None, {}, {"auth.hs256_secret": SECRET})
    token = Authenticator(settings.auth).mint("bench", ["odds:read", "bets:validate"],
                                              ttl_s=3600, now_s=int(time.time()))
    scenarios = [
        ("GET /healthz", "/healthz", "", {}),
        ("GET /v1/markets/{id}", "/", _GET_LUA, {}),
        ("POST /v1/bets/validate 1 leg", "/v1/bets/validate", _POST_LUA, {"legs": 1}),
        ("POST /v1/bets/validate 5 legs", "/v1/bets/validate", _POST_LUA, {"legs": 5}),
    ]
    rows: list[dict[str, Any]] = []
    with EmbeddedValkey() as vk:
        env = environment(vk.url)
        _seed(vk.url)
        with redis.Redis.from_url(vk.url) as c:
            assert c.exists("of:{m:m0}")
        for auto in (False, True):
            with _server(vk.url, auto) as server:
                base: dict[str, Any] = {}
                for name, path, lua, extra in scenarios:
                    script = lua % {"token": token, "markets": MARKETS, **extra} if lua else ""
                    res = _wrk(server, path, script, seconds, conns)
                    if not base:
                        base = res
                    rows.append({
                        "request": name, "auto_pipeline": auto, **res,
                        "x_healthz_per_s": round(res["per_s"] / base["per_s"], 2),
                        "x_healthz_per_cpu_s": round(res["per_cpu_s"] / base["per_cpu_s"], 2)})
    return {"scenario": "requests",
            "params": {"tool": "wrk -t1", "connections": conns, "seconds": seconds,
                       "markets": MARKETS, "workers": 1},
            "env": env, "rows": rows,
            "columns": ["request", "auto_pipeline", "per_s", "p50_ms", "p99_ms", "per_cpu_s",
                        "x_healthz_per_s", "x_healthz_per_cpu_s", "errors"]}


def main() -> None:
    cli("request_path", run, __doc__)


if __name__ == "__main__":
    main()
