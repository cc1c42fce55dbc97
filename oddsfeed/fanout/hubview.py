"""What the hub's helpers (catch-up, repairs, owed catch-ups) may use of the hub: a
protocol, so that they depend on this narrow view and the hub on them, never both ways.
Owns no state and no behaviour."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any, Protocol

from ..core import wire
from ..core.ports import Broker, MarketSource
from ..core.subscriptions import SubscriptionIndex
from .client import Client, Held

__all__ = ["HubView", "OwedView"]


class OwedView(Protocol):
    """The owed catch-ups, as the hub's helpers record them."""

    def add(self, client: Client, markets: Iterable[str], events: Iterable[str]) -> None: ...

    def clear(self) -> None: ...


class HubView(Protocol):
    """The hub's state and steps its helpers use (see :class:`.hub.Hub` for each)."""

    @property
    def store(self) -> MarketSource: ...

    @property
    def bus(self) -> Broker: ...

    @property
    def index(self) -> SubscriptionIndex[Client]: ...

    @property
    def markets(self) -> dict[str, tuple[str, int]]: ...

    @property
    def clients(self) -> set[Client]: ...

    @property
    def owed(self) -> OwedView: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None: ...

    def track(self, task: asyncio.Task[Any]) -> None: ...

    async def catch_up(self, client: Client, markets: list[str]) -> None: ...

    def expand(self, client: Client, event: str, ids: Iterable[str]) -> list[str]: ...

    def sync_count(self, client: Client) -> None: ...

    def release(self, client: Client, market: str) -> None: ...

    def deliver(self, client: Client, market: str, item: Held,
                out: wire.Outgoing | None = None) -> None: ...

    def restored(self) -> None: ...
