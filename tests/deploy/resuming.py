"""A WebSocket client that does what protocol.md asks of a client behind a balancer: it
follows the client rule (tests/fanout/mirror.py's ClientBook) and, whenever its connection
ends, reconnects to the same URL and resubscribes with ``from`` set to its positions.

It records what a deployment test checks: every close code, when each (re)subscription was
answered, and every snapshot per (market, epoch): a resume that had to fall back to a
snapshot shows up as a second snapshot of the same epoch.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import aiohttp
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from oddsfeed.core import wire
from oddsfeed.core.model import Market
from tests.fanout.mirror import ClientBook, wait_until

_ids = itertools.count(1)
_T = TypeVar("_T")


class ResumingClient:
    """Subscribes ``events`` at ``url`` and stays subscribed across lost connections."""

    def __init__(self, url: str, events: list[str]) -> None:
        self.url = url
        self.events = events
        self.book = ClientBook()
        self.closes: list[tuple[float, int | None]] = []  # (monotonic time, close code)
        self.subscribed: list[float] = []  # monotonic time of every `subscribed` reply
        self.snapshots: Counter[tuple[str, str]] = Counter()
        self.deltas = 0
        self.refused = 0  # handshakes the balancer or a node refused
        self.error: BaseException | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def connected(self) -> bool:
        """Subscribed on a connection that has not been closed since."""
        return bool(self.subscribed) and (not self.closes
                                          or self.subscribed[-1] > self.closes[-1][0])

    def resumed_after(self, t: float) -> float | None:
        """When the first subscription after ``t`` was answered (None: not yet)."""
        return next((s for s in self.subscribed if s > t), None)

    def repeated_snapshots(self) -> list[tuple[str, str]]:
        """(market, epoch) pairs snapshotted more than once: a resume that lost its place."""
        return [key for key, n in self.snapshots.items() if n > 1]

    def check_clean(self) -> None:
        """Assert no decoding error, no gap, nothing impossible and no lost position."""
        assert self.error is None, repr(self.error)
        assert not self.book.anomalies, self.book.anomalies[:5]
        assert not self.book.resyncs, self.book.resyncs[:5]
        assert not self.repeated_snapshots(), self.repeated_snapshots()[:5]

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self._session()
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                if isinstance(exc, InvalidStatus):
                    self.refused += 1
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a protocol or rule failure: the test reports it
                self.error = exc
                return

    async def _session(self) -> None:
        async with connect(self.url, subprotocols=[Subprotocol("oddsfeed.v1.json")],
                           max_size=2**24, open_timeout=5, close_timeout=2) as ws:
            rid = next(_ids)
            held = {mid: {"epoch": m.epoch, "version": m.version}
                    for mid, m in self.book.markets.items()}
            request: dict[str, Any] = {"op": "subscribe", "id": rid, "events": self.events}
            if held:
                request["markets"] = sorted(held)
                request["from"] = held
            await ws.send(wire.encode(request, "json"), text=True)
            try:
                async for frame in ws:
                    msg = wire.decode_message(frame, "json")
                    for item in msg["items"] if msg.get("op") == "batch" else [msg]:
                        await self._receive(ws, item, rid)
            except ConnectionClosed:
                pass
            self.closes.append((time.monotonic(), ws.close_code))

    async def _receive(self, ws: Any, item: dict[str, Any], rid: int) -> None:
        op = item.get("op")
        if op == "subscribed" and item.get("id") == rid:
            self.subscribed.append(time.monotonic())
        elif op == "snapshot":
            self.snapshots[(item["market"]["id"], item["market"]["epoch"])] += 1
        elif op == "delta":
            self.deltas += 1
        elif op == "error":
            raise AssertionError(f"server error: {item}")
        resubscribe = self.book.apply(item)
        if resubscribe is not None:
            await ws.send(wire.encode(resubscribe, "json"), text=True)


async def failover(clients: list[ResumingClient], held: int,
                   stop: Callable[[], _T]) -> tuple[list[int | None], float, _T]:
    """Run ``stop`` (in a thread) to take away a node holding ``held`` of ``clients``; wait
    until those clients are subscribed again and every client got fresh deltas. Returns the
    close code each lost client saw first, the seconds from the stop until the last of them
    was subscribed again, and what ``stop`` returned."""
    assert held > 0, "the node holds no client"
    before = {id(c): len(c.closes) for c in clients}
    deltas = [c.deltas for c in clients]
    t0 = time.monotonic()
    result = await asyncio.to_thread(stop)
    await wait_until(lambda: sum(len(c.closes) > before[id(c)] for c in clients) >= held,
                     30, f"{held} clients of the lost node closed")
    lost = [c for c in clients if len(c.closes) > before[id(c)]]
    assert len(lost) == held, (len(lost), held)
    await wait_until(lambda: all(c.resumed_after(t0) for c in lost), 30,
                     "every client of the lost node resumed")
    resumed = max(c.resumed_after(t0) or 0.0 for c in lost) - t0
    await wait_until(lambda: all(c.deltas > d + 5 for c, d in zip(clients, deltas)), 30,
                     "deltas after the failover")
    return [c.closes[before[id(c)]][1] for c in lost], resumed, result


async def converged(clients: list[ResumingClient], http_url: str, timeout: float = 15) -> None:
    """Wait until every client holds exactly what GET /v1/markets/{id} at ``http_url``
    returns for every market any of them ever heard of (absent where that is 404).
    Call it once the store stopped changing."""
    ids = sorted(set().union(*(c.book.log for c in clients)))
    want: dict[str, Market | None] = {}
    async with aiohttp.ClientSession() as http:
        for mid in ids:
            async with http.get(f"{http_url}/v1/markets/{mid}") as response:
                assert response.status in (200, 404), await response.text()
                want[mid] = (Market.from_wire(await response.json())
                             if response.status == 200 else None)
    assert any(want.values()), "the store holds none of the markets"
    await wait_until(lambda: all(c.book.markets.get(m) == w for c in clients
                                 for m, w in want.items()), timeout,
                     "every client holding the store's markets")


@asynccontextmanager
async def resuming_clients(url: str, events: list[str], n: int, timeout: float
                           ) -> AsyncIterator[list[ResumingClient]]:
    """``n`` clients of ``events`` through ``url``, yielded once each is connected, holds
    markets and has had 5 deltas (within ``timeout`` s); all are stopped at the end."""
    clients = [ResumingClient(url, events) for _ in range(n)]
    for c in clients:
        c.start()
    try:
        await wait_until(lambda: all(c.connected and c.book.markets and c.deltas >= 5
                                     for c in clients), timeout, "clients subscribed with deltas")
        yield clients
    finally:
        for c in clients:
            await c.stop()
