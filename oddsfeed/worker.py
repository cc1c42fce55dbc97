"""Composition of one serving process (part of the CLI's composition root): the store, the
fan-out hub and WebSocket server, and the HTTP API, started and stopped in order; and the
supervisor that runs N such processes on shared ports (SO_REUSEPORT)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from types import TracebackType
from typing import Any

from .freeport import free_port
from .settings import Settings

# file descriptors a worker needs besides its WebSocket connections (store, HTTP, files)
FD_RESERVE = 256
# first and longest wait between attempts to reach the store at a worker's start (seconds)
STORE_RETRY_S = (0.25, 5.0)
# first and longest wait before the supervisor restarts a worker that died (seconds); a
# worker that ran RESTART_RESET_S before dying is restarted after the first wait again
RESTART_BACKOFF_S = (0.5, 30.0)
RESTART_RESET_S = 60.0


class Worker:
    """One fan-out + API process's services; ``async with Worker(...) as w`` runs them.

    ``ws_port``/``http_port``/``admin_port`` tell the bound ports after entry (useful with
    port 0).
    """

    def __init__(self, settings: Settings, redis_url: str, *, demo_token: str | None = None,
                 demo: bool = False, reuse_port: bool = True) -> None:
        self.settings = settings
        self.redis_url = redis_url
        self.demo_token = demo_token
        self.demo = demo  # the laptop demo: the published demo secret is accepted
        self.reuse_port = reuse_port
        self.ws_port = settings.server.ws_port
        self.http_port = settings.server.http_port
        self.admin_port = settings.server.admin_port
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Worker:
        try:
            return await self._start()
        except BaseException:
            await self._stack.aclose()  # a half-started worker releases what it holds
            raise

    async def _start(self) -> Worker:
        from aiohttp import web

        from .api.admin import add_admin_routes, build_admin_app
        from .api.app import build_app
        from .api.listener import HttpListener, runner_options
        from .api.risk import recorder as risk_recorder
        from .api.validation_metrics import VALIDATION_METRICS
        from .auth import Authenticator
        from .clock import now_ms
        from .fanout import FanoutServer, Hub
        from .services.validation import validate_slip
        from .store import Store

        s = self.settings
        stack = self._stack
        store = await Store.connect(self.redis_url, cluster=s.redis.cluster,
                                    history_len=s.redis.history_len,
                                    auto_pipeline=s.redis.auto_pipeline,
                                    read_batches_in_flight=s.redis.read_batches_in_flight)
        stack.push_async_callback(store.close)
        self.store = store
        hub = Hub(store, max_subscriptions=s.fanout.max_subscriptions,
                  max_missing=s.fanout.max_missing_subscriptions)
        await hub.start()
        stack.push_async_callback(hub.stop)
        self.hub = hub
        auth = Authenticator(s.auth, demo=self.demo)

        risk = risk_recorder(s.risk, store)  # one per process, shared by both tiers
        self.risk = risk

        async def validate(legs: Any, accept: str, sub: str) -> dict[str, Any]:
            arrived = now_ms()
            body = await validate_slip(store, legs, accept, metrics=VALIDATION_METRICS)
            if risk is not None:
                risk.offer(sub, legs, body, now_ms(), arrived)  # queued, off the answer's path
            return body

        fan = FanoutServer(hub, fanout=s.fanout, auth=auth, host=s.server.host,
                           port=s.server.ws_port, validate=validate, reuse_port=self.reuse_port)
        await fan.start()
        fan_open = [True]

        async def close_fanout() -> None:
            if fan_open[0]:
                fan_open[0] = False
                await fan.close()

        stack.push_async_callback(close_fanout)  # if the rest of the start-up fails
        self.fanout = fan
        self.ws_port = fan.port
        app = build_app(s, store, auth=auth, readiness=lambda: hub.ready,
                        demo_token=self.demo_token, ws_port=fan.port, risk=risk)
        # No admin port, or the API's own: /metrics on the API port (the contract's place);
        # otherwise the admin routes get their own bind.
        shared_admin = s.server.admin_port is None or (
            s.server.http_port != 0 and s.server.admin_port == s.server.http_port
            and s.server.admin_host == s.server.host)
        if shared_admin:
            add_admin_routes(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               **runner_options(s.api.header_timeout_s))
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        admin: web.AppRunner | None = None
        if not shared_admin:
            admin = web.AppRunner(build_admin_app(), access_log=None, handle_signals=False,
                                  **runner_options(s.api.header_timeout_s))
            await admin.setup()
            stack.push_async_callback(admin.cleanup)
        listener = HttpListener(max_connections=s.api.max_connections)
        self.http_port = await listener.start(runner, s.server.host, s.server.http_port,
                                              reuse_port=self.reuse_port)
        stack.push_async_callback(listener.close)  # if the rest of the start-up fails
        self.listener = listener
        if admin is None:
            self.admin_port = self.http_port
        else:
            # Any free admin port when the API port is any free port (server.admin_port).
            admin_port = (s.server.admin_port or 0) if s.server.http_port else 0
            await web.TCPSite(admin, s.server.admin_host, admin_port,
                              reuse_port=self.reuse_port).start()
            self.admin_port = int(admin.addresses[0][1])
        # Shutdown order (the stack unwinds in reverse): stop accepting HTTP, close WebSocket
        # clients (1001), finish in-flight HTTP requests, then the hub and the store.
        stack.push_async_callback(close_fanout)
        stack.push_async_callback(listener.close)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self._stack.aclose()


def tune_gc(threshold: int) -> None:
    """Make the cyclic garbage collector's pauses rare and short for a long-running server:
    freeze what start-up allocated (modules, settings, the app: never garbage) so no
    collection scans it again, and collect the young generation every ``threshold`` net
    allocations instead of 700. With the defaults, messages in flight at each young
    collection are promoted and soon trigger a full collection over every connection's
    objects (measured: 50-110 ms pauses at 1,000 connections, the p99). 0 keeps Python's
    defaults. Reference cycles are still collected, only less often."""
    if threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold, 20, 50)


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's open-file soft limit towards ``wanted`` (at most the hard
    limit: an unprivileged process cannot go further) and return the new soft limit. Each
    WebSocket connection is a file descriptor; a soft limit of 1,024 would cap a worker far
    below ``fanout.max_connections``."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return int(soft)


async def wait_for_store(settings: Settings, redis_url: str, stop: asyncio.Event,
                         log: Any) -> bool:
    """Return True once the store at ``redis_url`` answers, False if ``stop`` is set first.

    Meanwhile the HTTP port answers /healthz 200, /readyz 503 and everything else 503 with
    Retry-After, and the attempts back off from STORE_RETRY_S[0] to STORE_RETRY_S[1]
    seconds. Call it before entering a Worker on a store that may be down.
    """
    from aiohttp import web

    from .api.app import build_unready_app
    from .api.listener import HttpListener, runner_options
    from .core.errors import StoreError
    from .store import Store

    delay, runner = STORE_RETRY_S[0], None
    listener = HttpListener(max_connections=settings.api.max_connections)
    try:
        while not stop.is_set():
            try:
                store = await Store.connect(redis_url, cluster=settings.redis.cluster,
                                            socket_timeout=2.0)
            except StoreError as exc:
                log.warning("store unreachable; retrying", error=str(exc), retry_in_s=delay)
            else:
                await store.close()
                return True
            if runner is None:
                runner = web.AppRunner(build_unready_app(), access_log=None,
                                       handle_signals=False,
                                       **runner_options(settings.api.header_timeout_s))
                await runner.setup()
                await listener.start(runner, settings.server.host, settings.server.http_port,
                                     reuse_port=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, STORE_RETRY_S[1])
        return False
    finally:
        await listener.close()
        if runner is not None:
            await runner.cleanup()



def _worker_main(settings_json: str, redis_url: str, index: int) -> None:
    """Entry point of one worker process (spawned)."""
    import sys

    from redis.exceptions import RedisError

    from .core.errors import StoreError
    from .log import configure_logging, get_logger
    from .loop import run_async

    settings = Settings.model_validate_json(settings_json)
    configure_logging(settings.log.level, settings.log.format, sys.stderr.isatty())
    log = get_logger("oddsfeed.worker", worker=index)
    fds = raise_fd_limit(settings.fanout.max_connections + FD_RESERVE)
    if fds < settings.fanout.max_connections + FD_RESERVE:
        log.warning("open-file limit below fanout.max_connections: connections past it fail",
                    limit=fds, max_connections=settings.fanout.max_connections)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # The store may be down at start, or go down between the check and the worker's
        # own connect: wait for it again rather than exit.
        while await wait_for_store(settings, redis_url, stop, log):
            try:
                worker = Worker(settings, redis_url)
                await worker.__aenter__()
            except (StoreError, RedisError, OSError) as exc:
                log.warning("worker start failed; waiting for the store", error=str(exc))
                continue
            try:
                tune_gc(settings.server.gc_threshold)
                from .fanout.writer import C_SEND_LOOP

                # c_send_loop: whether oddsfeed/fanout/_send.c was built (without it every
                # frame goes through its transport: ~10% more CPU per send at 10,000
                # connections)
                log.info("worker ready", ws_port=worker.ws_port, http_port=worker.http_port,
                         admin_port=worker.admin_port, pid=os.getpid(),
                         c_send_loop=C_SEND_LOOP)
                await stop.wait()
                log.info("worker stopping")
            finally:
                await worker.__aexit__(None, None, None)
            return

    run_async(main())


def serve_workers(settings: Settings, redis_url: str, workers: int) -> int:
    """Run ``workers`` processes sharing the WebSocket and HTTP ports until SIGTERM/SIGINT
    (forwarded to them); returns the exit code (0 after a requested stop).

    A worker that dies is logged and started again after a backoff (RESTART_BACKOFF_S);
    metrics are aggregated across workers through a private PROMETHEUS_MULTIPROC_DIR.
    """
    from prometheus_client import multiprocess as prom_multiprocess

    from .log import get_logger

    log = get_logger("oddsfeed.supervisor")
    server = settings.server
    admin_port = server.admin_port if server.http_port else 0  # see server.admin_port
    if workers > 1 and 0 in (server.ws_port, server.http_port, admin_port):
        # Port 0 would give each worker its own port: pick shared ones first.
        server = server.model_copy(update={
            "ws_port": server.ws_port or free_port(server.host),
            "http_port": server.http_port or free_port(server.host),
            "admin_port": admin_port or free_port(server.admin_host)})
        settings = settings.model_copy(update={"server": server})
    metrics_dir = tempfile.mkdtemp(prefix="oddsfeed-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    ctx = multiprocessing.get_context("spawn")
    settings_json = settings.model_dump_json()
    slots = [_Slot(i) for i in range(workers)]
    stopping = False

    def start(slot: _Slot) -> None:
        slot.proc = ctx.Process(target=_worker_main, args=(settings_json, redis_url, slot.index),
                                name=f"oddsfeed-worker-{slot.index}", daemon=False)
        slot.proc.start()
        slot.started = time.monotonic()
        slot.restart_at = None

    def forward(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for slot in slots:
            p = slot.proc
            if p is not None and p.pid is not None and p.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for slot in slots:
            start(slot)
        while True:
            for slot in slots:
                p = slot.proc
                if p is None or slot.restart_at is not None:
                    continue
                p.join(timeout=0.2 / len(slots))
                if p.is_alive():
                    continue
                with contextlib.suppress(Exception):
                    prom_multiprocess.mark_process_dead(p.pid)  # type: ignore[no-untyped-call]
                if stopping:
                    slot.proc = None
                    continue
                ran_s = time.monotonic() - slot.started
                slot.crashes = 1 if ran_s >= RESTART_RESET_S else slot.crashes + 1
                delay = min(RESTART_BACKOFF_S[0] * 2 ** (slot.crashes - 1), RESTART_BACKOFF_S[1])
                slot.restart_at = time.monotonic() + delay
                log.error("worker exited; restarting it", worker=slot.index, pid=p.pid,
                          exit_code=p.exitcode, ran_s=round(ran_s, 1), restart_in_s=delay)
            if stopping and all(slot.proc is None or slot.restart_at is not None
                                for slot in slots):
                return 0
            for slot in slots:
                if (slot.restart_at is not None and not stopping
                        and time.monotonic() >= slot.restart_at):
                    start(slot)
                    log.info("worker restarted", worker=slot.index, pid=slot.proc.pid)
            time.sleep(0.05)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        shutil.rmtree(metrics_dir, ignore_errors=True)


class _Slot:
    """One worker position of the supervisor: its process and restart state."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: Any = None  # multiprocessing.Process (spawn context)
        self.started = 0.0
        self.crashes = 0
        self.restart_at: float | None = None
