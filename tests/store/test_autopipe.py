"""Auto-pipelined market reads are invisible to callers: same answers as one call at a time,
read-your-writes across connections, one failing command fails only its caller, an outage
fails every waiter fast."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

from oddsfeed.core.errors import StoreError
from oddsfeed.core.model import MarketUpdate
from oddsfeed.embedded import EmbeddedValkey
from oddsfeed.store import Store
from oddsfeed.store.codec import state_key

T = TypeVar("T")


def _market(mid: str, price: int = 25000, status: str = "open") -> MarketUpdate:
    return MarketUpdate(market=mid, fields={"event": "e", "sport": "s", "name": mid,
                                            "status": status},
                        selections={"h": {"name": "H", "price": price}}, create=True)


async def _reconnect(store: Store, *, auto_pipeline: bool) -> Store:
    return await Store.connect(store.url, cluster=store.cluster, auto_pipeline=auto_pipeline)


async def _within(aw: Awaitable[T]) -> T:
    # A caller left waiting by a batch fails the test here instead of hanging it.
    return await asyncio.wait_for(aw, timeout=10)


async def _read(store: Store, op: str, ids: list[str]) -> Any:
    if op == "get":
        return await store.get(ids[0])
    if op == "many":
        return await store.get_many(ids)
    return await store.get_for_validation(ids)


async def test_concurrent_reads_match_one_at_a_time(store: Store) -> None:
    """Hundreds of concurrent get/get_many/get_for_validation calls give the answers of the
    same calls made one at a time without batching."""
    ids = [f"m{i}" for i in range(40)]
    for i, mid in enumerate(ids[:30]):  # ten ids stay absent
        await store.apply(_market(mid, 20000 + i, "suspended" if i % 7 == 0 else "open"))
    rng = random.Random(21)
    calls = [(rng.choice(["get", "many", "validation"]),
              [rng.choice(ids) for _ in range(rng.randint(1, 6))]) for _ in range(300)]
    batched = await _reconnect(store, auto_pipeline=True)
    plain = await _reconnect(store, auto_pipeline=False)
    try:
        together = await _within(asyncio.gather(*(_read(batched, op, ids) for op, ids in calls)))
        alone = [await _read(plain, op, ids) for op, ids in calls]
    finally:
        await batched.close()
        await plain.close()
    assert together == alone


async def test_concurrent_reads_share_round_trips(valkey_url: str) -> None:
    """Two hundred concurrent reads from a fresh store open a handful of connections, not
    one per read (they went out as a pipeline)."""
    store = await Store.connect(valkey_url, auto_pipeline=True)
    try:
        await store.client.flushall()
        await store.apply(_market("m1"))
        before = int((await store.client.info("stats"))["total_connections_received"])
        results = await _within(asyncio.gather(*(store.get_for_validation(["m1"])
                                                 for _ in range(200))))
        after = int((await store.client.info("stats"))["total_connections_received"])
    finally:
        await store.close()
    assert all(r["m1"] is not None and r["m1"][0].version == 1 for r in results)
    assert after - before <= 2


async def test_a_write_acknowledged_before_a_read_is_seen(store: Store) -> None:
    """A price change acknowledged on one connection is seen by every validation read sent
    after it on another store, while other reads and writes interleave in the same batches."""
    reader = await _reconnect(store, auto_pipeline=True)
    try:
        for i in range(8):
            await store.apply(_market(f"r{i}"))

        async def write_then_read(k: int) -> None:
            mid = f"r{k % 8}"
            out = await store.apply(MarketUpdate(market=mid, fields={},
                                                 selections={"h": {"price": 30000 + k}}))
            acked = out.market.version  # type: ignore[union-attr]
            seen = (await reader.get_for_validation([mid, f"r{(k + 1) % 8}"]))[mid]
            assert seen is not None
            assert seen[0].version >= acked

        await _within(asyncio.gather(*(write_then_read(k) for k in range(200))))
    finally:
        await reader.close()


async def test_a_failing_command_fails_only_its_caller(store: Store) -> None:
    """A read of a key of the wrong type fails only its own caller with a StoreError naming
    the key (on a single server too, where the batch is one MGET); the reads batched with
    it get their markets, and a missing market reads as absent."""
    batched = await _reconnect(store, auto_pipeline=True)
    try:
        await batched.apply(_market("ok"))
        await batched.client.hset(state_key("bad"), "x", "1")  # type: ignore[misc]
        results = await _within(asyncio.gather(
            batched.get("ok"), batched.get_many(["ok", "bad"]),
            batched.get_for_validation(["ok"]), batched.get("missing"),
            return_exceptions=True))
    finally:
        await batched.close()
    good, bad, validation, missing = results
    assert getattr(good, "id", None) == "ok"
    assert isinstance(bad, StoreError)
    assert state_key("bad") in str(bad)
    assert "WRONGTYPE" in str(bad)
    assert isinstance(validation, dict)
    assert validation["ok"] is not None
    assert missing is None


async def test_an_outage_fails_every_waiting_reader_fast() -> None:
    """Reads sent to a hung store fail with StoreError within a second of the store being
    killed, and later reads fail at once."""
    with EmbeddedValkey() as server:
        store = await Store.connect(server.url, auto_pipeline=True, socket_timeout=30)
        try:
            await store.apply(_market("m1"))
            assert (await store.get("m1")) is not None
            os.kill(server.pid, signal.SIGSTOP)  # the batch below is sent, never answered
            waiting = [asyncio.ensure_future(store.get_for_validation(["m1"]))
                       for _ in range(50)]
            done, _ = await asyncio.wait(waiting, timeout=0.3)
            assert not done
            os.kill(server.pid, signal.SIGKILL)
            t0 = time.monotonic()
            results = await asyncio.wait_for(
                asyncio.gather(*waiting, return_exceptions=True), timeout=5)
            assert time.monotonic() - t0 < 1.0
            assert all(isinstance(r, StoreError) and "read failed" in str(r) for r in results)
            t0 = time.monotonic()
            with pytest.raises(StoreError, match="read failed"):
                await asyncio.wait_for(store.get("m1"), timeout=5)
            assert time.monotonic() - t0 < 1.0
        finally:
            await store.close()


async def test_reads_gather_while_a_batch_is_out() -> None:
    """With one read batch in flight, reads issued in later loop turns wait for it and go
    together as the next batch: two MGETs for eleven reads over eleven turns."""
    with EmbeddedValkey() as server:
        store = await Store.connect(server.url, socket_timeout=30, read_batches_in_flight=1)
        try:
            await store.apply(_market("m1"))

            async def mgets() -> int:
                stats = await store.client.info("commandstats")
                return int(stats.get("cmdstat_mget", {}).get("calls", 0))

            before = await mgets()
            os.kill(server.pid, signal.SIGSTOP)  # the first batch is sent, held unanswered
            try:
                first = asyncio.ensure_future(store.get("m1"))
                await asyncio.sleep(0.05)
                later = []
                for _ in range(10):  # ten loop turns, one read each
                    later.append(asyncio.ensure_future(store.get_for_validation(["m1"])))
                    await asyncio.sleep(0)
                done, _ = await asyncio.wait([first, *later], timeout=0.1)
                assert not done
            finally:
                os.kill(server.pid, signal.SIGCONT)
            got = await _within(first)
            assert got is not None
            answers = await _within(asyncio.gather(*later))
            assert all(a["m1"] is not None for a in answers)
            assert await mgets() == before + 2
        finally:
            await store.close()
