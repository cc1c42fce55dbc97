"""Runs the fan-out scenarios: one oddsfeed worker (`serve --workers 1`) and the naive
baseline under the same load in the same run, a saturation search, and idle memory."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgpack
import psutil

from oddsfeed.freeport import free_port

from ..common import environment, pct, spawn, wait_http
from .loadgen import run_process

SERVER_ENV = {"ODDSFEED_AUTH__ANONYMOUS_READ": "true",
              "ODDSFEED_FANOUT__IP_CONNECT_PER_S": "1000000",
              "ODDSFEED_FANOUT__MAX_CONNECTIONS": "200000",
              "ODDSFEED_FANOUT__MAX_SUBSCRIPTIONS": "100000",
              "ODDSFEED_FANOUT__MAX_CONNECTIONS_PER_IP": "0",  # every load connection is local
              "ODDSFEED_LOG__LEVEL": "warning",
              # serve refuses the demo config's published secret; any free admin port
              "ODDSFEED_AUTH__HS256_SECRET": "bench-secret-0123456789-0123456789",
              "ODDSFEED_SERVER__ADMIN_PORT": "0"}


# where the C load generator is built (ignored by git)
BUILD = Path(__file__).resolve().parent.parent / "build"

# pipelined batches the driver has out at once
IN_FLIGHT = 4


class Server:
    """A server under test (``oddsfeed`` or ``naive``) and the pid whose CPU and RSS count."""

    def __init__(self, kind: str, redis_url: str, extra_env: dict[str, str] | None = None,
                 workers: int = 1):
        self.kind = kind
        self.port = free_port()
        if kind == "oddsfeed":
            http_port = self.http_port = free_port()
            self.proc = spawn(["-m", "oddsfeed", "serve", "--workers", str(workers),
                               "--redis-url", redis_url, "--ws-port", str(self.port),
                               "--http-port", str(http_port)],
                              env={**SERVER_ENV, **(extra_env or {})})
            wait_http(f"http://127.0.0.1:{http_port}/readyz")
            parent = psutil.Process(self.proc.pid)
            deadline = time.monotonic() + 30
            while True:  # every worker up (readyz answers as soon as the first one is)
                kids = sorted((c for c in parent.children()
                               if "resource_tracker" not in " ".join(c.cmdline())),
                              key=lambda c: -c.memory_info().rss)
                if len(kids) >= workers or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            self.targets = kids[:workers] or [parent]
        else:
            self.proc = spawn(["-m", "bench.fanout.naive", str(self.port), redis_url])
            deadline = time.monotonic() + 20
            while True:
                try:
                    import socket
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            self.targets = [psutil.Process(self.proc.pid)]

    def rss(self) -> int:
        """RSS of the serving process(es), summed over workers."""
        return sum(int(t.memory_info().rss) for t in self.targets)

    def cpu_s(self) -> float:
        """CPU seconds of the serving process(es) so far."""
        return cpu_s(self.targets)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except Exception:
            self.proc.kill()
            self.proc.wait()


def create_markets(redis_url: str, mids: list[str]) -> None:
    async def main() -> None:
        from oddsfeed.core.model import MarketUpdate
        from oddsfeed.store import Store

        s = await Store.connect(redis_url)
        for m in mids:
            await s.apply(MarketUpdate(market=m, fields={"event": "e", "sport": "s", "name": m},
                                       selections={"h": {"name": "H", "price": 20000}},
                                       create=True, replace=True))
        await s.close()
    asyncio.run(main())


async def drive(kind: str, redis_url: str, markets: list[str], rate: float,
                duration_s: float, apply_ms: list[float] | None = None) -> int:
    """Apply (oddsfeed) or publish (naive) ``rate`` updates/s for ``duration_s``; returns the
    number sent.

    Every millisecond the updates due are sent as one pipelined batch (``Store.apply_many``,
    or a pipeline of PUBLISH), as a feed adapter with a backlog would: one update per round
    trip cost this process 0.3-0.4 cores at 2,000 updates/s, taken from the machine the
    server under test shares. At most ``IN_FLIGHT`` batches are out at once; what falls due
    meanwhile joins the next batch. ``ts`` is stamped right before each batch is sent (a
    batch waiting for its turn is not counted as fan-out latency); how long each batch took
    is appended to ``apply_ms``."""
    import uvloop  # noqa: F401  (the caller runs us on uvloop)
    from redis.asyncio import Redis

    from oddsfeed.core.model import MarketUpdate
    from oddsfeed.store import Store

    store = await Store.connect(redis_url) if kind == "oddsfeed" else None
    client = Redis.from_url(redis_url) if kind != "oddsfeed" else None
    versions = dict.fromkeys(markets, 0)
    rng = random.Random(5)
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[Any]] = set()

    async def batch(items: list[tuple[str, int]]) -> None:
        t0 = time.time()
        now_ms = int(t0 * 1000)
        if store is not None:
            await store.apply_many([MarketUpdate(market=m, selections={"h": {"price": p}},
                                                 ts=now_ms) for m, p in items])
        else:
            assert client is not None
            pipe = client.pipeline(transaction=False)
            for m, p in items:
                versions[m] += 1
                pipe.publish(f"naive:{m}", msgpack.packb(
                    {"op": "delta", "m": m, "v": versions[m], "ts": now_ms,
                     "sel": {"h": {"price": p / 10000}}}))
            await pipe.execute()
        if apply_ms is not None:
            apply_ms.append((time.time() - t0) * 1000)

    start = loop.time()
    sent = 0
    due: list[tuple[str, int]] = []
    while loop.time() - start < duration_s:
        target = int((loop.time() - start) * rate)
        while sent < target:
            due.append((rng.choice(markets), 11000 + sent % 80000))
            sent += 1
        if due and len(pending) < IN_FLIGHT:
            t = asyncio.create_task(batch(due))
            pending.add(t)
            t.add_done_callback(pending.discard)
            due = []
        await asyncio.sleep(0.001)
    if due:
        pending.add(asyncio.create_task(batch(due)))
    await asyncio.gather(*pending)
    if store:
        await store.close()
    if client:
        await client.aclose()
    return sent


def c_loadgen() -> str | None:
    """The C load generator (loadgen.c), compiled once per source version into
    ``bench/build``; None when BENCH_LOADGEN=python or no C compiler is found (the Python
    one, loadgen.py, is then used: the same checks at several times the CPU)."""
    if os.environ.get("BENCH_LOADGEN", "c") == "python":
        return None
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        print("  no C compiler: the Python load generator is used", file=sys.stderr)
        return None
    src = Path(__file__).with_name("loadgen.c")
    exe = BUILD / f"loadgen-{hashlib.sha256(src.read_bytes()).hexdigest()[:12]}"
    if not exe.exists():
        BUILD.mkdir(parents=True, exist_ok=True)
        tmp = exe.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run([cc, "-O2", "-Wall", "-o", str(tmp), str(src)], check=True)
        tmp.replace(exe)
    return str(exe)


class Load:
    """Load-generator processes holding ``len(subs)`` connections to one server: the C
    load generator when it builds, else the Python one. :meth:`start` begins the
    measurement, :meth:`finish` ends it and returns each process's figures."""

    def __init__(self, kind: str, port: int, subs: list[list[str]], procs: int = 2,
                 first_ip: int = 2) -> None:
        n = len(subs)
        # each process holds its connections' file descriptors: stay well under the limit
        procs = max(procs, -(-n // int(fd_limit() * 0.75)))
        # beyond ~28k connections one source address runs out of ephemeral ports
        ips = [f"127.0.0.{first_ip + i}" for i in range(max(1, n // 20000 + 1))]
        self.next_ip = first_ip + len(ips)
        per = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
        parts, off = [], 0
        for k in per:
            parts.append(subs[off:off + k])
            off += k
        self.exe = c_loadgen()
        if self.exe is not None:
            self.children = [subprocess.Popen(
                [self.exe, kind, "127.0.0.1", str(port), ",".join(ips)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in parts]
            for child, part in zip(self.children, parts):
                assert child.stdin is not None
                child.stdin.write(f"{len(part)}\n".encode()
                                  + "".join(" ".join(ms) + "\n" for ms in part).encode())
                child.stdin.flush()
            self.connected = sum(self._ready(child) for child in self.children)
            self.pids = [c.pid for c in self.children]
            return
        ctx = mp.get_context("spawn")
        self.out, self.ready = ctx.Queue(), ctx.Queue()
        self.go, self.stop_ev = ctx.Event(), ctx.Event()
        self.procs = []
        for part in parts:
            p = ctx.Process(target=run_process, args=(
                "127.0.0.1", port, kind, part, self.out, self.ready, self.go,
                self.stop_ev, ips), daemon=True)
            p.start()
            self.procs.append(p)
        self.connected = sum(self.ready.get(timeout=600) for _ in self.procs)
        self.pids = [p.pid for p in self.procs if p.pid is not None]

    @staticmethod
    def _ready(child: subprocess.Popen[bytes]) -> int:
        assert child.stdout is not None
        line = child.stdout.readline().split()  # bounded: the process's own sync timeout
        if len(line) != 2 or line[0] != b"ready":
            child.kill()
            raise RuntimeError(f"load generator failed to start: {line!r}")
        return int(line[1])

    def start(self) -> None:
        """The measurement starts: latencies are recorded from now on."""
        if self.exe is not None:
            for child in self.children:
                assert child.stdin is not None
                child.stdin.write(b"go\n")
                child.stdin.flush()
        else:
            self.go.set()

    def cpu_s(self) -> float:
        """CPU seconds the load-generator processes used so far."""
        return cpu_s(self.pids)

    def finish(self) -> list[dict[str, Any]]:
        if self.exe is not None:
            res = []
            for child in self.children:
                try:
                    out, _ = child.communicate(b"stop\n", timeout=120)
                    res.append(json.loads(out.splitlines()[-1]))
                finally:
                    if child.poll() is None:
                        child.kill()
                        child.wait()
            return res
        self.stop_ev.set()
        res = [self.out.get(timeout=120) for _ in self.procs]
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
        return res


def cpu_s(processes: Iterable[psutil.Process | int]) -> float:
    """User + system CPU seconds of ``processes`` (or pids) so far; gone ones count 0."""
    total = 0.0
    for p in processes:
        try:
            t = (p if isinstance(p, psutil.Process) else psutil.Process(p)).cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def _busy(a: Any, b: Any) -> float:
    """CPU seconds all processes spent between two ``psutil.cpu_times()`` readings."""
    idle = (b.idle - a.idle) + (getattr(b, "iowait", 0) - getattr(a, "iowait", 0))
    total = sum(b) - sum(a)
    return float(total - idle)


def profile(server: Server, kind: str, rate: float, duration_s: float) -> Any:
    """With BENCH_PROFILE=DIR, py-spy records the server under test while the load runs
    (folded stacks in DIR/<impl>-<rate>.txt); returns the py-spy process or None."""
    import os
    import shutil
    import subprocess

    out = os.environ.get("BENCH_PROFILE")
    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not out or not os.path.exists(spy):
        return None
    os.makedirs(out, exist_ok=True)
    return subprocess.Popen([spy, "record", "--nonblocking", "-r", "200", "-f", "raw",
                             "-d", str(int(duration_s)), "-p", str(server.targets[0].pid),
                             "-o", os.path.join(out, f"{kind}-{int(rate)}.txt")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_scenario(kind: str, redis_url: str, *, conns: int, markets: int, subs_per_conn: int,
                 rate: float, duration_s: float, procs: int = 2,
                 workers: int = 1) -> dict[str, Any]:
    """One measurement of one implementation at one offered rate; returns its figures
    (``workers``: oddsfeed worker processes, CPU and RSS summed over them)."""
    import uvloop

    mids = [f"f{i}" for i in range(markets)]
    if kind == "oddsfeed":
        create_markets(redis_url, mids)
    server = Server(kind, redis_url, workers=workers if kind == "oddsfeed" else 1)
    try:
        rng = random.Random(9)
        subs = [rng.sample(mids, subs_per_conn) for _ in range(conns)]
        t_ramp = time.monotonic()
        load = Load(kind, server.port, subs, procs)
        ramp_s = time.monotonic() - t_ramp  # every connection open and holding its snapshots
        time.sleep(1.0)  # let snapshots drain
        rss = server.rss()
        load.start()
        cpu0, t0 = server.cpu_s(), time.monotonic()
        busy0 = psutil.cpu_times()
        gen0 = load.cpu_s()
        me = [psutil.Process()]  # the driver runs in this process
        drv0 = cpu_s(me)
        profiler = profile(server, kind, rate, duration_s)
        apply_ms: list[float] = []
        sent = uvloop.run(drive(kind, redis_url, mids, rate, duration_s, apply_ms))
        elapsed = time.monotonic() - t0
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
    return {"impl": kind, "workers": workers if kind == "oddsfeed" else 1,
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
            "machine_busy_cores": round(_busy(busy0, busy1) / elapsed, 2),
            "ramp_s": round(ramp_s, 1),
            "deliveries_per_cpu_s": round(received / server_s) if server_s else 0,
            "frames": sum(r["frames"] for r in results),
            "rss_mb": round(rss / 2**20, 1), "kb_per_conn": round(rss / 1024 / conns, 1),
            "gaps": sum(r["gaps"] for r in results)}


def fd_limit() -> int:
    """The open-file limit a process can raise itself to (the hard limit)."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 1 << 20 if hard == resource.RLIM_INFINITY else int(hard)


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


def sustained(r: dict[str, Any]) -> bool:
    """p99 <= 100 ms and >= 95% delivered; for oddsfeed also no gap. The naive baseline is
    at-most-once by design (Valkey drops a pub/sub reader that falls behind, broadcast skips
    busy connections): its gaps are reported, not held against its throughput."""
    ok = r["p99_ms"] <= 100 and r["delivery_ratio"] >= 0.95
    return bool(ok and (r["gaps"] == 0 or r["impl"] == "naive"))


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
                       "duration_s": duration, "rates": rates,
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
