"""Fixtures of the ingest tests: a Store on the session's Valkey (emptied per test), local
fake providers on 127.0.0.1 port 0, and a manual clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from oddsfeed.store import Store

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
async def store(valkey_url: str, redis_client: Any) -> AsyncIterator[Store]:
    """A Store on the emptied session Valkey."""
    s = await Store.connect(valkey_url)
    try:
        yield s
    finally:
        await s.close()


class ManualClock:
    """A clock tests move by hand (seconds since the epoch)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, s: float) -> None:
        self.now += s


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock starting at a fixed instant."""
    return ManualClock()


@pytest.fixture
async def serve_app() -> AsyncIterator[Callable[[web.Application], Awaitable[str]]]:
    """Start aiohttp apps on 127.0.0.1 port 0; returns ``http://127.0.0.1:PORT``."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    try:
        yield start
    finally:
        for r in runners:
            await r.cleanup()


async def until(cond: Callable[[], Awaitable[bool]] | Callable[[], bool], *,
                timeout_s: float = 10.0, what: str = "condition") -> None:
    """Poll ``cond`` until true, failing after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        res = cond()
        if isinstance(res, Awaitable):
            res = await res
        if res:
            return
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)
