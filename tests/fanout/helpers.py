"""A test client that follows the protocol's client rule, on a real WebSocket (kept for tests/sdk;
the fan-out suite itself uses tests/fanout/mirror.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from oddsfeed.core import wire
from oddsfeed.core.book import Applied, Delta, Duplicate, apply_delta
from oddsfeed.core.model import Market
from oddsfeed.core.prices import parse_price

PROTOCOLS = {"json": "oddsfeed.v1.json", "msgpack": "oddsfeed.v1.msgpack"}


def delta_from_wire(msg: dict[str, Any]) -> Delta:
    sel = {k: ({**v, "price": parse_price(v["price"])} if "price" in v else v)
           for k, v in (msg.get("sel") or {}).items()}
    return Delta.from_store({**msg, "sel": sel})


class Mirror:
    """Holds markets per the client rule; records every message and resubscribes on gaps."""

    def __init__(self, ws: ClientConnection, encoding: str) -> None:
        self.ws = ws
        self.encoding = encoding
        self.markets: dict[str, Market] = {}
        self.messages: list[dict[str, Any]] = []
        self.resyncs = 0
        self._task: asyncio.Task[None] | None = None
        self.closed: Any = None

    @classmethod
    async def open(cls, url: str, encoding: str = "json", **kw: Any) -> Mirror:
        ws = await connect(url, subprotocols=[PROTOCOLS[encoding]], max_size=2**24, **kw)
        m = cls(ws, encoding)
        m._task = asyncio.create_task(m._run())
        return m

    async def send(self, msg: dict[str, Any]) -> None:
        await self.ws.send(wire.encode(msg, self.encoding), text=self.encoding == "json")

    async def _run(self) -> None:
        try:
            async for frame in self.ws:
                msg = wire.decode_message(frame, self.encoding)
                items = msg["items"] if msg["op"] == "batch" else [msg]
                for item in items:
                    self.messages.append(item)
                    await self._apply(item)
        except Exception as exc:
            self.closed = exc
        self.closed = self.closed or self.ws.close_code

    async def _apply(self, msg: dict[str, Any]) -> None:
        op = msg["op"]
        if op == "snapshot":
            self.markets[msg["market"]["id"]] = Market.from_wire(msg["market"])
        elif op == "gone":
            self.markets.pop(msg["m"], None)
        elif op == "subscribed":
            for mid in msg["missing"]:
                self.markets.pop(mid, None)
        elif op == "delta":
            local = self.markets.get(msg["m"])
            if local is None:
                return
            res = apply_delta(local, delta_from_wire(msg))
            if isinstance(res, Applied):
                self.markets[msg["m"]] = res.market
            elif not isinstance(res, Duplicate):
                self.resyncs += 1
                await self.send({"op": "subscribe", "markets": [msg["m"]],
                                 "from": {msg["m"]: {"epoch": local.epoch,
                                                     "version": local.version}}})

    def ops(self, op: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["op"] == op]

    async def close(self) -> None:
        await self.ws.close()
        if self._task:
            await asyncio.gather(self._task, return_exceptions=True)


async def wait_for(cond: Any, timeout: float = 15.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        await asyncio.sleep(0.02)


def dumps(msg: Any) -> str:
    return json.dumps(msg)
