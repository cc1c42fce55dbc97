"""Keepalive from the worker's one ticker (protocol.md section 2): a peer silent for
``ping_interval_s`` is pinged, one that stays silent ``ping_timeout_s`` more is dropped, and a
peer that answers pings stays connected without sending anything else."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import connect

from .conftest import WorkerFactory, ws_url
from .mirror import wait_until

FAST_KEEPALIVE = {"fanout.ping_interval_s": 0.3, "fanout.ping_timeout_s": 0.3}


async def test_dead_peer_is_dropped_and_live_peer_kept(start_worker: WorkerFactory) -> None:
    """A peer that completed the handshake and then went silent (never answers pings) is
    dropped, while a peer whose library answers pings stays open well past the timeout."""
    async with start_worker(**FAST_KEEPALIVE) as w:
        reader, writer = await asyncio.open_connection("127.0.0.1", w.ws_port)
        writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b" 101 " in head
        await wait_until(lambda: len(w.hub.clients) == 1, what="dead peer connected")
        # the live peer: websockets answers pings itself; its own keepalive is off so only
        # the server's pings are in play
        async with connect(ws_url(w), ping_interval=None) as live:
            await wait_until(lambda: len(w.hub.clients) == 2, what="live peer connected")
            await wait_until(lambda: len(w.hub.clients) == 1, 10, "dead peer dropped")
            loop = asyncio.get_running_loop()
            until = loop.time() + 1.5  # five ping intervals
            while loop.time() < until:
                assert live.close_code is None, "the live peer was dropped"
                await asyncio.sleep(0.1)
            await live.send('{"op":"ping","id":1}')
            replies = []
            while not any('"pong"' in str(r) for r in replies):
                replies.append(await asyncio.wait_for(live.recv(), 5))
        seen = b""
        while chunk := await asyncio.wait_for(reader.read(65536), 5):
            seen += chunk
        assert b"\x89\x00" in seen, "the silent peer was never pinged"
        writer.close()
