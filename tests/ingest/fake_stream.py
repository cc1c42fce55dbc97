"""A fake Exchange-Stream-style provider on loopback TCP that behaves like the real one at
login: it greets with ``connection``, refuses a subscription before ``authentication``
(NOT_AUTHORIZED, connection closed), checks the app key and session, answers every request
with a ``status``, and can be told to refuse connections with any documented error code."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Refusal = tuple[str, bool]  # (errorCode, connectionClosed)


@dataclass
class FakeStream:
    """Serve with :meth:`start`; ``refuse`` maps a connection number (1-based) to a status
    FAILURE sent instead of the subscription's SUCCESS; ``images`` builds the image sent
    for a subscription (it is given the subscription)."""

    app_key: str = "app-key-1"
    session: str = "session-1"
    refuse: dict[int, Refusal] = field(default_factory=dict)
    refuse_all: Refusal | None = None
    clock_refusal: Refusal | None = None  # sent when a subscription carries clocks
    images: Callable[[dict[str, Any]], list[dict[str, Any]]] = lambda sub: []
    connects: list[float] = field(default_factory=list)
    received: list[list[dict[str, Any]]] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    server: asyncio.Server | None = None

    async def start(self) -> str:
        """Listen on 127.0.0.1 port 0; returns ``HOST:PORT``."""
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"

    async def close(self) -> None:
        self.done.set()
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connects.append(time.monotonic())
        n = len(self.connects)
        got: list[dict[str, Any]] = []
        self.received.append(got)

        def send(msg: dict[str, Any]) -> None:
            writer.write(json.dumps(msg).encode() + b"\r\n")

        def status(req: dict[str, Any], code: str | None, closed: bool) -> None:
            msg: dict[str, Any] = {"op": "status", "id": req.get("id"),
                                   "statusCode": "FAILURE" if code else "SUCCESS",
                                   "connectionClosed": closed}
            if code:
                msg.update(errorCode=code, errorMessage=f"{code.lower()} (fake provider)")
            send(msg)

        send({"op": "connection", "connectionId": f"fake-{n}"})
        authed = False
        try:
            while not self.done.is_set():
                line = await reader.readline()
                if not line:
                    break
                req = json.loads(line)
                got.append(req)
                refusal = self.refuse.get(n) or self.refuse_all
                if req.get("op") == "authentication":
                    if req.get("appKey") != self.app_key:
                        status(req, "INVALID_APP_KEY", True)
                        break
                    if req.get("session") != self.session:
                        status(req, "INVALID_SESSION_INFORMATION", True)
                        break
                    authed = True
                    status(req, None, False)
                elif not authed:
                    status(req, "NOT_AUTHORIZED", True)
                    break
                elif refusal is not None:
                    status(req, *refusal)
                    if refusal[1]:
                        break
                elif self.clock_refusal is not None and "clk" in req:
                    status(req, *self.clock_refusal)
                    if self.clock_refusal[1]:
                        break
                else:
                    status(req, None, False)
                    for msg in self.images(req):
                        send(msg)
                await writer.drain()
            await writer.drain()
        except (ConnectionError, ValueError):
            pass
        finally:
            writer.close()
