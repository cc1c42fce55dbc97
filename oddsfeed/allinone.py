"""The all-in-one ``oddsfeed run`` (composition root): an embedded Valkey unless
redis.url is set, one worker (fan-out and API), and the demo feed, stopped in reverse order
on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import Callable
from typing import Any

import click

from oddsfeed.clock import now_ms
from oddsfeed.core.redact import redact_url
from oddsfeed.log import get_logger
from oddsfeed.loop import install_stop_signals
from oddsfeed.settings import Settings


def demo_mode(settings: Settings) -> bool:
    """Whether ``oddsfeed run`` is the laptop demo: the published demo secret on a loopback
    host. Only then does it mint a demo token and serve ``GET /v1/demo/token``."""
    from oddsfeed.auth import DEMO_SECRET

    return settings.auth.hs256_secret == DEMO_SECRET and _is_loopback(settings.server.host)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def run_all(settings: Settings, *, stop: asyncio.Event | None = None) -> int:
    """Run every all-in-one service until SIGINT/SIGTERM (or ``stop`` is set), then shut
    them down in reverse order. Returns the process exit code: 0 on a requested stop, 1
    when a service task failed.
    """
    log = get_logger("oddsfeed.run")
    stop = stop or asyncio.Event()
    install_stop_signals(stop, log)

    async with contextlib.AsyncExitStack() as stack:
        # Every service registers its shutdown on `stack` (it runs in reverse order) and
        # long-running work as a task in `tasks`; a task that ends early stops the rest.
        tasks: list[asyncio.Task[Any]] = []

        redis_url = settings.redis.url
        if not redis_url:
            from oddsfeed.embedded import EmbeddedCluster, EmbeddedValkey

            if settings.redis.cluster:
                # Started in this (the loop's) thread: PR_SET_PDEATHSIG follows the thread.
                cluster = EmbeddedCluster(n_primaries=3).start()
                stack.callback(_stop_logged, cluster.stop, log, "embedded valkey cluster")
                redis_url = cluster.url
                log.info("embedded valkey cluster started", urls=cluster.urls, pids=cluster.pids)
            else:
                valkey = EmbeddedValkey().start()
                stack.callback(_stop_logged, valkey.stop, log, "embedded valkey")
                redis_url = valkey.url
                log.info("embedded valkey started", url=redis_url, pid=valkey.pid)

        from oddsfeed.auth import Authenticator
        from oddsfeed.worker import FD_RESERVE, Worker, raise_fd_limit, tune_gc

        demo = demo_mode(settings)
        token = None
        if demo:
            token = Authenticator(settings.auth, demo=True).mint(
                "demo-trader", ["odds:read", "odds:write", "bets:validate", "risk:read"],
                ttl_s=min(86_400, settings.auth.max_token_lifetime_s), now_s=int(time.time()))
        else:
            log.info("not the demo (no demo secret on a loopback host): GET /v1/demo/token "
                     "is off; mint tokens with `oddsfeed token`")
        raise_fd_limit(settings.fanout.max_connections + FD_RESERVE)
        worker = await stack.enter_async_context(
            Worker(settings, redis_url, demo_token=token, demo=demo, reuse_port=False))
        tune_gc(settings.server.gc_threshold)
        if settings.demo.events > 0:
            from oddsfeed_ingest.simulator import SimulatorConfig, run_simulator

            # Half the events also have a backup feed; the primary drops out on them for
            # longer than the staleness period now and then, so failover shows.
            stale_s = settings.ingest.staleness_s
            sim = SimulatorConfig(events=settings.demo.events, seed=settings.demo.seed,
                                  rate_per_s=settings.demo.rate_per_s, backup_every=2,
                                  outage_s=stale_s + 10, outage_every_s=3 * (stale_s + 10))
            tasks.append(asyncio.create_task(run_simulator(worker.store, sim, stop=stop,
                                                           start_ms=now_ms(),
                                                           staleness_s=stale_s),
                                             name="demo-simulator"))
        if demo and settings.risk.enabled and settings.risk.demo_bettors:
            tasks.append(asyncio.create_task(_bettors(settings, worker, stop),
                                             name="demo-bettors"))
        if token:
            click.echo(f"trader token (odds:write, risk:read, 24 h): {token}", err=True)

        host = settings.server.host
        log.info(
            "oddsfeed ready",
            redis_url=redact_url(redis_url),
            ws_url=f"ws://{host}:{worker.ws_port}/ws",
            http_url=f"http://{host}:{worker.http_port}/",
            admin_url=f"http://{settings.server.admin_host}:{worker.admin_port}/metrics",
        )
        code = await _wait_for_stop(stop, tasks, log)
        log.info("oddsfeed stopping")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    log.info("oddsfeed stopped", exit_code=code)
    return code


async def _bettors(settings: Settings, worker: Any, stop: asyncio.Event) -> None:
    """The demo's simulated bettors (sharp and normal) until ``stop``; each bettor gets a
    token of its own subject, minted with the demo secret."""
    from oddsfeed.auth import Authenticator
    from oddsfeed_ingest.bettors import BettorsConfig, run_bettors

    auth = Authenticator(settings.auth, demo=True)
    ttl = min(86_400, settings.auth.max_token_lifetime_s)

    def token_for(sub: str) -> str:
        return auth.mint(sub, ["odds:read", "bets:validate"], ttl_s=ttl, now_s=int(time.time()))

    host = settings.server.host
    config = BettorsConfig(sharps=settings.risk.demo_sharps,
                           normals=settings.risk.demo_normals, seed=settings.demo.seed)
    await run_bettors(f"http://{host}:{worker.http_port}", f"ws://{host}:{worker.ws_port}/ws",
                      token_for, config, stop=stop)
    await stop.wait()


async def _wait_for_stop(stop: asyncio.Event, tasks: list[asyncio.Task[Any]], log: Any) -> int:
    waiter = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    code = 0
    for task in done:
        if task is waiter or task.cancelled():
            continue
        exc = task.exception()
        if exc is not None:
            log.error("service failed", task=task.get_name(), exc_info=exc)
            code = 1
        else:
            log.error("service ended unexpectedly", task=task.get_name())
            code = 1
    return code


def _stop_logged(stop_fn: Callable[[], None], log: Any, what: str) -> None:
    try:
        stop_fn()
    except Exception:
        log.exception("stop failed", what=what)
    else:
        log.info("stopped", what=what)
