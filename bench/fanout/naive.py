"""The naive baseline of the fan-out benchmark: websockets + redis-py pub/sub, one
``broadcast`` per message (websockets frames it once per client), no protocol features.

    python -m bench.fanout.naive PORT REDIS_URL

A client sends one msgpack map ``{"markets": [...]}``; every payload published on
``naive:<market>`` is broadcast as is to that market's clients.
"""

from __future__ import annotations

import sys

import msgpack
import uvloop
from redis.asyncio import Redis
from websockets.asyncio.server import ServerConnection, broadcast, serve

subs: dict[str, set[ServerConnection]] = {}


async def handler(ws: ServerConnection) -> None:
    mine: list[str] = []
    try:
        async for raw in ws:
            for m in msgpack.unpackb(raw).get("markets", []):
                subs.setdefault(m, set()).add(ws)
                mine.append(m)
    finally:
        for m in mine:
            subs.get(m, set()).discard(ws)


async def main(port: int, url: str) -> None:
    r = Redis.from_url(url)
    ps = r.pubsub(ignore_subscribe_messages=True)
    await ps.psubscribe("naive:*")
    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=16):
        async for msg in ps.listen():
            if msg["type"] != "pmessage":
                continue
            market = msg["channel"].decode()[6:]
            targets = subs.get(market)
            if targets:
                broadcast(targets, msg["data"])


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2]))
