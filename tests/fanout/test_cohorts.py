"""Cohorts (oddsfeed.fanout.runs): the caught-up members of a market's run take each of the
hub's deltas as one, and a member leaves the cohort, its own position written back, the
moment anything else concerns it; every subscriber still gets every version in order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgpack

from oddsfeed.core import wire
from oddsfeed.core.model import Market, Selection
from oddsfeed.fanout import server as server_module
from oddsfeed.fanout.hub import Client
from oddsfeed.fanout.runs import COHORT

from .test_market_runs import (
    Peer,
    assert_left_with_2_3_while_the_other_got_2_3_4,
    delta,
    fanout,
    items,
    nothing_to_read,
    read_frame,
    versions,
    window_end,
)


@contextlib.asynccontextmanager
async def hubbed(n: int, sndbuf: int = 0) -> AsyncIterator[
        tuple[server_module.FanoutServer, list[Client], list[Peer]]]:
    """``fanout(n)`` with its hub driving it: every client subscribed to m1 at ("e", 1),
    the node at the same position, the server as the hub's sink."""
    async with fanout(n, sndbuf) as (fan, clients, peers):
        hub = fan.hub
        hub.sink = fan
        for client in clients:
            hub.index.add_market(client, "m1")
        hub.markets["m1"] = ("e", 1)
        yield fan, clients, peers


def live(fan: server_module.FanoutServer, v: int, **fields: Any) -> wire.Outgoing:
    """Delta ``v`` of m1 arriving from the bus (its base v - 1)."""
    out, d = delta(v, **fields)
    fan.hub._live("m1", d, out)
    return out


def snapshot(v: int) -> Market:
    return Market(id="m1", epoch="e", version=v, ts=0, event="e1", sport="soccer",
                  name="m1", selections={"h": Selection(name="H", price=20000)})


async def test_a_cohort_takes_each_update_as_one_and_its_positions_come_back() -> None:
    """Three subscribers handed deltas 2-4 form one cohort at the run's second delta (the
    first joins them one by one, as before; the later ones move no member), get [2, 3, 4]
    each in one shared frame, and hold version 4 after."""
    async with hubbed(3) as (fan, clients, peers):
        live(fan, 2)
        run = fan._runs["m1"]
        assert run.ncohort == 0
        live(fan, 3)
        assert run.ncohort == 3
        assert all(c.run_end == COHORT for c in clients)
        live(fan, 4)
        assert run.cohort_end == 3
        assert run.ncohort == 3
        window_end(fan)
        frames = [read_frame(p) for p in peers]
        assert versions(frames[0]) == [2, 3, 4]
        assert frames[0] == frames[1] == frames[2]
        assert all(c.pos["m1"] == ("e", 4) and c.run is None for c in clients)
        live(fan, 5)  # the next window's cohort starts from the positions written back
        window_end(fan)
        assert all(versions(read_frame(p)) == [5] for p in peers)


async def test_a_subscriber_joining_mid_window_joins_the_cohort() -> None:
    """A subscriber already at version 3 (its catch-up was ahead) skips deltas 2-3, joins
    the run at 4 while the cohort of the others takes it, and the cohort at 5: its frame
    is [4, 5], the others' [2, 3, 4, 5]."""
    async with hubbed(3) as (fan, clients, peers):
        late = clients[2]
        late.pos["m1"] = ("e", 3)
        live(fan, 2)
        live(fan, 3)
        assert late.run is None
        assert fan._runs["m1"].ncohort == 2
        live(fan, 4)
        assert late.run is fan._runs["m1"]
        assert late.run_end != COHORT
        live(fan, 5)
        assert late.run_end == COHORT
        assert fan._runs["m1"].ncohort == 3
        window_end(fan)
        assert versions(read_frame(peers[0])) == [2, 3, 4, 5]
        assert versions(read_frame(peers[1])) == [2, 3, 4, 5]
        assert versions(read_frame(peers[2])) == [4, 5]
        assert late.pos["m1"] == ("e", 5)


async def test_a_member_held_back_leaves_the_cohort_and_gets_its_held_deltas_in_order() -> None:
    """A member whose market is re-read mid-window (a gap on the store's hop) leaves the
    cohort with its own position; the deltas that arrive meanwhile are held for every
    subscriber, the snapshot follows what the run held, and the cohort forms again after."""
    release = asyncio.Event()

    async def get(market: str) -> Market:
        await release.wait()
        return snapshot(5)

    async with hubbed(2) as (fan, clients, peers):
        fan.hub.store.get = get  # type: ignore[attr-defined]
        live(fan, 2)
        live(fan, 3)
        out, gap = delta(5)  # base 4: version 4 never came
        fan.hub._live("m1", gap, out)
        await asyncio.sleep(0)  # the repair task starts: the market is held for both
        assert all(c.run_end != COHORT and "m1" in c.pending for c in clients)
        assert all(c.pos["m1"] == ("e", 3) for c in clients)
        assert fan._runs["m1"].ncohort == 0
        release.set()
        for _ in range(100):
            if not any(c.pending for c in clients):
                break
            await asyncio.sleep(0.001)
        assert all(c.pos["m1"] == ("e", 5) for c in clients)
        live(fan, 6)
        window_end(fan)
        loop = asyncio.get_running_loop()
        for peer in peers:
            got: list[dict[str, Any]] = []
            while not any(m["op"] == "delta" and m["v"] == 6 for m in got):
                got += items(await loop.run_in_executor(None, read_frame, peer))
            assert [(m["op"], m.get("v") or m["market"]["version"]) for m in got] == [
                ("delta", 2), ("delta", 3), ("snapshot", 5), ("delta", 6)]


