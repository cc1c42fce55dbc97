"""The client: connection, mirror, resume, async iteration, callbacks, bet slips."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .core import Applied, Delta, Duplicate, Market, apply_delta, parse_price, wire

PROTOCOLS = {"json": "oddsfeed.v1.json", "msgpack": "oddsfeed.v1.msgpack"}


class ValidationError(Exception):
    """The server answered a request with an ``error`` message (``code``, ``message``)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(f"{code}: {message}")


@dataclass(frozen=True)
class Change:
    """One change of the mirror: ``kind`` is ``snapshot``, ``delta`` or ``gone``; ``market``
    is the new state (None when gone) and ``previous`` the state before (None if new)."""

    kind: str
    market_id: str
    market: Market | None
    previous: Market | None


def delta_from_wire(msg: dict[str, Any]) -> Delta:
    """A wire ``delta`` message (prices as decimal odds) as a core Delta (prices in ticks)."""
    sel = {k: ({**v, "price": parse_price(v["price"])} if "price" in v else v)
           for k, v in (msg.get("sel") or {}).items()}
    return Delta.from_store({**msg, "sel": sel})


class OddsFeedClient:
    """A resilient subscription to an oddsfeed server.

    Use as an async context manager (or call :meth:`start` / :meth:`close`). ``markets``
    holds the mirror. Iterate :meth:`changes` or register :meth:`on_change` callbacks.
    The change queue is bounded (``max_queue``): when a consumer falls behind, the oldest
    changes are dropped from the queue (the mirror itself is always complete).
    """

    def __init__(self, url: str, *, token: str | None = None, encoding: str = "msgpack",
                 max_backoff_s: float = 10.0, max_queue: int = 10_000) -> None:
        if encoding not in PROTOCOLS:
            raise ValueError(f"encoding must be one of {', '.join(PROTOCOLS)}")
        self.url = url
        self.token = token
        self.encoding = encoding
        self.max_backoff_s = max_backoff_s
        self.markets: dict[str, Market] = {}
        self.reconnects = 0
        self.resyncs = 0
        self._want_markets: set[str] = set()
        self._want_events: set[str] = set()
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._queue: asyncio.Queue[Change] = asyncio.Queue(max_queue)
        self._callbacks: list[Callable[[Change], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closing = False

    # ---- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> OddsFeedClient:
        await self.start()
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def start(self, timeout_s: float = 10.0) -> None:
        """Connect (and keep reconnecting in the background); waits for the first hello."""
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._connected.wait(), timeout_s)

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # ---- requests -----------------------------------------------------------------------

    async def subscribe(self, *, markets: Iterable[str] = (), events: Iterable[str] = ()
                        ) -> dict[str, Any]:
        """Subscribe (resuming any market already mirrored); returns the ``subscribed`` reply."""
        m, e = list(markets), list(events)
        self._want_markets.update(m)
        self._want_events.update(e)
        return await self._request({"op": "subscribe", "markets": m, "events": e,
                                    "from": self._positions(m)})

    async def unsubscribe(self, *, markets: Iterable[str] = (), events: Iterable[str] = ()
                          ) -> dict[str, Any]:
        m, e = list(markets), list(events)
        self._want_markets.difference_update(m)
        self._want_events.difference_update(e)
        for mid in m:
            self.markets.pop(mid, None)
        return await self._request({"op": "unsubscribe", "markets": m, "events": e})

    async def validate(self, legs: Sequence[dict[str, Any]], accept: str = "exact"
                       ) -> dict[str, Any]:
        """Validate a bet slip over the socket; returns ``{ok, legs}`` (protocol section 4)."""
        reply = await self._request({"op": "validate", "legs": list(legs), "accept": accept})
        return {"ok": reply["ok"], "legs": reply["legs"]}

    async def ping(self) -> int:
        return int((await self._request({"op": "ping"}))["ts"])

    # ---- consumption --------------------------------------------------------------------

    def on_change(self, callback: Callable[[Change], None]) -> None:
        """Call ``callback(change)`` for every change of the mirror."""
        self._callbacks.append(callback)

    async def changes(self) -> AsyncIterator[Change]:
        """Iterate over changes of the mirror as they happen."""
        while True:
            yield await self._queue.get()

    # ---- internals ----------------------------------------------------------------------

    def _positions(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        return {m: {"epoch": self.markets[m].epoch, "version": self.markets[m].version}
                for m in ids if m in self.markets}

    async def _send(self, msg: dict[str, Any]) -> None:
        if self._ws is None:
            raise ConnectionError("not connected")
        await self._ws.send(wire.encode(msg, self.encoding), text=self.encoding == "json")

    async def _request(self, msg: dict[str, Any], timeout_s: float = 30.0) -> dict[str, Any]:
        await asyncio.wait_for(self._connected.wait(), timeout_s)
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        try:
            await self._send({**msg, "id": rid})
            return await asyncio.wait_for(fut, timeout_s)
        finally:
            self._waiting.pop(rid, None)

    async def _run(self) -> None:
        backoff = 0.1
        while not self._closing:
            url = self.url + (f"?token={self.token}" if self.token else "")
            try:
                async with connect(url, subprotocols=[PROTOCOLS[self.encoding]],  # type: ignore[list-item]
                                   max_size=2**24) as ws:
                    self._ws = ws
                    backoff = 0.1
                    await self._read(ws)
            except InvalidStatus:
                raise  # a refused handshake (401, 404) will not fix itself
            except (OSError, ConnectionClosed, asyncio.TimeoutError):
                pass
            finally:
                self._ws = None
                self._connected.clear()
                for fut in self._waiting.values():
                    if not fut.done():
                        fut.set_exception(ConnectionError("connection lost"))
            if self._closing:
                return
            self.reconnects += 1
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, self.max_backoff_s)

    async def _read(self, ws: ClientConnection) -> None:
        async for frame in ws:
            msg = wire.decode_message(frame, self.encoding)
            for item in (msg["items"] if msg.get("op") == "batch" else [msg]):
                await self._handle(item)

    async def _handle(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "hello":
            self._connected.set()
            markets = sorted(self._want_markets | set(self.markets))
            if markets or self._want_events:
                # resume after a reconnect, every market from its position
                with contextlib.suppress(ConnectionClosed):
                    await self._send({"op": "subscribe", "markets": markets,
                                      "events": sorted(self._want_events),
                                      "from": self._positions(markets)})
            return
        if op == "snapshot":
            market = Market.from_wire(msg["market"])
            self._emit(Change("snapshot", market.id, market, self.markets.get(market.id)))
            self.markets[market.id] = market
        elif op == "delta":
            local = self.markets.get(msg["m"])
            if local is not None:
                res = apply_delta(local, delta_from_wire(msg))
                if isinstance(res, Applied):
                    self.markets[local.id] = res.market
                    self._emit(Change("delta", local.id, res.market, local))
                elif not isinstance(res, Duplicate):
                    self.resyncs += 1
                    await self._send({"op": "subscribe", "markets": [local.id],
                                      "from": self._positions([local.id])})
        elif op == "gone":
            prev = self.markets.pop(msg["m"], None)
            if prev is not None:
                self._emit(Change("gone", msg["m"], None, prev))
        elif op == "subscribed":
            for mid in msg.get("missing", []):
                prev = self.markets.pop(mid, None)
                if prev is not None:
                    self._emit(Change("gone", mid, None, prev))
        rid = msg.get("id")
        if isinstance(rid, int) and rid in self._waiting:
            fut = self._waiting[rid]
            if not fut.done():
                if op == "error":
                    fut.set_exception(ValidationError(msg["code"], msg["message"]))
                else:
                    fut.set_result(msg)

    def _emit(self, change: Change) -> None:
        if self._queue.full():
            self._queue.get_nowait()  # bounded: drop the oldest change, never the mirror
        self._queue.put_nowait(change)
        for cb in self._callbacks:
            cb(change)
