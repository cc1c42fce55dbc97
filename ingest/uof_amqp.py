"""The UOF adapter's AMQP I/O: consume a Unified Odds Feed style topic exchange into
:class:`~oddsfeed_ingest.uof.UofState` and hand its updates on; owns no message format
(ingest/uof.py does) and never writes to the store itself.

:func:`run_uof` connects, binds a server-named queue to the exchange with the routing keys,
consumes in order, checks producers' liveness on a timer, and reconnects with jittered
exponential backoff when the broker goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import Counter

from oddsfeed.core.errors import ProviderDataError
from oddsfeed.core.model import MarketUpdate

from .errors import ProviderRefused
from .runner import FeedRunner
from .uof import PROVIDER, UofState
from .uof_mapping import load_uof_mapping

log = structlog.get_logger("oddsfeed.ingest.uof")
PRODUCER_DOWN = Counter("oddsfeed_ingest_uof_producer_down_total",
                        "times a UOF producer went down (alive missing or subscribed=0)",
                        ["source", "producer"])


class BrokerRefused(ProviderRefused):
    """The broker refused the credentials (a wrong or revoked access token): retrying would
    not help, and a provider may block an account that keeps trying."""


def masked_url(url: str) -> str:
    """``url`` without its credentials (the access token is the AMQP user name)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}***@{rest.rpartition('@')[2]}" if "@" in rest else url


async def run_uof(url: str, state: UofState,
                  on_updates: Callable[[list[MarketUpdate]], Awaitable[None]],
                  on_bad: Callable[[ProviderDataError], None], *,
                  stop: asyncio.Event,
                  exchange: str = "unifiedfeed",
                  routing_keys: Sequence[str] = ("#",),
                  on_alive: Callable[[list[str]], Awaitable[None]] | None = None,
                  clock: Callable[[], float] = time.time,
                  check_every_s: float = 0.5, prefetch: int = 256,
                  min_backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                  rng: random.Random | None = None) -> int:
    """Consume UOF messages from the topic ``exchange`` at the AMQP ``url`` until ``stop``.

    Each connection binds a new server-named, exclusive queue with ``routing_keys``, so
    nothing queued while disconnected is replayed (a real integration requests recovery
    instead). Good updates go to ``on_updates`` in message order, bad data to ``on_bad``,
    and the markets of a producer that said it is alive to ``on_alive``; producers are
    checked for missing alives every ``check_every_s``, connected or not. A failed or lost
    connection is retried with jittered exponential backoff, reset only by a connection that
    delivered a message. Returns the number of connections made; raises BrokerRefused when
    the broker refuses the credentials.
    """
    import aio_pika  # the one library of this adapter, loaded only when it runs

    rng = rng or random.Random()
    backoff = min_backoff_s
    connects = 0
    lock = asyncio.Lock()

    async def write(updates: list[MarketUpdate]) -> None:
        # One writer at a time, in the order the state produced them: a producer-down
        # suspension never overtakes an odds_change computed before it, nor the reverse.
        async with lock:
            await on_updates(updates)

    checker = asyncio.create_task(_check_producers(state, write, stop, clock,
                                                   check_every_s), name="uof producers")
    try:
        while not stop.is_set():
            got = False
            try:
                connection = await aio_pika.connect(url, timeout=10)
            except aio_pika.exceptions.ProbableAuthenticationError as exc:
                log.error("uof broker refused the credentials", url=masked_url(url))
                raise BrokerRefused(f"the broker at {masked_url(url)} refused the credentials "
                                    f"({str(exc)[:80]}); check the access token") from None
            except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
                log.warning("uof connect failed", url=masked_url(url), error=str(exc)[:200])
            else:
                connects += 1
                log.info("uof connected", url=masked_url(url), connects=connects)
                try:
                    got = await _consume(connection, state, write, on_bad, on_alive,
                                         stop, exchange, routing_keys, clock, prefetch)
                except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
                    log.warning("uof connection lost", error=str(exc)[:200])
                finally:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(connection.close(), 5)
            if stop.is_set():
                break
            if got:
                backoff = min_backoff_s
            wait = backoff * (0.5 + rng.random())  # jitter: clients do not return in step
            backoff = min(backoff * 2, max_backoff_s)
            log.info("uof reconnecting", in_s=round(wait, 2))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
    finally:
        checker.cancel()
        await asyncio.gather(checker, return_exceptions=True)
    return connects


