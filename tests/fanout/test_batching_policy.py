"""Which messages of a batching worker wait for the window (oddsfeed.fanout.server): a
connection written to within the last QUIET_WINDOWS windows queues its next message, unless
it is cold (too few messages a second to ever share a frame)."""

from __future__ import annotations

import asyncio
import time

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


async def test_a_connection_is_hot_as_soon_as_this_period_says_so() -> None:
    """A connection whose messages in the current visit period already reach the hot
    threshold waits for the hot window, though its last period's rate (0) says otherwise:
    after a jump in traffic it shares frames at once, not a period later."""
    async with direct_client() as (fan, client, reader):
        fan._set_batching(True)
        fan._hot_min = 3.0  # as _adapt sets it while the hot window is widened
        client.rate = 0
        client.last_sent = time.monotonic()  # written to just now: not quiet
        client.push(wire.reply("pong", None, n=0))  # its 1st message this period
        assert fan._batch.clients == {client}
        assert not fan._hot_batch.clients
        handle = fan._batch.handle
        assert handle is not None
        handle.cancel()
        fan._flush(fan._batch)
        client.last_sent = time.monotonic()
        client.received = 2
        client.push(wire.reply("pong", None, n=1))  # its 3rd: hot
        assert fan._hot_batch.clients == {client}
        assert not fan._batch.clients
        handle = fan._hot_batch.handle
        assert handle is not None
        handle.cancel()
