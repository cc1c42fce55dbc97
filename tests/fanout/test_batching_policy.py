"""Which messages of a batching worker wait for the window (oddsfeed.fanout.batching): a
connection written to within the last QUIET_WINDOWS windows queues its next message, unless
it is cold (too few messages a second to ever share a frame)."""

from __future__ import annotations

import asyncio
import time

from oddsfeed import wire
from oddsfeed.book import Delta
from oddsfeed.fanout import batching
from oddsfeed.fanout.frames import frame_of

from .direct import direct_client, recv_exactly


async def test_a_cold_connection_is_written_at_once_and_a_warm_one_waits() -> None:
    """Batching on: a connection getting 5 messages a second gets each at once, even right
    after a frame; at 100 a second, a message right after a frame waits for the window."""
    async with direct_client() as (fan, client, reader):
        # the cold threshold: 25 messages a second with 2 ms windows
        fan.policy.adapt(0.0, 0.1, fan.hub.lateness_s)
        fan.policy.set_batching(True)
        client.rate = 5
        outs = [wire.reply("pong", None, n=i) for i in range(3)]
        for out in outs:
            client.push(out)
        assert not fan._batch.clients  # nothing waits
        want = b"".join(frame_of(out, wire.MSGPACK) for out in outs)
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
        fan.policy.set_batching(True)
        fan.policy.hot_min = 3.0  # as adapt() sets it while the hot window is widened
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


async def test_a_streak_of_close_messages_makes_a_connection_hot() -> None:
    """A connection whose counts say nothing yet (rate 0, few messages this period) is hot
    after HOT_STREAK deliveries in a row, each within the quiet period of its last frame:
    the counts would take ~50 messages. The streak counts while the worker is not batching
    yet, so a worker that starts to has its hot connections at once; a pause ends it."""
    async with direct_client() as (fan, client, reader):
        assert not fan.policy.batching
        client.rate = 0
        n = batching.HOT_STREAK
        for i in range(n):  # not batching: each written at once, each after the last
            client.push(wire.reply("pong", None, n=i))
        assert client.streak == n - 1
        assert not fan._batch.clients
        assert not fan._hot_batch.clients
        fan.policy.widen()  # the worker fell behind: batching, widest hot window
        assert fan.policy.batching
        assert fan.policy.hot_window_s == fan.policy.max_window_s
        client.push(wire.reply("pong", None, n=n))
        assert client.streak == n
        assert fan._hot_batch.clients == {client}
        handle = fan._hot_batch.handle
        assert handle is not None
        handle.cancel()
        fan._flush(fan._hot_batch)
        want = sum(len(frame_of(wire.reply("pong", None, n=i), wire.MSGPACK))
                   for i in range(n + 1))
        await asyncio.get_running_loop().run_in_executor(None, recv_exactly, reader, want)
        client.last_sent -= fan.policy.busy_quiet_s  # a pause: the streak ends
        client.push(wire.reply("pong", None, n=n + 1))
        assert client.streak == 0
        assert not fan._hot_batch.clients


async def test_a_worker_behind_the_store_widens_within_a_tick() -> None:
    """send_many reading a delta applied longer than _behind_s ago switches batching on
    with the widest hot window at once, without waiting for the ticker; a worker keeping up
    leaves the policy to the ticker."""
    async with direct_client() as (fan, client, reader):
        # idle: not batching; a cold connection is written at once
        fan.policy.adapt(0.0, 0.1, fan.hub.lateness_s)
        delta = Delta(market="m1", epoch="e", version=2, base=1, ts=0)
        out = wire.delta(delta)
        fan.hub.lateness_s = fan.policy.behind_s / 2
        fan.send_many([client], out, "m1", delta, time.monotonic())
        assert not fan.policy.batching
        assert fan.policy.hot_window_s == fan.policy.window_s
        fan.hub.lateness_s = fan.policy.behind_s * 2
        fan.send_many([client], out, "m1", delta, time.monotonic())
        assert fan.policy.batching
        assert fan.policy.hot_window_s == fan.policy.max_window_s
        assert fan.policy.hot_min < float("inf")
        frame = frame_of(out, wire.MSGPACK)
        await asyncio.get_running_loop().run_in_executor(  # both written at once
            None, recv_exactly, reader, 2 * len(frame))


async def test_the_share_rises_with_the_last_tick_and_falls_with_the_smoothed_one() -> None:
    """One busy tick after idle starts batching with a widened hot window; one idle tick
    after a busy stretch does not stop it (the smoothed share is still high)."""
    async with direct_client() as (fan, _client, _reader):
        fan.policy.adapt(0.0, 0.1, fan.hub.lateness_s)
        assert not fan.policy.batching
        fan.policy.adapt(0.09, 0.1, fan.hub.lateness_s)  # 90% of the last tick; smoothed 27%
        assert fan.policy.busy < fan.policy.min_busy
        assert fan.policy.batching
        assert fan.policy.hot_window_s == fan.policy.max_window_s
        for _ in range(10):
            fan.policy.adapt(0.09, 0.1, fan.hub.lateness_s)
        fan.policy.adapt(0.0, 0.1, fan.hub.lateness_s)  # an idle tick: smoothed ~0.63
        assert fan.policy.batching
        assert fan.policy.window_s < fan.policy.hot_window_s < fan.policy.max_window_s
