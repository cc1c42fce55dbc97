"""The naive baseline of the fan-out benchmark: websockets + redis-py pub/sub, one
``broadcast`` per message (websockets frames it once per client), no protocol features.

    python -m bench.fanout.naive PORT REDIS_URL [MARKET ...]

A client sends one msgpack map ``{"markets": [...]}``; every payload published on
``naive:<market>`` is broadcast as is to that market's clients. Given MARKETs, it listens
instead on those markets' store channels, where oddsfeed's apply script publishes (the
bench then drives it through that script, as oddsfeed): each published delta's JSON body
(oddsfeed/store/published.lua) is broadcast, anything else published there is dropped.
"""

from __future__ import annotations

import struct
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


# A published delta: 0xc1, flags, version, base, apply time, epoch and JSON body lengths.
HEADER = struct.Struct(">BBQQQHI")


async def from_store(port: int, url: str, markets: list[str]) -> None:
    r = Redis.from_url(url)
    ps = r.pubsub(ignore_subscribe_messages=True)
    await ps.ssubscribe(*(f"of:{{m:{m}}}:c" for m in markets))
    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=16):
        async for msg in ps.listen():
            data = msg["data"]
            if msg["type"] != "smessage" or data[:1] != b"\xc1":
                continue
            targets = subs.get(msg["channel"].decode()[6:-3])
            if targets:
                _, _, _, _, _, n_epoch, n_json = HEADER.unpack_from(data)
                start = HEADER.size + n_epoch
                broadcast(targets, data[start:start + n_json])


if __name__ == "__main__":
    if len(sys.argv) > 3:
        uvloop.run(from_store(int(sys.argv[1]), sys.argv[2], sys.argv[3:]))
    else:
        uvloop.run(main(int(sys.argv[1]), sys.argv[2]))
