"""The thin I/O client of the Betfair-shaped stream: connect over TCP or WebSocket, log in,
subscribe, read lines, watch heartbeats and reconnect with jittered exponential backoff.

Every decision about what a message means is the pure ``betfair`` module's (:class:`StreamState`,
:func:`failure_action`); this module only moves lines between the socket and it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import WebSocketException

from oddsfeed.core.errors import ProviderDataError
from oddsfeed.core.model import MarketUpdate

from .betfair import StreamRefused, StreamState, bad_data, failure_action

MAX_LINE_BYTES = 1 << 22
log = structlog.get_logger("oddsfeed.ingest.betfair")



class _Link(Protocol):
    async def readline(self) -> bytes: ...
    async def send(self, data: bytes) -> None: ...
    async def close(self) -> None: ...


class _TcpLink:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def readline(self) -> bytes:
        try:
            return await self.reader.readline()
        except ValueError:  # a line over the limit: drop the link, the feed is broken
            raise ConnectionError("line too long") from None

    async def send(self, data: bytes) -> None:
        self.writer.write(data + b"\r\n")
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


class _WsLink:
    """One JSON message per WebSocket message (several lines in one message are split)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.pending: list[bytes] = []

    async def readline(self) -> bytes:
        while not self.pending:
            try:
                data = await self.ws.recv()
            except WebSocketException:
                return b""
            raw = data.encode() if isinstance(data, str) else data
            self.pending = [x + b"\n" for x in raw.splitlines() if x.strip()]
        return self.pending.pop(0)

    async def send(self, data: bytes) -> None:
        await self.ws.send(data.decode())

    async def close(self) -> None:
        await self.ws.close()


async def _open(address: str) -> _Link:
    if address.startswith(("ws://", "wss://")):
        return _WsLink(await ws_connect(address, max_size=MAX_LINE_BYTES, open_timeout=10))
    tls = address.startswith("tls://")  # Betfair's own stream is TLS on port 443
    host, _, port = address.removeprefix("tls://").rpartition(":")
    reader, writer = await asyncio.open_connection(host or "127.0.0.1", int(port),
                                                   limit=MAX_LINE_BYTES, ssl=tls or None)
    return _TcpLink(reader, writer)


@dataclass
class _LinkEnd:
    """How one connection ended: whether it carried market data, and the status FAILURE
    code that ended it (None: closed, silent or stopped)."""

    market_data: bool = False
    error_code: str | None = None


async def run_stream(address: str, state: StreamState,
                     on_updates: Callable[[list[MarketUpdate]], Awaitable[None]],
                     on_bad: Callable[[ProviderDataError], None], *,
                     stop: asyncio.Event,
                     market_filter: dict[str, Any] | None = None,
                     authentication: dict[str, Any] | None = None,
                     on_alive: Callable[[], Awaitable[None]] | None = None,
                     on_lag: Callable[[bool], None] | None = None,
                     on_raw: Callable[[Any], None] | None = None,
                     keep_trying: bool = False,
                     min_backoff_s: float = 0.1, max_backoff_s: float = 30.0,
                     rng: random.Random | None = None) -> int:
    """Stream from ``address`` (``HOST:PORT`` for TCP, ``tls://HOST:PORT``, or a ``ws://`` /
    ``wss://`` URL) until ``stop``.

    Sends ``authentication`` (if given: ``{"op": "authentication", "appKey", "session"}``,
    never logged) first and then the subscription on every connect, with the last clocks
    after a reconnect. Good updates go to ``on_updates``, bad data to ``on_bad``, heartbeats
    and other signs of life to ``on_alive``, each mcm's lag state (True for a status 503
    notice) to ``on_lag``, and each raw message to ``on_raw`` (for recording).

    Every failed connection (refused, closed or silent before any mcm, or ended by a status
    FAILURE) doubles the backoff, with jitter, up to ``max_backoff_s``; SUBSCRIPTION_LIMIT_
    EXCEEDED and MAX_CONNECTION_LIMIT_EXCEEDED wait ``max_backoff_s``; INVALID_CLOCK drops
    the clocks for a fresh image. Raises StreamRefused on a fatal code (bad app key, invalid
    session, ...) unless ``keep_trying``. Returns the number of connections made.
    """
    rng = rng or random.Random()
    backoff = min_backoff_s
    connects = 0
    while not stop.is_set():
        end = _LinkEnd()
        try:
            link = await _open(address)
        except (OSError, WebSocketException, TimeoutError, ValueError) as exc:
            log.warning("stream connect failed", address=address, error=str(exc))
        else:
            connects += 1
            log.info("stream connected", address=address, connects=connects,
                     resume=state.clk is not None, login=authentication is not None)
            try:
                if authentication:
                    await link.send(json.dumps({"op": "authentication", "id": 0,
                                                **authentication}).encode())
                await link.send(json.dumps(state.subscription(market_filter or {},
                                                              request_id=connects)).encode())
                end = await _read(link, state, on_updates, on_bad, on_alive, on_lag, on_raw,
                                  stop, resubscribe=functools.partial(
                                      state.subscription, market_filter or {},
                                      request_id=connects))
            except (OSError, asyncio.IncompleteReadError, WebSocketException) as exc:
                log.warning("stream dropped", address=address, error=str(exc))
            finally:
                with contextlib.suppress(OSError, WebSocketException):
                    await link.close()
        if stop.is_set():
            break
        if end.market_data:
            backoff = min_backoff_s  # the link carried market data: start backoff afresh
        if end.error_code is not None:
            action = failure_action(end.error_code)
            if action == "fatal" and not keep_trying:
                raise StreamRefused(end.error_code, (
                    f"the provider refused the stream with {end.error_code}: check the "
                    "application key and session token (or pass --keep-trying)"))
            if action == "fresh_image":
                state.forget_clocks()
            elif action == "limit":
                backoff = max_backoff_s
        wait = backoff * (0.5 + rng.random())  # jitter: reconnects do not arrive in step
        backoff = min(backoff * 2, max_backoff_s)
        log.info("stream reconnecting", address=address, in_s=round(wait, 2),
                 error_code=end.error_code)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)
    return connects


