"""Fixtures: a real in-process worker (store + hub + WebSocket server + HTTP API)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from oddsfeed.auth import Authenticator
from oddsfeed.settings import Settings, load_settings
from oddsfeed.worker import Worker

SECRET = "test-secret-0123456789-0123456789-abcdef"


def make_settings(url: str, **overrides: Any) -> Settings:
    base: dict[str, Any] = {"server.ws_port": 0, "server.http_port": 0, "redis.url": url,
                            "auth.anonymous_read": True, "auth.hs256_secret": SECRET,
                            "fanout.batch_window_ms": 2, "fanout.ip_connect_per_s": 100000.0}
    base.update(overrides)
    return load_settings(None, {}, base)


@pytest.fixture
def mint() -> Callable[..., str]:
    def _mint(*scopes: str, ttl_s: int = 600) -> str:
        auth = Authenticator(load_settings(None, {}, {"auth.hs256_secret": SECRET}).auth)
        return auth.mint("tester", list(scopes), ttl_s=ttl_s, now_s=int(time.time()))
    return _mint


@pytest.fixture
async def worker(valkey_url: str, redis_client: Any) -> AsyncIterator[Worker]:
    """A worker on the session's (emptied) Valkey, anonymous reading allowed."""
    async with Worker(make_settings(valkey_url), valkey_url, reuse_port=False) as w:
        yield w


def ws_url(w: Worker, token: str | None = None) -> str:
    return f"ws://127.0.0.1:{w.ws_port}/ws" + (f"?token={token}" if token else "")