async def _check_producers(state: UofState,
                           on_updates: Callable[[list[MarketUpdate]], Awaitable[None]],
                           stop: asyncio.Event, clock: Callable[[], float],
                           every_s: float) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
        out = state.check_producers(clock())
        for pid in out.down:
            PRODUCER_DOWN.labels(PROVIDER, pid).inc()
        if out.updates:
            try:
                await on_updates(out.updates)
            except Exception as exc:  # the top of a task: logged, checked again next time
                log.error("uof producer-down suspension failed", error=str(exc))


async def _consume(connection: Any, state: UofState,
                   on_updates: Callable[[list[MarketUpdate]], Awaitable[None]],
                   on_bad: Callable[[ProviderDataError], None],
                   on_alive: Callable[[list[str]], Awaitable[None]] | None,
                   stop: asyncio.Event, exchange: str, routing_keys: Iterable[str],
                   clock: Callable[[], float], prefetch: int) -> bool:
    """Consume one connection until it closes or ``stop``; True if it carried a message."""
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=prefetch)
    ex = await channel.get_exchange(exchange, ensure=True)
    queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
    for key in routing_keys:
        await queue.bind(ex, routing_key=key)
    inbox: asyncio.Queue[Any] = asyncio.Queue()

    async def deliver(message: Any) -> None:
        inbox.put_nowait(message)  # no await before it: delivery order is kept

    await queue.consume(deliver)
    log.info("uof consuming", exchange=exchange, routing_keys=list(routing_keys))
    closed = asyncio.ensure_future(channel.closed())
    stopper = asyncio.ensure_future(stop.wait())
    got = False
    try:
        while True:
            getter = asyncio.ensure_future(inbox.get())
            done, _ = await asyncio.wait([getter, closed, stopper],
                                         return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                if closed in done:
                    log.warning("uof channel closed by the broker")
                return got
            message = getter.result()
            got = True
            await _handle(message.body, state, on_updates, on_bad, on_alive, clock)
            await message.ack()
    finally:
        closed.cancel()
        stopper.cancel()


async def _handle(body: bytes, state: UofState,
                  on_updates: Callable[[list[MarketUpdate]], Awaitable[None]],
                  on_bad: Callable[[ProviderDataError], None],
                  on_alive: Callable[[list[str]], Awaitable[None]] | None,
                  clock: Callable[[], float]) -> None:
    try:
        out = state.on_message(body, clock())
    except ProviderDataError as exc:
        on_bad(exc)
        return
    for err in out.errors:
        on_bad(err)
    if out.updates:
        await on_updates(out.updates)
    if out.alive is not None and on_alive is not None:
        await on_alive(state.markets_of(out.alive))


async def run_uof_adapter(runner: FeedRunner, opts: dict[str, Any],
                          stop: asyncio.Event) -> UofState:
    """`oddsfeed ingest uof`: :func:`run_uof` into ``runner`` with the options
    ``amqp_url``, ``exchange``, ``routing_key``, ``uof_mapping`` and ``producer_timeout``
    (resolved by :mod:`oddsfeed_ingest.registry`, which holds their defaults); returns the state
    (its ``counts`` say what was skipped)."""
    mapping = load_uof_mapping(Path(opts["uof_mapping"]))
    state = UofState(mapping=mapping, producer_timeout_s=float(opts["producer_timeout"]))

    async def on_updates(updates: list[MarketUpdate]) -> None:
        await runner.submit_many(updates)  # pipelined, same outcomes as one by one

    await run_uof(str(opts["amqp_url"]), state, on_updates, runner.bad, stop=stop,
                  exchange=str(opts["exchange"]), routing_keys=tuple(opts["routing_key"]),
                  on_alive=runner.alive)
    log.info("uof stopped", counts=state.counts)
    return state
