"""A WebSocket client whose reading the test controls: websockets' sans-I/O client protocol
over a plain socket with a small receive buffer, so "stops reading" really backs the
server up (a websockets asyncio client keeps reading into its own queue)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from oddsfeed.core import wire

from .mirror import SUBPROTOCOL


class RawClient:
    """Call :meth:`open`, :meth:`send`; read only when the test calls :meth:`read_some`."""

    def __init__(self, sock: socket.socket, proto: ClientProtocol, encoding: str) -> None:
        self.sock = sock
        self.proto = proto
        self.encoding = encoding
        self.messages: list[dict[str, Any]] = []
        self.eof = False

    @classmethod
    async def open(cls, port: int, encoding: str = "json", *, rcvbuf: int = 4096) -> RawClient:
        """Connect with a small SO_RCVBUF and complete the handshake (reads the 101 only)."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        proto = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/ws"),
                               subprotocols=[Subprotocol(SUBPROTOCOL[encoding])], max_size=None)
        proto.send_request(proto.connect())
        client = cls(sock, proto, encoding)
        await client._flush()
        while True:
            data = await asyncio.wait_for(loop.sock_recv(sock, 4096), 10)
            assert data, "closed during the handshake"
            proto.receive_data(data)
            events = proto.events_received()
            if events:
                assert isinstance(events[0], Response)
                assert events[0].status_code == 101
                client._collect(events[1:])
                return client

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        for chunk in self.proto.data_to_send():
            if chunk:
                await loop.sock_sendall(self.sock, chunk)

    def _collect(self, events: list[Any]) -> None:
        for frame in events:
            if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                msg = wire.decode_message(bytes(frame.data), self.encoding)
                self.messages += msg["items"] if msg.get("op") == "batch" else [msg]

    async def send(self, msg: dict[str, Any]) -> None:
        payload = wire.encode(msg, self.encoding)
        if self.encoding == "json":
            self.proto.send_text(payload)
        else:
            self.proto.send_binary(payload)
        await self._flush()

    async def read_some(self, timeout: float = 0.5) -> bool:
        """Read what is there within ``timeout`` s; False once the connection has ended."""
        if self.eof:
            return False
        loop = asyncio.get_running_loop()
        try:
            data = await asyncio.wait_for(loop.sock_recv(self.sock, 1 << 16), timeout)
        except TimeoutError:
            return True
        except OSError:  # reset by the server
            data = b""
        if data:
            self.proto.receive_data(data)
        else:
            self.proto.receive_eof()
            self.eof = True
        self._collect(self.proto.events_received())
        await self._flush()  # the close handshake reply, pongs
        return not self.eof

    @property
    def close_code(self) -> int | None:
        """The code of the close frame received, 1006 if the connection ended without one."""
        code = self.proto.close_code
        return int(code) if code is not None else None

    def close(self) -> None:
        self.sock.close()