async def test_a_member_unsubscribing_mid_window_gets_its_slice_then_the_reply() -> None:
    """A cohort member unsubscribing after delta 3 gets [2, 3, unsubscribed]; delta 4 goes
    to the other only, which stays in the cohort."""
    async with hubbed(2) as (fan, clients, peers):
        leaver, stayer = clients
        live(fan, 2)
        live(fan, 3)
        await fan.hub.unsubscribe(leaver, wire.Unsubscribe(id=7, markets=["m1"], events=[]))
        assert leaver.run is None
        assert "m1" not in leaver.pos
        assert fan._runs["m1"].ncohort == 1
        live(fan, 4)
        window_end(fan)
        assert_left_with_2_3_while_the_other_got_2_3_4(peers)


async def test_another_message_to_a_member_goes_after_the_cohort_s_deltas() -> None:
    """A heartbeat pushed to a cohort member mid-window follows deltas 2-3 it holds, and it
    gets delta 4 after that through its outbox, all in one frame, in order."""
    async with hubbed(2) as (fan, clients, peers):
        live(fan, 2)
        live(fan, 3)
        clients[0].push(wire.heartbeat(1))
        assert clients[0].run is None
        assert clients[0].pos["m1"] == ("e", 3)
        live(fan, 4)
        window_end(fan)
        got = items(read_frame(peers[0]))
        assert [(m["op"], m.get("v")) for m in got] == [
            ("delta", 2), ("delta", 3), ("heartbeat", None), ("delta", 4)]
        assert versions(read_frame(peers[1])) == [2, 3, 4]


async def test_a_suspension_closes_the_cohort_s_run_and_goes_at_once_behind_it() -> None:
    """A suspension after deltas 2-3 is written at once, behind them, to every member; the
    members hold its version and no run is left."""
    async with hubbed(2) as (fan, clients, peers):
        live(fan, 2)
        live(fan, 3)
        live(fan, 4, status="suspended")
        assert "m1" not in fan._runs
        loop = asyncio.get_running_loop()
        for peer in peers:  # no window end: written by the suspension
            got: list[dict[str, Any]] = []
            while len(got) < 3:
                got += items(await loop.run_in_executor(None, read_frame, peer))
            assert [m["v"] for m in got] == [2, 3, 4]
            assert got[2]["status"] == "suspended"
        assert all(c.pos["m1"] == ("e", 4) for c in clients)


async def test_a_slow_member_takes_the_cohort_s_deltas_through_its_outbox() -> None:
    """At the window's end a cohort member whose socket holds bytes gets deltas 2-3 through
    its outbox after those bytes, and holds version 3 like the other."""
    async with hubbed(2, sndbuf=4096) as (fan, clients, peers):
        slow, fast = clients
        blob = b"\x82\x7e" + (60000).to_bytes(2, "big") + b"x" * 60000
        slow.transport.write(blob)
        live(fan, 2)
        live(fan, 3)
        assert fan._runs["m1"].ncohort == 2
        window_end(fan)
        assert versions(read_frame(peers[1])) == [2, 3]
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, read_frame, peers[0]) == blob
        assert versions(await loop.run_in_executor(None, read_frame, peers[0])) == [2, 3]
        assert slow.pos["m1"] == fast.pos["m1"] == ("e", 3)


async def test_a_snapshot_from_the_bus_ends_the_cohort_on_each_member_s_own_position() -> None:
    """A snapshot of version 3 from the bus after the cohort took 2-3 is skipped by every
    member (it holds 3 already), never resent over what it holds."""
    async with hubbed(2) as (fan, clients, peers):
        live(fan, 2)
        live(fan, 3)
        payload = msgpack.packb({"op": "created", "market": snapshot(3).to_store()})
        fan.hub.on_bus_message("market", "m1", payload)
        assert fan._runs["m1"].ncohort == 0
        window_end(fan)
        assert all(versions(read_frame(p)) == [2, 3] for p in peers)
        assert all(nothing_to_read(p) for p in peers)


async def test_a_member_that_disconnects_leaves_the_cohort_so_the_others_still_get_the_delta(
) -> None:
    """A cohort member that disconnects mid-window is no subscriber any more and no member
    either: a subscriber outside the cohort (its catch-up was ahead) still takes the next
    delta, as a delta, not left to a resync."""
    async with hubbed(4) as (fan, clients, peers):
        late = clients[3]
        late.pos["m1"] = ("e", 3)
        live(fan, 2)
        live(fan, 3)
        run = fan._runs["m1"]
        assert run.ncohort == 3
        await fan.hub.remove_client(clients[0])
        assert run.ncohort == 2
        live(fan, 4)
        assert late.run is run
        window_end(fan)
        assert versions(read_frame(peers[1])) == [2, 3, 4]
        assert versions(read_frame(peers[3])) == [4]
        assert late.pos["m1"] == ("e", 4)
