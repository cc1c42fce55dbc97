"""The subscription index: which connections want which markets and events. No I/O.

Connections are any hashable handle. Every operation is O(1) per id; the caller learns
when a market or event gains its first or loses its last local subscriber, which is when
the node must subscribe or unsubscribe the store's channel.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

C = TypeVar("C", bound=Hashable)


class SubscriptionIndex(Generic[C]):
    """Two-way index between connections and the market and event ids they subscribed."""

    def __init__(self) -> None:
        self._markets: dict[str, set[C]] = {}
        self._events: dict[str, set[C]] = {}
        self._by_conn: dict[C, tuple[set[str], set[str]]] = {}

    def _conn(self, conn: C) -> tuple[set[str], set[str]]:
        entry = self._by_conn.get(conn)
        if entry is None:
            entry = self._by_conn[conn] = (set(), set())
        return entry

    def _add(self, index: dict[str, set[C]], slot: int, conn: C, key: str) -> bool:
        subs = index.get(key)
        first = subs is None
        if subs is None:
            subs = index[key] = set()
        subs.add(conn)
        self._conn(conn)[slot].add(key)
        return first

    def _remove(self, index: dict[str, set[C]], slot: int, conn: C, key: str) -> bool:
        subs = index.get(key)
        if subs is None or conn not in subs:
            return False
        subs.discard(conn)
        self._by_conn[conn][slot].discard(key)
        if not subs:
            del index[key]
            return True
        return False

    @staticmethod
    def _forget(index: dict[str, set[C]], conn: C, keys: Iterable[str]) -> list[str]:
        lost = []
        for key in keys:
            subs = index[key]
            subs.discard(conn)
            if not subs:
                del index[key]
                lost.append(key)
        return lost

    def add_market(self, conn: C, market: str) -> bool:
        """Subscribe ``conn`` to ``market``; True if it is the market's first local subscriber."""
        return self._add(self._markets, 0, conn, market)

    def remove_market(self, conn: C, market: str) -> bool:
        """Unsubscribe; True if ``market`` now has no local subscriber at all."""
        return self._remove(self._markets, 0, conn, market)

    def add_event(self, conn: C, event: str) -> bool:
        """Subscribe ``conn`` to ``event``; True if it is the event's first local subscriber."""
        return self._add(self._events, 1, conn, event)

    def remove_event(self, conn: C, event: str) -> bool:
        """Unsubscribe from an event; True if it now has no local subscriber."""
        return self._remove(self._events, 1, conn, event)

    def drop(self, conn: C) -> tuple[list[str], list[str]]:
        """Forget a connection; returns (markets, events) that lost their last subscriber."""
        entry = self._by_conn.pop(conn, None)
        if entry is None:
            return [], []
        markets, events = entry
        return self._forget(self._markets, conn, markets), self._forget(self._events, conn, events)

    def market_subscribers(self, market: str) -> Iterable[C]:
        return self._markets.get(market, ())

    def event_subscribers(self, event: str) -> Iterable[C]:
        return self._events.get(event, ())

    def markets_of(self, conn: C) -> set[str]:
        entry = self._by_conn.get(conn)
        return entry[0] if entry else set()

    def events_of(self, conn: C) -> set[str]:
        entry = self._by_conn.get(conn)
        return entry[1] if entry else set()

    def count(self, conn: C) -> int:
        """How many ids (markets + events) ``conn`` holds."""
        entry = self._by_conn.get(conn)
        return len(entry[0]) + len(entry[1]) if entry else 0

    def markets(self) -> Iterable[str]:
        """Every market with at least one local subscriber."""
        return self._markets.keys()

    def events(self) -> Iterable[str]:
        return self._events.keys()

    def __len__(self) -> int:
        return len(self._by_conn)
