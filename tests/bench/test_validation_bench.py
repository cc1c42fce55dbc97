"""The validation benchmark's load generators end in a result or an error, never a hang: a
slip the server refuses (its store is gone) fails the run at once over HTTP and WebSocket."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest

from bench.validation import SECRET, BenchError, _http, _ws
from oddsfeed.auth import Authenticator
from oddsfeed.core.model import MarketUpdate
from oddsfeed.embedded import EmbeddedValkey
from oddsfeed.settings import load_settings
from oddsfeed.worker import Worker

LEGS = [{"market": "v0", "selection": "h", "price": 2.5}]


@pytest.fixture
async def storeless() -> AsyncIterator[tuple[Worker, str]]:
    """A worker (risk on, as the bench runs it) whose Valkey was killed after start-up, and
    a token for it."""
    settings = load_settings(None, {}, {"server.ws_port": 0, "server.http_port": 0,
                                        "auth.hs256_secret": SECRET, "risk.enabled": True})
    token = Authenticator(settings.auth).mint("bench", ["odds:read", "bets:validate"],
                                              ttl_s=600, now_s=int(time.time()))
    with EmbeddedValkey() as vk:
        async with Worker(settings, vk.url, reuse_port=False) as w:
            await w.store.apply(MarketUpdate(market="v0", fields={
                "event": "e", "sport": "s", "name": "n"},
                selections={"h": {"name": "H", "price": 25000}}, create=True))
            os.kill(vk.pid, signal.SIGKILL)  # every read now fails
            yield w, token


async def test_ws_run_fails_on_an_error_reply(storeless: tuple[Worker, str]) -> None:
    """The WebSocket load ends with the server's error for a slip instead of waiting for a
    validation reply that never comes."""
    w, token = storeless
    with pytest.raises(BenchError, match="answered error internal"):
        await asyncio.wait_for(_ws(f"ws://127.0.0.1:{w.ws_port}/ws?token={token}", LEGS,
                                   20, 4), timeout=10)


async def test_http_run_fails_on_an_error_status(storeless: tuple[Worker, str]) -> None:
    """The HTTP load ends with the server's error status for a slip."""
    w, token = storeless
    with pytest.raises(BenchError, match="answered 503"):
        await asyncio.wait_for(_http(f"http://127.0.0.1:{w.http_port}/v1/bets/validate",
                                     {"legs": LEGS}, 20, 4,
                                     {"Authorization": f"Bearer {token}"}), timeout=10)
