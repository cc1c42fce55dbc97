"""What the risk signals cost the request path, measured from outside: two `oddsfeed serve
--workers 1` servers on one embedded Valkey, one with ``risk.enabled`` off and one with it
on, driven in turn (off then on, then on then off: the first of a pair alternates by
round) by the external load generators of bench/request_path.py (wrk for HTTP, the
compiled WebSocket client), saturated. Per row and server: requests per second, p50/p99,
and the CPU per request of the server's process tree plus Valkey's (the recorder's work
lands in both). ``cpu_cost`` = on/off - 1 of that CPU per request (the figure that holds on
a shared machine), ``rate_cost`` = 1 - on/off of requests per second; each the median over
the rounds.

    python -m bench.risk_cost [--quick] [--json PATH]

``BENCH_ROUNDS=N`` and ``BENCH_SECONDS=S`` set the rounds and each measurement's length
(more, shorter rounds narrow a row's paired median on a noisy machine),
``BENCH_ROWS="WS validate 1 leg"`` measures only the rows named (separated by ``,``).
"""

from __future__ import annotations

import os
import statistics
import time
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

ROWS = ["POST /v1/bets/validate 1 leg", "POST /v1/bets/validate 5 legs", "WS validate 1 leg"]


def _measure(server: _Server, token: str, row: str, seconds: int) -> dict[str, Any]:
    if row.startswith("WS"):
        res = _ws(server, token, 1, seconds)
    else:
        _, path, lua, extra = next(r for r in HTTP_ROWS if r[0] == row)
        res = _wrk(server, path, lua % {"token": token, "markets": MARKETS, **extra},
                   seconds, CONNS)
    res["cpu_us"] = round(1e6 / res["per_cpu_s"] + res["valkey_us_per_req"], 1)
    return res


def run(quick: bool) -> dict[str, Any]:
    seconds, rounds = (2, 3) if quick else (5, 5)
    rounds = int(os.environ.get("BENCH_ROUNDS", rounds))
    seconds = int(os.environ.get("BENCH_SECONDS", seconds))
    wanted = os.environ.get("BENCH_ROWS")
    rows_run = [r for r in ROWS if wanted is None or r in wanted.split(",")]
    wrk_binary()
    ws_loadgen()
    settings = load_settings(None, {}, {"auth.hs256_secret": SECRET})
    token = Authenticator(settings.auth).mint(
        "bench", ["odds:read", "odds:write", "bets:validate"], ttl_s=3600, now_s=int(time.time()))
    got: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    with EmbeddedValkey() as vk:
        env = environment(vk.url)
        _seed(vk.url)
        with redis.Redis.from_url(vk.url) as c:
            assert c.exists("of:{m:m0}")
        servers = {on: _Server(vk.url, True, 1, vk.pid,
                               {"ODDSFEED_RISK__ENABLED": "true" if on else "false"})
                   for on in (False, True)}
        try:
            for n in range(rounds):
                for row in rows_run:
                    # Which server goes first alternates by round: a bias of the second
                    # run of a pair (the machine's other load, caches) falls on both.
                    for on in (False, True) if n % 2 == 0 else (True, False):
                        got.setdefault((row, on), []).append(
                            _measure(servers[on], token, row, seconds))
        finally:
            for s in servers.values():
                s.stop()
    rows: list[dict[str, Any]] = []
    for row in rows_run:
        offs, ons = got[(row, False)], got[(row, True)]
        med = {k: {f: round(statistics.median(r[f] for r in runs), 2) for f in
                   ("per_s", "p50_ms", "p99_ms", "cpu_us", "valkey_us_per_req")}
               for k, runs in (("off", offs), ("on", ons))}
        rows.append({
            "request": row, **{f"{k}_{f}": v for k, m in med.items() for f, v in m.items()},
            "cpu_cost": round(statistics.median(b["cpu_us"] / a["cpu_us"] - 1
                                                for a, b in zip(offs, ons, strict=True)), 3),
            "rate_cost": round(statistics.median(1 - b["per_s"] / a["per_s"]
                                                 for a, b in zip(offs, ons, strict=True)), 3)})
    return {"scenario": "risk_cost",
            "params": {"tool": "wrk -t1; bench/request_loadgen.c", "connections": CONNS,
                       "seconds": seconds, "rounds": rounds, "markets": MARKETS},
            "env": env, "rows": rows,
            "columns": ["request", "off_per_s", "on_per_s", "off_p99_ms", "on_p99_ms",
                        "off_cpu_us", "on_cpu_us", "off_valkey_us_per_req",
                        "on_valkey_us_per_req", "cpu_cost", "rate_cost"]}


def main() -> None:
    cli("risk_cost", run, __doc__)


if __name__ == "__main__":
    main()
