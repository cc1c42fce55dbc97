"""The store's batched market reads on a connection of their own (single server).

The reads that callers issue within one event-loop turn go to the server as one ``MGET``
written by a plain asyncio protocol: commands packed by ``hiredis.pack_command``, replies
parsed by a ``hiredis.Reader`` in ``data_received`` and handed to their batch in the order
the commands were written, several batches in flight on the one connection. No task, no
connection pool and no per-call wrapper: the reply resolves the callers' futures directly.

It keeps the read batch's contract (see :mod:`.autopipe`): a batch is written only after
its last caller joined and is never answered from an earlier one, so every read reaches the
server after it was issued; each caller gets its own values in its own order, and fails
alone when one of its keys fails (``MGET`` reads a key of another type as nil, so the keys
it says are absent are read again with ``GET``, which fails a wrongly typed key for its
caller). At most ``max_in_flight`` batches are out at once (0: any number); the reads that
gather meanwhile go as the next batch when one comes back.

The connection copies the store client's settings (host and port or unix socket, username,
password or credential provider, db, client name); TLS is not handled here (:func:`target_of`
answers None and the store keeps redis-py's path). It is opened on the first read and again
after it was lost: losing it (the store went down, a reset) fails every batch waiting on it
at once with a StoreError; a server that stops answering fails them after the client's
socket timeout. Nothing is retried: the next read opens a new connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection

from ..core.errors import StoreError
from .rawconn import auth_command, open_stream, pack

__all__ = ["ReadBatches", "Target", "target_of"]

CONNECT_S = 5.0  # how long opening the connection may take when the client sets no timeout

# Error codes redis-py strips from an error reply's text (so the messages read as today's).
_STRIPPED = ("WRONGPASS ", "NOAUTH ", "NOPERM ", "LOADING ", "READONLY ")

Reply = Any  # a parsed reply: bytes, None, a list of them, or an Exception (an error reply)


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how the connection goes: the store client's own settings."""

    host: str = "localhost"
    port: int = 6379
    path: str = ""  # a unix socket, when set
    db: int = 0
    username: str | None = None
    password: str | None = None
    credential_provider: Any = None
    client_name: str | None = None
    connect_timeout: float | None = None
    timeout: float | None = None  # a batch unanswered this long fails its callers

    @property
    def where(self) -> str:
        return f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"


def target_of(client: Redis) -> Target | None:
    """The connection settings of the single-server ``client``; None when it speaks TLS
    (its reads keep redis-py's path)."""
    pool = client.connection_pool
    if issubclass(pool.connection_class, SSLConnection):
        return None
    kw = pool.connection_kwargs
    timeout = kw.get("socket_timeout")
    return Target(host=str(kw.get("host") or "localhost"), port=int(kw.get("port") or 6379),
                  path=str(kw.get("path") or ""), db=int(kw.get("db") or 0),
                  username=kw.get("username"), password=kw.get("password"),
                  credential_provider=kw.get("credential_provider"),
                  client_name=kw.get("client_name"),
                  connect_timeout=kw.get("socket_connect_timeout") or timeout,
                  timeout=timeout)


def _error_text(reply: Exception) -> str:
    text = str(reply)
    for code in _STRIPPED:
        if text.startswith(code):
            return text[len(code):]
    return text


