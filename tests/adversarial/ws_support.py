"""Helpers of the WebSocket adversarial tests: a worker on a given store, a store that can be
killed and restarted with its data (append-only file, fsync always), raw frame exchange,
and log checks. Reuses the fan-out suite's settings, builders and protocol client."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from oddsfeed.core import wire
from oddsfeed.embedded import EmbeddedValkey, free_port
from oddsfeed.worker import Worker
from tests.fanout.conftest import make_settings, mint_token, ws_url
from tests.fanout.mirror import SUBPROTOCOL, Mirror, wait_until

__all__ = ["Mirror", "RestartableStore", "make_settings", "mint_token", "wait_until", "ws_url"]


@contextlib.asynccontextmanager
async def worker_on(url: str, **overrides: Any) -> AsyncIterator[Worker]:
    """A real in-process worker (store, hub, WebSocket server, HTTP API) on ``url``;
    ``overrides`` are dotted settings keys (``fanout.x``)."""
    async with Worker(make_settings(url, **overrides), url, reuse_port=False) as w:
        yield w


class RestartableStore:
    """A Valkey child process that keeps its data across a SIGKILL and a restart on the same
    port (append-only file with fsync on every write)."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.server: EmbeddedValkey | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server = EmbeddedValkey(port=self.port, data_dir=self.data_dir, persistence=True,
                                     extra_args=["--appendfsync", "always"]).start()

    def kill(self) -> None:
        """SIGKILL the server process (no shutdown, no final save), then reap it."""
        assert self.server is not None
        os.kill(self.server.pid, signal.SIGKILL)
        self.server.stop()
        self.server = None

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@contextlib.contextmanager
def restartable(data_dir: Path) -> Iterator[RestartableStore]:
    """A started :class:`RestartableStore` keeping its data in ``data_dir``, stopped after."""
    store = RestartableStore(data_dir)
    store.start()
    try:
        yield store
    finally:
        store.stop()


async def store_digest(url: str) -> str:
    """A digest of every key and value in the store (to prove nothing changed), except the
    risk signals: the recorder counts every validated slip a moment after its answer."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        h = hashlib.sha256()
        for key in sorted(await client.keys("*")):
            if key.startswith((b"of:risk:", b"of:{rdue:")):
                continue
            h.update(key)
            h.update(await client.dump(key) or b"")
        return h.hexdigest()
    finally:
        await client.aclose()


async def raw_connect(w: Worker, encoding: str, token: str | None = None) -> ClientConnection:
    """A plain websockets client offering ``encoding``'s subprotocol; the hello is read."""
    ws = await connect(ws_url(w, token), subprotocols=[Subprotocol(SUBPROTOCOL[encoding])],
                       max_size=2**24, open_timeout=10)
    hello = wire.decode_message(await ws.recv(), encoding)
    assert hello["op"] == "hello"
    return ws


async def exchange(ws: ClientConnection, encoding: str, frame: str | bytes,
                   marker: int) -> list[dict[str, Any]]:
    """Send ``frame``, then a ping with id ``marker``; every message until its pong."""
    await ws.send(frame)
    await ws.send(wire.encode({"op": "ping", "id": marker}, encoding), text=encoding == "json")
    seen: list[dict[str, Any]] = []
    while True:
        msg = wire.decode_message(await ws.recv(), encoding)
        items = msg["items"] if msg.get("op") == "batch" else [msg]
        for item in items:
            if item.get("op") == "pong" and item.get("id") == marker:
                return seen
            seen.append(item)


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Log records at ERROR or above, or carrying a traceback, as text."""
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records
            if r.levelno >= logging.ERROR or r.exc_info]
