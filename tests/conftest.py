"""Shared fixtures: one embedded Valkey per test session, a clean async client per test,
a lazily started 3-node cluster for the tests that ask for it, and a logging restorer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio
import structlog

from oddsfeed.embedded import EmbeddedCluster, EmbeddedValkey


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[EmbeddedValkey]:
    """One embedded Valkey for the whole session (stopped at the end)."""
    with EmbeddedValkey() as server:
        yield server


@pytest.fixture(scope="session")
def valkey_url(valkey_server: EmbeddedValkey) -> str:
    """``redis://127.0.0.1:PORT`` of the session's embedded Valkey."""
    return valkey_server.url


@pytest.fixture
async def redis_client(valkey_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """An async client (bytes replies) on an emptied session server; closed after the test."""
    client = redis.asyncio.Redis.from_url(valkey_url)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def valkey_cluster() -> Iterator[EmbeddedCluster]:
    """A 3-primary embedded cluster, started on first use and shared by the session."""
    with EmbeddedCluster(n_primaries=3) as cluster:
        yield cluster


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger and structlog back as they were (for tests that configure logging)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    config = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)
