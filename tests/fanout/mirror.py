"""Test clients of the fan-out suite: a pure client-side book that follows the protocol's
client rule (protocol.md section 2), a :class:`Mirror` that runs it on a real websockets
connection, and :func:`wait_until` to poll a condition with a deadline.

The book also records what a correct server never sends (a delta for a market it holds no
state for, a gap, a version going backwards), so tests can assert there were none.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from oddsfeed.core import wire
from oddsfeed.core.book import Applied, Delta, Duplicate, apply_delta
from oddsfeed.core.model import Market
from oddsfeed.core.prices import parse_price

SUBPROTOCOL = {"json": "oddsfeed.v1.json", "msgpack": "oddsfeed.v1.msgpack"}


def delta_from_wire(msg: dict[str, Any]) -> Delta:
    """A wire ``delta`` message as a core Delta (decimal-odds prices back to ticks)."""
    sel = {sid: ({**change, "price": parse_price(change["price"])} if "price" in change
                 else dict(change))
           for sid, change in (msg.get("sel") or {}).items()}
    return Delta.from_store({**msg, "sel": sel})


class ClientBook:
    """Local market state per the client rule; feed it every message with :meth:`apply`.

    ``apply`` returns the ``subscribe`` request the client must send after a gap or an epoch
    change (``None`` otherwise). ``log[m]`` lists what happened to market ``m`` as
    ``("snapshot", epoch, version)``, ``("delta", base, version)`` or ``("gone",)``.
    """

    def __init__(self) -> None:
        self.markets: dict[str, Market] = {}
        self.log: dict[str, list[tuple[Any, ...]]] = {}
        self.resyncs: list[tuple[str, int, int, int]] = []  # (market, local v, base, v)
        self.anomalies: list[str] = []
        self.duplicates = 0

    def apply(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        op = msg.get("op")
        if op == "snapshot":
            market = Market.from_wire(msg["market"])
            local = self.markets.get(market.id)
            if local is not None and local.epoch == market.epoch and local.version > market.version:
                self.anomalies.append(f"snapshot of {market.id} goes back from "
                                      f"{local.version} to {market.version}")
            self.markets[market.id] = market
            self.log.setdefault(market.id, []).append(("snapshot", market.epoch, market.version))
        elif op == "gone":
            self.markets.pop(msg["m"], None)
            self.log.setdefault(msg["m"], []).append(("gone",))
        elif op == "subscribed":
            for mid in msg["missing"]:
                self.markets.pop(mid, None)
        elif op == "delta":
            mid = msg["m"]
            self.log.setdefault(mid, []).append(("delta", msg["base"], msg["v"]))
            local = self.markets.get(mid)
            if local is None:
                self.anomalies.append(f"delta {msg['base']}->{msg['v']} for {mid}, held nowhere")
                return None
            result = apply_delta(local, delta_from_wire(msg))
            if isinstance(result, Applied):
                self.markets[mid] = result.market
            elif isinstance(result, Duplicate):
                self.duplicates += 1
            else:
                self.resyncs.append((mid, local.version, msg["base"], msg["v"]))
                return {"op": "subscribe", "markets": [mid],
                        "from": {mid: {"epoch": local.epoch, "version": local.version}}}
        return None

    def delta_versions(self, market: str) -> list[int]:
        """The ``v`` of every delta received for ``market``, in order."""
        return [e[2] for e in self.log.get(market, []) if e[0] == "delta"]


class Mirror:
    """A protocol client on a real WebSocket; every received message goes through a
    :class:`ClientBook`, and resubscribes after a gap are sent automatically."""

    def __init__(self, ws: ClientConnection, encoding: str) -> None:
        self.ws = ws
        self.encoding = encoding
        self.book = ClientBook()
        self.messages: list[dict[str, Any]] = []
        self.frames = 0
        self.batch_sizes: list[int] = []
        self.error: BaseException | None = None
        self.done = asyncio.Event()
        self._ids = itertools.count(1)
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str, encoding: str = "json", **kwargs: Any) -> Mirror:
        """Connect offering the subprotocol of ``encoding`` and start reading."""
        ws = await connect(url, subprotocols=[Subprotocol(SUBPROTOCOL[encoding])],
                           max_size=2**24, open_timeout=10, **kwargs)
        mirror = cls(ws, encoding)
        mirror._task = asyncio.get_running_loop().create_task(mirror._run())
        return mirror

    @property
    def markets(self) -> dict[str, Market]:
        return self.book.markets

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    async def send(self, msg: dict[str, Any]) -> None:
        await self.ws.send(wire.encode(msg, self.encoding), text=self.encoding == "json")

    async def request(self, msg: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """Send ``msg`` with a fresh id and return the first message echoing that id."""
        rid = next(self._ids) + 1_000_000
        start = len(self.messages)
        await self.send({**msg, "id": rid})
        found: list[dict[str, Any]] = []

        def replied() -> bool:
            found.extend(m for m in self.messages[start:] if m.get("id") == rid)
            return bool(found)

        await wait_until(replied, timeout, f"a reply to {msg.get('op')} {rid}")
        return found[0]

    async def _run(self) -> None:
        try:
            async for frame in self.ws:
                msg = wire.decode_message(frame, self.encoding)
                self.frames += 1
                items = msg["items"] if msg.get("op") == "batch" else [msg]
                if msg.get("op") == "batch":
                    self.batch_sizes.append(len(items))
                for item in items:
                    self.messages.append(item)
                    resubscribe = self.book.apply(item)
                    if resubscribe is not None:
                        await self.send(resubscribe)
        except ConnectionClosed:
            pass
        except Exception as exc:  # a decoding or rule failure: keep it for the test to see
            self.error = exc
        finally:
            self.done.set()

    def ops(self, op: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("op") == op]

    def check_clean(self) -> None:
        """Assert the server never made this client resync or sent it something impossible."""
        assert self.error is None, repr(self.error)
        assert not self.book.anomalies, self.book.anomalies[:5]
        assert not self.book.resyncs, self.book.resyncs[:5]

    async def close(self) -> None:
        await self.ws.close()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


async def wait_until(cond: Callable[[], bool], timeout: float = 10.0,
                     what: str = "condition") -> None:
    """Poll ``cond`` until it holds; AssertionError naming ``what`` after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s")
        await asyncio.sleep(0.01)
