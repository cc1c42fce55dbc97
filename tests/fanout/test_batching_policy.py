"""Which messages of a batching worker wait for the window (oddsfeed.fanout.batching): a
connection written to within the last QUIET_WINDOWS windows queues its next message, unless
it is cold (too few messages a second to ever share a frame)."""

from __future__ import annotations

import asyncio
import time

from oddsfeed.core import wire
from oddsfeed.core.book import Delta
from oddsfeed.core.session import Outbox
from oddsfeed.fanout import batching
from oddsfeed.fanout.batching import BatchingPolicy
from oddsfeed.fanout.client import Client
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


# ---- the policy alone: no socket, no event loop --------------------------------------------


def _policy(min_busy: float = 0.4) -> BatchingPolicy:
    """The default policy: 2 ms windows, hot windows up to 20 ms, batching from 40% busy."""
    policy = BatchingPolicy(window_ms=2, max_window_ms=20, min_busy=min_busy)
    policy.period = 1.0
    return policy


def _client() -> Client:
    return Client(1, wire.MSGPACK, Outbox(encoding=wire.MSGPACK, high_water_bytes=1 << 20,
                                          max_bytes=4 << 20, max_lag_s=30.0))


def test_an_idle_worker_writes_everything_at_once() -> None:
    """Under batch_min_busy nothing waits, even a connection written to a moment ago."""
    policy, client = _policy(), _client()
    policy.adapt(0.01, 0.1, lateness_s=0.0)
    assert not policy.batching
    client.last_sent = 100.0
    client.rate = 500
    assert policy.write_now(client, 100.0001)


def test_a_busy_worker_queues_a_warm_connection_and_writes_a_cold_one() -> None:
    """Batching: right after a frame a connection at 100 messages a period waits, one at 5
    is written at once; after the quiet period both are written at once."""
    policy = _policy()
    policy.adapt(0.05, 0.1, lateness_s=0.0)  # 50% busy: batching, window not widened yet
    assert policy.batching
    warm, cold = _client(), _client()
    warm.rate, cold.rate = 100, 5
    for c in (warm, cold):
        c.last_sent = 100.0
    assert not policy.write_now(warm, 100.001)
    assert policy.write_now(cold, 100.001)
    later = 100.0 + policy.busy_quiet_s + 0.001
    assert policy.write_now(warm, later)


def test_queued_bytes_or_a_running_writer_always_queue() -> None:
    """A message never overtakes what a connection already has queued or being written."""
    policy, client = _policy(), _client()
    client.outbox.push(wire.reply("pong", None), now=0.0)
    assert not policy.write_now(client, 50.0)
    client.outbox.take()
    assert policy.write_now(client, 50.0)
    client.closed = True
    assert not policy.write_now(client, 60.0)


def test_the_hot_window_widens_with_the_busy_share_and_at_once_when_behind() -> None:
    """The hot window grows from 2 ms (40% busy) to 20 ms (80%); a node reading deltas
    later than BEHIND_S widens it to the widest at once and makes busy connections hot."""
    policy = _policy()
    policy.adapt(0.06, 0.1, lateness_s=0.0)  # 60%: halfway
    assert policy.window_s < policy.hot_window_s < policy.max_window_s
    client = _client()
    assert not policy.hot(client)
    assert not policy.behind(policy.behind_s / 2)
    assert policy.behind(policy.behind_s * 2)
    policy.widen()
    assert policy.hot_window_s == policy.max_window_s
    assert not policy.behind(policy.behind_s * 2)  # already at its widest
    client.received = int(policy.hot_min) + 1
    assert policy.hot(client)
    idle = _policy()
    idle.adapt(0.0, 0.1, lateness_s=1.0)  # idle, yet behind the store: the widest window
    assert idle.batching
    assert idle.hot_window_s == idle.max_window_s


def test_a_streak_makes_a_connection_hot_only_while_the_window_is_widened() -> None:
    """HOT_STREAK deliveries in a row, each within the quiet period of the last frame,
    make a connection hot once the hot window is widened; a pause resets the streak."""
    policy, client = _policy(), _client()
    client.last_sent = 10.0
    for i in range(batching.HOT_STREAK):
        assert policy.write_now(client, 10.0 + i * 0.001)  # not batching: written
    assert client.streak == batching.HOT_STREAK
    assert not policy.hot(client)
    policy.widen()
    assert policy.hot(client)
    assert not policy.write_now(client, 10.01)
    policy.write_now(client, 10.0 + policy.busy_quiet_s + 1)
    assert client.streak == 0


def test_batching_stops_only_below_the_hysteresis_band() -> None:
    """A worker batching since 40% busy keeps batching at 35% (within BATCH_HYSTERESIS of
    the threshold) and stops once the share falls under 30%."""
    policy = _policy()
    policy.adapt(0.05, 0.1, lateness_s=0.0)
    assert policy.batching
    for _ in range(30):
        policy.adapt(0.035, 0.1, lateness_s=0.0)  # settles at 35%
    assert policy.batching
    for _ in range(30):
        policy.adapt(0.02, 0.1, lateness_s=0.0)  # settles at 20%
    assert not policy.batching