async def _read(link: _Link, state: StreamState,
                on_updates: Callable[[list[MarketUpdate]], Awaitable[None]],
                on_bad: Callable[[ProviderDataError], None],
                on_alive: Callable[[], Awaitable[None]] | None,
                on_lag: Callable[[bool], None] | None,
                on_raw: Callable[[Any], None] | None, stop: asyncio.Event, *,
                resubscribe: Callable[[], dict[str, Any]]) -> _LinkEnd:
    """Read one connection until it ends, goes silent, fails or ``stop``."""
    end = _LinkEnd()
    stopper = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            silent_s = 3 * state.heartbeat_ms / 1000
            reader = asyncio.ensure_future(link.readline())
            done, _ = await asyncio.wait([reader, stopper], timeout=silent_s,
                                         return_when=asyncio.FIRST_COMPLETED)
            if reader not in done:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
                if not stop.is_set():
                    log.warning("stream silent past 3 heartbeats: reconnecting",
                                silent_s=silent_s)
                return end
            line = reader.result()
            if not line:
                return end  # closed by the provider
            try:
                msg = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                on_bad(bad_data("malformed or truncated JSON line",
                            line[:300].decode("utf-8", "replace")))
                continue
            if on_raw:
                on_raw(msg)
            try:
                out = state.on_message(msg)
            except ProviderDataError as exc:
                on_bad(exc)
                continue
            if out.error_code is not None:
                if out.closed or failure_action(out.error_code) != "fresh_image":
                    end.error_code = out.error_code
                    return end
                # The link stays open: ask again without clocks for a fresh image.
                state.forget_clocks()
                await link.send(json.dumps(resubscribe()).encode())
                continue
            if isinstance(msg, dict) and msg.get("op") == "connection":
                log.info("stream connection accepted", connection_id=str(
                    msg.get("connectionId", ""))[:80])
            elif isinstance(msg, dict) and msg.get("op") == "status" and msg.get("id") == 0:
                log.info("stream logged in",
                         connections_available=msg.get("connectionsAvailable"))
            for err in out.errors:
                on_bad(err)
            if out.updates:
                await on_updates(out.updates)
            if out.market_data:
                end.market_data = True
                if on_lag is not None:
                    on_lag(out.lagging)
                if on_alive is not None:
                    # Any good mcm proves the link live; a busy link sends no heartbeats,
                    # so quiet markets on it are still current.
                    await on_alive()
            if out.closed:
                return end
    finally:
        stopper.cancel()
    return end
