"""Catch-ups a failed store read left undone, per client, and their retry with backoff. No
socket I/O; the hub owns the state it resends."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from ..core.errors import StoreError
from .client import Client
from .hubview import HubView

# Backoff between retries of the owed catch-ups.
RETRY_S = 0.05
RETRY_MAX_S = 2.0


class Owed:
    """client -> (markets, events) whose catch-up is owed: each market gets a snapshot (or
    ``gone``) and each event's markets a catch-up once the store answers. Call :meth:`add`
    after a failed read; retries run while the bus is connected, until none is left."""

    def __init__(self, hub: HubView) -> None:
        self._hub = hub
        self._owed: dict[Client, tuple[set[str], set[str]]] = {}
        self._task: asyncio.Task[None] | None = None

    def __bool__(self) -> bool:
        return bool(self._owed)

    def __len__(self) -> int:
        return len(self._owed)

    def add(self, client: Client, markets: Iterable[str], events: Iterable[str]) -> None:
        """Owe ``client`` the catch-up of ``markets`` and ``events``; starts the retries."""
        if client.closed:
            return
        entry = self._owed.get(client)
        if entry is None:
            entry = self._owed[client] = (set(), set())
        entry[0].update(markets)
        entry[1].update(events)
        if self._task is None:
            task = asyncio.get_running_loop().create_task(self._repay())
            self._task = task
            self._hub.track(task)

    def drop(self, client: Client) -> None:
        """Forget a client (it closed)."""
        self._owed.pop(client, None)

    def clear(self) -> None:
        """Forget everything: the caller re-reads every market and event of every client."""
        self._owed.clear()

    async def _repay(self) -> None:
        delay = RETRY_S
        try:
            while self._owed:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                if not self._hub.bus.connected:
                    continue  # the re-read after the reconnect repays everyone
                owed, self._owed = self._owed, {}
                for client, (markets, events) in owed.items():
                    await self._resend(client, markets, events)
            self._hub.restored()
        finally:
            self._task = None

    async def _resend(self, client: Client, markets: Iterable[str],
                      events: Iterable[str]) -> None:
        """One owed catch-up: the markets still subscribed and not in a catch-up already,
        and the markets of owed events the client does not hold yet."""
        hub = self._hub
        if client.closed:
            return
        mine = hub.index.markets_of(client)
        wanted = [m for m in markets if m in mine and m not in client.pending]
        try:
            for e in events:
                if e in hub.index.events_of(client):
                    wanted.extend(hub.expand(client, e, await hub.store.event_market_ids(e)))
        except StoreError:
            self.add(client, markets, events)
            return
        if wanted:
            await hub.catch_up(client, list(dict.fromkeys(wanted)))