class _Connection(asyncio.Protocol):
    """One connection: commands written in order, each reply handed to the callback its
    command was written with, in the same order; its loss hands every waiting callback a
    ConnectionError."""

    def __init__(self, timeout: float | None) -> None:
        self._reader = hiredis.Reader()
        self._waiting: collections.deque[Callable[[Reply], None]] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self._timeout = timeout
        self._timer: asyncio.TimerHandle | None = None
        self._answered = 0  # replies so far: the timer's sign of progress
        self._seen = -1
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"connection to the store lost: {exc}" if exc
                                   else "connection to the store closed"))

    def _fail(self, error: Exception) -> None:
        self.lost = True
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._waiting = self._waiting, collections.deque()
        for callback in waiting:
            callback(error)

    def send(self, payload: bytes, callback: Callable[[Reply], None]) -> None:
        """Write one command; ``callback`` gets its reply (or the connection's loss)."""
        if self._transport is None:
            callback(ConnectionError("connection to the store closed"))
            return
        self._transport.write(payload)
        self._waiting.append(callback)
        if self._timer is None and self._timeout:
            self._seen = self._answered
            self._timer = asyncio.get_running_loop().call_later(self._timeout, self._check)

    def request(self, *args: str | bytes | int) -> asyncio.Future[Reply]:
        """The reply to one command, as a future."""
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()

        def done(reply: Reply) -> None:
            if not fut.done():
                fut.set_result(reply)

        self.send(pack(args), done)
        return fut

    def _check(self) -> None:
        """The timer: a connection with replies owed and none received for a whole timeout
        is given up (its callers fail); otherwise it looks again a timeout later."""
        self._timer = None
        if not self._waiting or self._transport is None:
            return
        if self._answered == self._seen:
            transport = self._transport
            self._fail(TimeoutError(f"the store did not answer within {self._timeout} s"))
            transport.abort()
            return
        self._seen = self._answered
        self._timer = asyncio.get_running_loop().call_later(cast(float, self._timeout),
                                                            self._check)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        try:
            while True:
                reply = reader.gets()
                if reply is False:
                    return
                self._answered += 1
                if waiting:
                    waiting.popleft()(reply)
        except hiredis.ProtocolError as exc:
            transport = self._transport
            self._fail(ConnectionError(f"bad reply stream from the store: {exc}"))
            if transport is not None:
                transport.abort()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class ReadBatches:
    """The batched ``GET``s of one Store (and so one event loop), on one connection."""

    def __init__(self, target: Target, *, max_in_flight: int = 0) -> None:
        self._target = target
        self._limit = max(max_in_flight, 0)
        self._in_flight = 0
        self._due = False
        self._open: list[tuple[Sequence[str], asyncio.Future[list[bytes | None]]]] = []
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._parked: list[tuple[Sequence[str], asyncio.Future[list[bytes | None]]]] = []
        self._closed = False

    def get(self, keys: Sequence[str]) -> asyncio.Future[list[bytes | None]]:
        """A future of the values of ``keys`` (None where absent), read in the next batch
        (a future, not a coroutine: one frame less to resume when the reply comes).

        Raises StoreError (now, or through the future) when the store is closed or fails
        this caller's keys or the whole batch.
        """
        if self._closed:
            raise StoreError("the store is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[bytes | None]] = loop.create_future()
        self._open.append((keys, fut))
        if not self._due and (not self._limit or self._in_flight < self._limit):
            # Runs after every callback already ready in this turn, so every request the
            # loop resumed in this turn joins the batch before it is sent.
            self._due = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._due = False
        batch, self._open = self._open, []
        if not batch or self._closed:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(StoreError("the store is closed"))
            return
        conn = self._conn
        if conn is None or conn.lost:
            self._conn = None
            self._parked.extend(batch)
            if self._connecting is None:
                self._in_flight += 1
                self._connecting = asyncio.get_running_loop().create_task(self._connect())
            return
        self._send(conn, batch)

    def _send(self, conn: _Connection,
              batch: list[tuple[Sequence[str], asyncio.Future[list[bytes | None]]]]) -> None:
        keys = [k for ks, _ in batch for k in ks]
        self._in_flight += 1
        conn.send(pack(("MGET", *keys)),
                  lambda reply: self._answered(conn, batch, keys, reply))

    def _answered(self, conn: _Connection,
                  batch: list[tuple[Sequence[str], asyncio.Future[list[bytes | None]]]],
                  keys: list[str], reply: Reply) -> None:
        if type(reply) is list:
            absent = [i for i, v in enumerate(reply) if v is None]
            if absent and not conn.lost:
                self._read_again(conn, batch, keys, reply, absent)
                return
            self._deliver(batch, keys, reply, errors=False)
        else:
            self._deliver(batch, keys, [reply] * len(keys))
        self._done()

    def _read_again(self, conn: _Connection,
                    batch: list[tuple[Sequence[str], asyncio.Future[list[bytes | None]]]],
                    keys: list[str], values: list[Reply], absent: list[int]) -> None:
        """``GET`` each key ``MGET`` answered nil for: nil only for a missing key, an error
        for a key of another type (a key written since reads as it is now)."""
        left = [len(absent)]

        def one(i: int) -> Callable[[Reply], None]:
            def got(reply: Reply) -> None:
                values[i] = reply
                left[0] -= 1
                if not left[0]:
                    self._deliver(batch, keys, values)
                    self._done()
            return got

        for i in absent:
            conn.send(pack(("GET", keys[i])), one(i))

    def _deliver(self, batch: list[tuple[Sequence[str], asyncio.Future[list[bytes | None]]]],
                 keys: list[str], values: list[Reply], *, errors: bool = True) -> None:
        """Each caller its values, or its error; ``errors=False``: ``values`` is an MGET's
        array as it came (bytes and nils only, no error to look for)."""
        at = 0
        for ks, fut in batch:
            n = len(ks)
            mine = values[at:at + n] if len(batch) > 1 else values
            at += n
            if fut.done():
                continue  # a cancelled caller
            if not errors:
                fut.set_result(mine)
                continue
            error = next((v for v in mine if isinstance(v, Exception)), None)
            if error is None:
                fut.set_result(mine)
            elif isinstance(error, (ConnectionError, TimeoutError)):
                fut.set_exception(StoreError(f"read failed: {error}"))
            else:
                key = ks[mine.index(error)]
                fut.set_exception(StoreError(f"read of {key} failed: {_error_text(error)}"))

    def _done(self) -> None:
        self._in_flight -= 1
        if self._open and not self._due and not self._closed:
            # The callers that gathered while a batch was out go at the end of this turn,
            # with those the loop resumes in it (fewer, larger batches than sending now).
            self._due = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def _connect(self) -> None:
        error: StoreError | None = None
        conn: _Connection | None = None
        try:
            conn = await self._open_connection()
        except StoreError as exc:
            error = exc
        except (OSError, TimeoutError) as exc:
            error = StoreError(f"read failed: cannot connect to the store at "
                               f"{self._target.where}: {exc or type(exc).__name__}")
        finally:
            self._connecting = None
            self._in_flight -= 1
        parked, self._parked = self._parked, []
        if conn is None or self._closed:
            if conn is not None:
                conn.close()
            for _, fut in parked:
                if not fut.done():
                    fut.set_exception(error or StoreError("the store is closed"))
            if self._open and not self._due and not self._closed:
                # Callers that came while it connected try again (and fail fast if it's down).
                self._due = True
                asyncio.get_running_loop().call_soon(self._flush)
            return
        self._conn = conn
        if parked:
            self._send(conn, parked)

    async def _open_connection(self) -> _Connection:
        """A connected, authenticated connection on the target's db."""
        t = self._target
        conn = _Connection(t.timeout)
        limit = t.connect_timeout or CONNECT_S
        await open_stream(conn, host=t.host, port=t.port, path=t.path, limit_s=limit)
        try:
            auth = await auth_command(t.username, t.password, t.credential_provider)
            hello: list[tuple[str | bytes | int, ...]] = [auth] if auth is not None else []
            if t.db:
                hello.append(("SELECT", t.db))
            if t.client_name:
                hello.append(("CLIENT", "SETNAME", t.client_name))
            for command in hello:
                reply = await asyncio.wait_for(conn.request(*command), limit)
                if isinstance(reply, Exception):
                    raise StoreError(f"read failed: {_error_text(reply)}")
        except BaseException:
            conn.close()
            raise
        return conn

    async def close(self) -> None:
        """Fail the callers not sent yet, wait (at most a timeout) for the batches in
        flight, close the connection."""
        self._closed = True
        batch, self._open = self._open, []
        for _, fut in batch:
            if not fut.done():
                fut.set_exception(StoreError("the store is closed"))
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if not conn.lost:
            # Replies come in order: once the PING is answered, every batch before it was.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.request("PING"),
                                       self._target.timeout or CONNECT_S)
        conn.close()
