"""Fixtures of the fan-out suite: settings on the session's Valkey, a real in-process worker
(store + hub + WebSocket server + HTTP API) per test, and token minting."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio

from oddsfeed.auth import Authenticator
from oddsfeed.settings import Settings, load_settings
from oddsfeed.worker import Worker

SECRET = "test-secret-of-the-fanout-suite-0123456789"  # >= 32 bytes: no PyJWT warning

# Limits that would only get in the way of tests opening many connections quickly; the
# tests of those limits set their own values.
BASE: dict[str, Any] = {
    "server.ws_port": 0,
    "server.http_port": 0,
    "auth.anonymous_read": True,
    "auth.hs256_secret": SECRET,
    "fanout.ip_connect_per_s": 100_000.0,
    "fanout.max_connections_per_ip": 0,
    "fanout.rate_limit_per_s": 100_000.0,
    "fanout.rate_limit_burst": 100_000,
}


def make_settings(url: str, **overrides: Any) -> Settings:
    """Settings for a worker on ``url``; ``overrides`` are dotted keys (``fanout.x``)."""
    return load_settings(None, {}, {**BASE, "redis.url": url, **overrides})


def mint_token(settings: Settings, *scopes: str, ttl_s: int = 600, sub: str = "tester") -> str:
    """An HS256 token for ``scopes`` from the settings' secret."""
    return Authenticator(settings.auth).mint(sub, scopes, ttl_s=ttl_s, now_s=int(time.time()))


def ws_url(w: Worker, token: str | None = None) -> str:
    return f"ws://127.0.0.1:{w.ws_port}/ws" + (f"?token={token}" if token else "")


@pytest.fixture
async def flushed(valkey_url: str, redis_client: redis.asyncio.Redis) -> str:
    """The session Valkey's url, emptied (FLUSHALL) for this test."""
    return valkey_url


@pytest.fixture
def settings(flushed: str) -> Settings:
    """Default test settings: anonymous reading on, a known HS256 secret, ports 0."""
    return make_settings(flushed)


@pytest.fixture
async def worker(settings: Settings, flushed: str) -> AsyncIterator[Worker]:
    """A worker with the default test settings on the emptied session Valkey."""
    async with Worker(settings, flushed, reuse_port=False) as w:
        yield w


WorkerFactory = Callable[..., contextlib.AbstractAsyncContextManager[Worker]]


@pytest.fixture
def start_worker(flushed: str) -> WorkerFactory:
    """``async with start_worker(**{"fanout.x": v}) as w``: a worker with overridden settings."""

    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Worker]:
        async with Worker(make_settings(flushed, **overrides), flushed, reuse_port=False) as w:
            yield w

    return start


@pytest.fixture
def mint() -> Callable[..., str]:
    """``mint(*scopes, ttl_s=600)``: a token signed with the test secret."""

    def _mint(*scopes: str, ttl_s: int = 600) -> str:
        return mint_token(load_settings(None, {}, {"auth.hs256_secret": SECRET}), *scopes,
                          ttl_s=ttl_s)

    return _mint

