"""Fixtures of the UOF adapter's tests: one real RabbitMQ broker per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .broker import Broker


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A RabbitMQ node on free loopback ports for the whole session (stopped at the end)."""
    broker = Broker(tmp_path_factory.mktemp("rabbitmq"))
    try:
        yield broker
    finally:
        broker.close()
