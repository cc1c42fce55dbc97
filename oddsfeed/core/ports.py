"""The ports the fan-out hub depends on, as structural protocols: a broker that subscribes
channels and hands their payloads to callbacks (centrifuge's ``Broker`` is the model), and a
reader of current market state and history. The store adapter implements both; the
composition root builds it and hands it to the hub, which never names the adapter."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from .book import Delta
from .model import Market

# on_message(kind, id, payload): kind is "market" or "event", in publication order per channel
OnMessage = Callable[[str, str, bytes], None]
OnReconnect = Callable[[], Awaitable[None]]
OnLost = Callable[[], None]


class Broker(Protocol):
    """Channels subscribed on demand; at-most-once delivery, reconnect reported.

    ``connected`` is False while the broker is reconnecting; after a reconnect the broker
    awaits its ``on_reconnect`` callback so the subscriber re-reads what it may have missed.
    """

    connected: bool

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def subscribe_market(self, market: str) -> None: ...

    async def unsubscribe_market(self, market: str) -> None: ...

    async def subscribe_event(self, event: str) -> None: ...

    async def unsubscribe_event(self, event: str) -> None: ...


class MarketReader(Protocol):
    """Reads of current market state, event membership and per-market history."""

    async def get(self, market_id: str) -> Market | None: ...

    async def get_many(self, ids: Iterable[str]) -> dict[str, Market | None]: ...

    async def existing(self, ids: Iterable[str]) -> set[str]: ...

    async def event_market_ids(self, event: str) -> list[str]: ...

    async def history(self, market_id: str, epoch: str, after_version: int
                      ) -> tuple[Market, list[Delta]] | None: ...


class MarketSource(MarketReader, Protocol):
    """A reader that also builds the broker its readers' changes are published on."""

    def bus(self, on_message: OnMessage, on_reconnect: OnReconnect | None = None,
            on_lost: OnLost | None = None) -> Broker: ...
