"""Every websockets internal the fan-out relies on, in one place: a websockets upgrade is
checked against this file (and tests/fanout, which covers each item).

websockets (asyncio server, ``websockets.asyncio``) is used through its public API except
for these, each kept for memory or CPU per connection at 10,000 connections and more:

- ``ServerConnection.data_received`` (an asyncio ``Protocol`` callback) is overridden by
  :class:`Connection` to note when the peer last sent anything: one ticker per worker pings
  idle peers instead of websockets' keepalive task per connection.
- ``ServerConnection.request`` / ``.response`` are replaced once the handshake is done
  (:func:`shed_handshake`): websockets only checks that ``request`` is set afterwards, and
  its parser keeps the Request object, headers included, for the connection's life
  (~3 KB per connection).
- ``ServerConnection.drain_waiters`` becomes a list (:func:`shed_handshake`): websockets
  only appends to, removes from and iterates over it; an empty list costs 56 bytes where
  an empty deque costs 632.
- ``ServerConnection.transport`` and ``.protocol`` (the sans-I/O ``Protocol``) are read by
  the write paths (:func:`attach`, :func:`is_open`, :func:`ping`, and per delivery in
  :mod:`oddsfeed.fanout.writer`): complete server frames (unmasked, unfragmented, built by
  :mod:`oddsfeed.fanout.frames`) and pings are written to the transport, or to its socket
  (:func:`plain_fd`), behind the ``Protocol``'s back. That is
  sound because a server ``Protocol`` keeps no state per data frame it sends (no mask, no
  fragmentation, no compression: the server is started with ``compression=None``) and the
  write paths write only while ``Protocol.state`` is ``OPEN``; only ``close()`` goes
  through websockets, so the closing handshake stays its own.
"""

from __future__ import annotations

from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request
from websockets.protocol import State

from ..auth import ANONYMOUS, Principal

# The Protocol state in which frames may be written behind its back.
OPEN = State.OPEN

# A ping frame with an empty payload (server frames are not masked).
PING_FRAME = b"\x89\x00"

_NO_HEADERS = Headers()
_HANDSHAKE_DONE = Request("/ws", _NO_HEADERS)


class Connection(ServerConnection):
    """A websockets server connection that notes when its peer last sent anything (for the
    worker's shared keepalive ticker) and carries the principal its handshake
    authenticated (set by the handshake's ``process_request``, as websockets'
    ``basic_auth`` sets ``username``)."""

    last_rx = 0.0
    pinged = False
    principal: Principal = ANONYMOUS

    def data_received(self, data: bytes) -> None:
        self.last_rx = self.loop.time()
        self.pinged = False
        super().data_received(data)


def shed_handshake(ws: ServerConnection) -> None:
    """Drop what the handshake left on the connection and is never read again."""
    if ws.request is not None:
        ws.request.headers = _NO_HEADERS
    ws.request = _HANDSHAKE_DONE
    ws.response = None
    ws.drain_waiters = []  # type: ignore[assignment]


def attach(client: Any, ws: ServerConnection) -> None:
    """Give ``client`` (a :class:`~oddsfeed.fanout.client.Client`) the references its write
    paths read once per delivery: the transport, the sans-I/O protocol and the socket."""
    client.conn = ws
    client.transport = ws.transport
    client.proto = ws.protocol
    client.fd = plain_fd(ws)


def plain_fd(ws: Any) -> int:
    """The socket's file descriptor for the many-socket send, or -1 (write through the
    transport) where the transport is not a plain socket (TLS: its socket carries
    ciphertext)."""
    transport = ws.transport
    sock = transport.get_extra_info("socket")
    if sock is None or transport.get_extra_info("sslcontext") is not None:
        return -1
    try:
        return int(sock.fileno())
    except (OSError, ValueError):
        return -1


def is_open(ws: ServerConnection) -> bool:
    """Whether the connection's ``Protocol`` is ``OPEN`` (frames may be written)."""
    return ws.protocol.state is OPEN


def ping(ws: ServerConnection) -> None:
    """Write a ping frame (the pong arrives through ``data_received``)."""
    ws.transport.write(PING_FRAME)
