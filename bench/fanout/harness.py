"""What the fan-out scenarios run: the server under test (oddsfeed or the naive baseline),
the market driver, the load generator processes and the CPU accounting."""

from __future__ import annotations

import asyncio
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

from ..common import build_c, spawn, wait_http
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

# pipelined batches the driver has out at once
IN_FLIGHT = 4


class Server:
    """A server under test (``oddsfeed``, ``naive`` or ``naive-script``) and the pid whose CPU
    and RSS count."""

    def __init__(self, kind: str, redis_url: str, extra_env: dict[str, str] | None = None,
                 workers: int = 1, tree: str | None = None, markets: list[str] | None = None):
        self.kind = kind
        self.port = free_port()
        if kind == "oddsfeed":
            http_port = self.http_port = free_port()
            args = ["-m", "oddsfeed", "serve", "--workers", str(workers),
                    "--redis-url", redis_url, "--ws-port", str(self.port),
                    "--http-port", str(http_port)]
            env = {**SERVER_ENV, **(extra_env or {})}
            if tree is None:
                self.proc = spawn(args, env=env)
            else:  # another checkout's oddsfeed package (an A/B run): -m imports from cwd
                self.proc = subprocess.Popen([sys.executable, *args], cwd=tree,
                                             env={**os.environ, **env},
                                             stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL)
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
        else:  # naive; naive-script listens on the store channels of ``markets``
            self.proc = spawn(["-m", "bench.fanout.naive", str(self.port), redis_url,
                               *(markets or [] if kind == "naive-script" else [])])
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


def use_scripts_of(store: Any, tree: str) -> None:
    """Make ``store`` apply with the apply script of the checkout in ``tree`` (its
    published.lua in front when it has one): what that checkout's server reads from the
    store is then what its own script publishes."""
    from oddsfeed.store.autopipe import AutoPipeline

    lua = Path(tree, "oddsfeed", "store")
    text = "".join(f.read_text() for f in (lua / "published.lua", lua / "apply.lua")
                   if f.exists())
    store._apply = store.client.register_script(text)
    store._writes = AutoPipeline(store.client, ordered=True,
                                 scripts={store._apply.sha: store._apply.script})


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
                duration_s: float, apply_ms: list[float] | None = None,
                encoding: str = "msgpack", tree: str | None = None) -> int:
    """Apply (oddsfeed, naive-script) or publish (naive) ``rate`` updates/s for
    ``duration_s``; returns the number sent. ``tree``: apply with that checkout's scripts
    (an A/B run's oddsfeed-base reads what its own apply script publishes).

    Every millisecond the updates due are sent as one pipelined batch (``Store.apply_many``,
    or a pipeline of PUBLISH), as a feed adapter with a backlog would: one update per round
    trip cost this process 0.3-0.4 cores at 2,000 updates/s, taken from the machine the
    server under test shares. At most ``IN_FLIGHT`` batches are out at once; what falls due
    meanwhile joins the next batch. ``ts`` is stamped right before each batch is sent (a
    batch waiting for its turn is not counted as fan-out latency); how long each batch took
    is appended to ``apply_ms``. The naive server broadcasts what is published as is, so
    its payloads are in ``encoding`` (oddsfeed encodes for each client itself)."""
    import uvloop  # noqa: F401  (the caller runs us on uvloop)
    from redis.asyncio import Redis

    from oddsfeed.core.model import MarketUpdate
    from oddsfeed.store import Store

    scripted = kind != "naive"
    store = await Store.connect(redis_url) if scripted else None
    client = Redis.from_url(redis_url) if not scripted else None
    if store is not None and tree is not None:
        use_scripts_of(store, tree)
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
                msg = {"op": "delta", "m": m, "v": versions[m], "ts": now_ms,
                       "sel": {"h": {"price": p / 10000}}}
                pipe.publish(f"naive:{m}", json.dumps(msg, separators=(",", ":"))
                             if encoding == "json" else msgpack.packb(msg))
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
    return build_c(cc, src, src.with_name("loadgen_json.h"))


class Load:
    """Load-generator processes holding ``len(subs)`` connections to one server: the C
    load generator when it builds, else the Python one. :meth:`start` begins the
    measurement, :meth:`finish` ends it and returns each process's figures."""

    def __init__(self, kind: str, port: int, subs: list[list[str]], procs: int = 2,
                 first_ip: int = 2, encoding: str = "msgpack") -> None:
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
                [self.exe, kind, "127.0.0.1", str(port), ",".join(ips),
                 *(["json"] if encoding == "json" else [])],
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
                self.stop_ev, ips, encoding), daemon=True)
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


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far, read from /proc/<pid>/stat (0 when it
    cannot be read)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_cpu_s(a: Any, b: Any) -> float:
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


def fd_limit() -> int:
    """The open-file limit a process can raise itself to (the hard limit)."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 1 << 20 if hard == resource.RLIM_INFINITY else int(hard)
