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
import socket
import tempfile
from types import TracebackType
from typing import Any

from .settings import Settings

# file descriptors a worker needs besides its WebSocket connections (store, HTTP, files)
FD_RESERVE = 256


class Worker:
    """One fan-out + API process's services; ``async with Worker(...) as w`` runs them.

    ``ws_port``/``http_port`` tell the bound ports after entry (useful with port 0).
    """

    def __init__(self, settings: Settings, redis_url: str, *, demo_token: str | None = None,
                 reuse_port: bool = True) -> None:
        self.settings = settings
        self.redis_url = redis_url
        self.demo_token = demo_token
        self.reuse_port = reuse_port
        self.ws_port = settings.server.ws_port
        self.http_port = settings.server.http_port
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Worker:
        from aiohttp import web

        from .api.app import build_app
        from .auth import Authenticator
        from .fanout import FanoutServer, Hub
        from .store import Store
        from .validation import validate_slip

        s = self.settings
        stack = self._stack
        store = await Store.connect(self.redis_url, cluster=s.redis.cluster,
                                    history_len=s.redis.history_len)
        stack.push_async_callback(store.close)
        self.store = store
        hub = Hub(store, max_subscriptions=s.fanout.max_subscriptions,
                  max_missing=s.fanout.max_missing_subscriptions)
        await hub.start()
        stack.push_async_callback(hub.stop)
        self.hub = hub
        auth = Authenticator(s.auth)

        async def validate(legs: Any, accept: str) -> dict[str, Any]:
            return await validate_slip(store, legs, accept)

        fan = FanoutServer(hub, fanout=s.fanout, auth=auth, host=s.server.host,
                           port=s.server.ws_port, validate=validate, reuse_port=self.reuse_port)
        await fan.start()
        self.fanout = fan
        self.ws_port = fan.port
        app = build_app(s, store, auth=auth, ready=lambda: hub.ready, demo_token=self.demo_token,
                        ws_port=fan.port)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, s.server.host, s.server.http_port, reuse_port=self.reuse_port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None)
        if sockets:
            self.http_port = int(sockets[0].getsockname()[1])
        # Shutdown order: stop accepting HTTP, close WebSocket clients (1001), then the rest.
        stack.push_async_callback(runner.cleanup)
        stack.push_async_callback(fan.close)
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


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _worker_main(settings_json: str, redis_url: str, index: int) -> None:
    """Entry point of one worker process (spawned)."""
    import sys

    from .cli import run_async
    from .log import configure_logging, get_logger

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
        async with Worker(settings, redis_url) as w:
            tune_gc(settings.server.gc_threshold)
            from .fanout import server as fanout_server

            # c_send_loop: whether oddsfeed/fanout/_send.c was built (without it every frame
            # goes through its transport: ~10% more CPU per send at 10,000 connections)
            log.info("worker ready", ws_port=w.ws_port, http_port=w.http_port, pid=os.getpid(),
                     c_send_loop=fanout_server.send_all is not None)
            await stop.wait()
            log.info("worker stopping")

    run_async(main())


def serve_workers(settings: Settings, redis_url: str, workers: int) -> int:
    """Run ``workers`` processes sharing the WebSocket and HTTP ports; returns the exit code.

    SIGTERM/SIGINT are forwarded; metrics are aggregated across workers through a private
    PROMETHEUS_MULTIPROC_DIR.
    """
    server = settings.server
    if workers > 1 and (server.ws_port == 0 or server.http_port == 0):
        # Port 0 would give each worker its own port: pick shared ones first.
        server = server.model_copy(update={
            "ws_port": server.ws_port or free_port(server.host),
            "http_port": server.http_port or free_port(server.host)})
        settings = settings.model_copy(update={"server": server})
    metrics_dir = tempfile.mkdtemp(prefix="oddsfeed-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(settings.model_dump_json(), redis_url, i),
                         name=f"oddsfeed-worker-{i}", daemon=False) for i in range(workers)]
    stopping = False

    def forward(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.pid is not None and p.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for p in procs:
            p.start()
        code = 0
        while any(p.is_alive() for p in procs):
            for p in procs:
                p.join(timeout=0.2)
                if not p.is_alive() and p.exitcode not in (0, None) and not stopping:
                    code = 1
                    forward(signal.SIGTERM, None)
        for p in procs:
            if p.exitcode not in (0, -signal.SIGTERM) and not stopping:
                code = 1
        return code
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        shutil.rmtree(metrics_dir, ignore_errors=True)
