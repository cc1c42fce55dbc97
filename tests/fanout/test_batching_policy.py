"""Which messages of a batching worker wait for the window (oddsfeed.fanout.server): a
connection written to within the last QUIET_WINDOWS windows queues its next message, unless
it is cold (too few messages a second to ever share a frame)."""

from __future__ import annotations

import asyncio

from oddsfeed import wire

from .direct import direct_client, recv_exactly


async def test_a_cold_connection_is_written_at_once_and_a_warm_one_waits() -> None:
    """Batching on: a connection getting 5 messages a second gets each at once, even right
    after a frame; at 100 a second, a message right after a frame waits for the window."""
    async with direct_client() as (fan, client, reader):
        fan._adapt(0.0, 0.1)  # the cold threshold: 25 messages a second with 2 ms windows
        fan._set_batching(True)
        client.rate = 5
        outs = [wire.reply("pong", None, n=i) for i in range(3)]
        for out in outs:
            client.push(out)
        assert not fan._batch.clients  # nothing waits
        want = b"".join(out.ws_frame(wire.MSGPACK) for out in outs)
        got = await asyncio.get_running_loop().run_in_executor(
            None, recv_exactly, reader, len(want))
        assert got == want
        client.rate = 100
        client.push(wire.reply("pong", None, n=3))
        assert fan._batch.clients == {client}  # written to just now: waits for the window
        handle = fan._batch.handle
        assert handle is not None
        handle.cancel()
