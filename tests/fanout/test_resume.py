"""Resuming with ``from``: the missing versions from history, else a snapshot, then live
deltas with no gap (protocol.md section 2, catch-up)."""

from __future__ import annotations

import asyncio
from typing import Any

from oddsfeed.core.model import Market
from oddsfeed.worker import Worker

from .builders import create, price
from .conftest import WorkerFactory, ws_url
from .mirror import Mirror, wait_until


def position(m: Market) -> dict[str, Any]:
    return {"epoch": m.epoch, "version": m.version}


async def resume(w: Worker, held: dict[str, Market], encoding: str = "json") -> Mirror:
    """A new connection that holds ``held`` and subscribes with ``from`` at its positions."""
    c = await Mirror.open(ws_url(w), encoding)
    c.book.markets.update(held)
    reply = await c.request({"op": "subscribe", "markets": list(held),
                             "from": {m: position(s) for m, s in held.items()}})
    assert reply["op"] == "subscribed"
    return c


async def test_reconnect_gets_exactly_the_missing_versions_then_live(worker: Worker) -> None:
    """A client that missed 100 versions resumes with from and gets exactly those versions
    as deltas, in order, with no snapshot, then the next live delta."""
    store = worker.store
    await store.apply(create("m1"))
    first = await Mirror.open(ws_url(worker), "msgpack")
    await first.request({"op": "subscribe", "markets": ["m1"]})
    await wait_until(lambda: "m1" in first.markets)
    held = first.markets["m1"]
    await first.close()
    for i in range(100):
        await store.apply(price("m1", 20_001 + i, "h" if i % 2 else "a"))
    c = await resume(worker, {"m1": held}, "msgpack")
    await wait_until(lambda: c.markets["m1"].version == 101, what="catch-up")
    assert c.book.log["m1"] == [("delta", v - 1, v) for v in range(2, 102)]
    assert c.markets["m1"] == await store.get("m1")
    await store.apply(price("m1", 77_000))
    await wait_until(lambda: c.markets["m1"].version == 102, what="live after catch-up")
    assert c.book.log["m1"][-1] == ("delta", 101, 102)
    c.check_clean()
    await c.close()


async def test_resume_while_updates_flow_has_no_gap(worker: Worker) -> None:
    """Clients resuming while a writer keeps changing the market get every version exactly
    once, catch-up then live, with no snapshot and no hole at the switch."""
    store = worker.store
    await store.apply(create("m1"))
    for i in range(20):
        await store.apply(price("m1", 30_000 + i))
    helds: list[Market] = []
    stop = asyncio.Event()

    async def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            await store.apply(price("m1", 20_000 + i % 5000, "h" if i % 3 else "a"))

    async def resumer() -> list[Mirror]:
        clients = []
        for k in range(12):
            snap = await store.get("m1")
            assert snap is not None
            helds.append(snap)
            await asyncio.sleep(0.005 * (k % 3))
            clients.append(await resume(worker, {"m1": snap}, "json" if k % 2 else "msgpack"))
        return clients

    task = asyncio.get_running_loop().create_task(writer())
    try:
        clients = await resumer()
        target = (await store.get("m1")).version + 50  # type: ignore[union-attr]
        await wait_until(lambda: all(c.markets["m1"].version >= target for c in clients), 20,
                         "clients live")
    finally:
        stop.set()
        await task
    truth = await store.get("m1")
    assert truth is not None
    await wait_until(lambda: all(c.markets["m1"] == truth for c in clients), what="final state")
    for c, held in zip(clients, helds):
        assert c.book.log["m1"] == [("delta", v - 1, v)
                                    for v in range(held.version + 1, truth.version + 1)]
        c.check_clean()
    await asyncio.gather(*(c.close() for c in clients))


async def test_beyond_trimmed_history_gets_a_snapshot(start_worker: WorkerFactory) -> None:
    """With history_len 500 and 800 versions written, a position the history no longer covers
    gets a snapshot, while one 500 versions back still gets its 500 deltas."""
    async with start_worker(**{"redis.history_len": 500}) as w:
        await w.store.apply(create("m1"))
        old = await w.store.get("m1")
        assert old is not None
        recent: Market | None = None
        for i in range(800):
            await w.store.apply(price("m1", 20_001 + i))
            if i == 800 - 500 - 1:
                recent = await w.store.get("m1")
        assert recent is not None
        assert recent.version == 801 - 500
        truth = await w.store.get("m1")
        assert truth is not None
        assert truth.version == 801
        stale = await resume(w, {"m1": old})
        fresh = await resume(w, {"m1": recent})
        await wait_until(lambda: stale.markets["m1"] == truth and fresh.markets["m1"] == truth,
                         what="caught up")
        assert stale.book.log["m1"] == [("snapshot", truth.epoch, 801)]
        assert fresh.book.delta_versions("m1") == list(range(302, 802))
        assert not fresh.ops("snapshot")
        for c in (stale, fresh):
            c.check_clean()
            await c.close()


async def test_positions_that_cannot_be_vouched_for_get_snapshots(worker: Worker) -> None:
    """Another epoch, a version ahead of the store or version 0 gets a snapshot; the current
    position gets nothing until the next live delta; one request can mix both."""
    store = worker.store
    for mid in ("a", "b", "c", "d"):
        await store.apply(create(mid))
        await store.apply(price(mid, 31_000))
    cur = {mid: await store.get(mid) for mid in ("a", "b", "c", "d")}
    c = await Mirror.open(ws_url(worker))
    for mid, s in cur.items():
        assert s is not None
        c.book.markets[mid] = s
    positions = {"a": {"epoch": "another-epoch", "version": 2},
                 "b": {"epoch": cur["b"].epoch, "version": 7},  # type: ignore[union-attr]
                 "c": {"epoch": cur["c"].epoch, "version": 0},  # type: ignore[union-attr]
                 "d": position(cur["d"])}  # type: ignore[arg-type]
    reply = await c.request({"op": "subscribe", "markets": ["a", "b", "c", "d"],
                             "from": positions})
    assert sorted(reply["markets"]) == ["a", "b", "c", "d"]
    await wait_until(lambda: len(c.ops("snapshot")) == 3, what="three snapshots")
    assert {s["market"]["id"] for s in c.ops("snapshot")} == {"a", "b", "c"}
    await store.apply(price("d", 45_000))
    await wait_until(lambda: c.markets["d"].version == 3, what="live delta on d")
    assert c.book.log["d"] == [("delta", 2, 3)]
    c.check_clean()
    await c.close()


async def test_resume_after_recreation_gets_the_new_epoch(worker: Worker) -> None:
    """A position in an epoch the store lost (deleted and re-created) gets a snapshot of the
    new epoch."""
    await worker.store.apply(create("m1"))
    held = await worker.store.get("m1")
    assert held is not None
    await worker.store.delete("m1")
    await worker.store.apply(create("m1"))
    c = await resume(worker, {"m1": held})
    await wait_until(lambda: c.markets["m1"].epoch != held.epoch, what="new epoch")
    assert c.markets["m1"] == await worker.store.get("m1")
    c.check_clean()
    await c.close()
