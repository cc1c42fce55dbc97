"""The HTTP port's listening socket: a cap on open connections and the header-read deadline
around aiohttp's own protocol. It only counts and closes connections; requests are
aiohttp's and the app's business."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, MutableMapping
from typing import Any

from aiohttp import web, web_response
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import Counter

from ..webkit import PROBLEM, Problem

__all__ = ["SERVER", "HttpListener", "runner_options"]

SERVER = "oddsfeed"  # the Server header of every response: no library or version banner
# aiohttp has no setting for the Server header of the responses it writes itself (the 400
# to a malformed request line or header never reaches the app's hooks), and its default
# names aiohttp's and Python's versions: replace that default once, process-wide.
web_response.SERVER_SOFTWARE = SERVER  # type: ignore[attr-defined]

# What a refused connection reads before the close: a complete response, so a client (or
# load balancer) sees "busy, retry" rather than a reset.
_BUSY_BODY = json.dumps(Problem(503, "too many connections", "too many open connections").body,
                        separators=(",", ":")).encode()
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: %s\r\nRetry-After: 1\r\n"
         b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
         % (PROBLEM.encode(), len(_BUSY_BODY), _BUSY_BODY))


class _PeerFaultLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server logger, except that a malformed request (the peer's fault, which
    aiohttp answers 400) is a one-line warning rather than an error with a traceback:
    any client could otherwise fill the log with tracebacks at will."""

    def exception(self, msg: object, *args: object, exc_info: Any = True,
                  **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            text = str(exc_info.message)[:200].replace("\n", " ")
            self.warning("bad request from a client: %s", text)
            return
        self.error(msg, *args, exc_info=exc_info, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]
                ) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs


REFUSED = Counter("oddsfeed_http_connections_refused_total",
                  "HTTP connections answered 503 and closed: api.max_connections were open")

_SERVER_LOG = _PeerFaultLogger(logging.getLogger("aiohttp.server"), {})


def runner_options(header_timeout_s: float) -> dict[str, Any]:
    """``web.AppRunner`` keyword arguments of every oddsfeed HTTP port.

    They bound a connection's wait for a request (aiohttp arms its keep-alive timer when a
    connection opens and after each response, and closes a connection still without a
    complete request head when it fires, so one timer is both the header-read deadline
    and the idle keep-alive timeout), and log a malformed request as a warning.
    """
    return {"keepalive_timeout": header_timeout_s, "logger": _SERVER_LOG}


class HttpListener:
    """Listens for an aiohttp runner on one TCP port, with at most ``max_connections``
    open at once; a connection over the cap gets a 503 and is closed at once.

    Call :meth:`start` after ``runner.setup()`` and :meth:`close` before
    ``runner.cleanup()`` (which closes the connections still open).
    """

    def __init__(self, *, max_connections: int) -> None:
        self.max_connections = max_connections
        self.open = 0  # connections accepted and not yet closed
        self.refused = 0  # connections answered 503 because the cap was reached
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self, runner: web.BaseRunner, host: str, port: int, *,
                    reuse_port: bool = False) -> int:
        """Listen on ``host``:``port`` (0: any free port) and return the bound port."""
        inner = runner.server
        if inner is None:
            raise RuntimeError("call runner.setup() before HttpListener.start()")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Counted(self, inner), host, port, reuse_port=reuse_port or None,
            reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        """Stop accepting connections (the open ones are left to the runner's cleanup)."""
        if self._server is not None:
            self._server.close()
            self._server = None


class _Counted(asyncio.Protocol):
    """aiohttp's protocol for one connection, counted against the listener's cap."""

    def __init__(self, listener: HttpListener, factory: Callable[[], Any]) -> None:
        self._listener = listener
        self._factory = factory
        self._inner: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        listener = self._listener
        if listener.open >= listener.max_connections:
            listener.refused += 1
            REFUSED.inc()
            assert isinstance(transport, asyncio.Transport)
            transport.write(_BUSY)
            transport.close()
            return
        listener.open += 1
        self._inner = self._factory()
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is not None:
            self._listener.open -= 1
            inner, self._inner = self._inner, None
            inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()
