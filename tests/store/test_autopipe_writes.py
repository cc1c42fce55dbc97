"""Auto-pipelined applies are invisible to callers: concurrent writes, reads and validations
give the outcomes of the same calls one at a time, calls issued in order apply in order, a
failing script call fails only its caller, a lost script is loaded again, one failed
cluster node fails only the callers with a command on it, and an outage fails every
waiting writer fast."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

from oddsfeed.core.book import Changed
from oddsfeed.core.errors import StoreError
from oddsfeed.core.model import MarketUpdate
from oddsfeed.embedded import EmbeddedCluster, EmbeddedValkey
from oddsfeed.store import Precondition, Store
from oddsfeed.store.codec import state_key

T = TypeVar("T")


def _market(mid: str, price: int = 25000) -> MarketUpdate:
    return MarketUpdate(market=mid, fields={"event": f"e-{mid}", "sport": "s", "name": mid},
                        selections={"h": {"name": "H", "price": price}}, create=True)


def _price(mid: str, price: int) -> MarketUpdate:
    return MarketUpdate(market=mid, fields={}, selections={"h": {"price": price}})


async def _within(aw: Awaitable[T]) -> T:
    # A caller left waiting by a batch fails the test here instead of hanging it.
    return await asyncio.wait_for(aw, timeout=20)


def _shape(outcome: Any) -> Any:
    """An outcome without what differs between two stores (epochs, timestamps)."""
    if isinstance(outcome, Precondition):
        return ("precondition", outcome.current.version if outcome.current else None)
    market = getattr(outcome, "market", None)
    if market is None:
        return (type(outcome).__name__,)
    return (type(outcome).__name__, market.version, market.selections["h"].price)


def _record(rec: Any) -> Any:
    return None if rec is None else (rec[0].version, rec[0].selections["h"].price, rec[1])


async def _script(store: Store, rng: random.Random, mid: str, static: list[str]
                  ) -> list[Any]:
    """One client's sequence on its own market (each step awaited), with reads and
    validations of the static markets between the writes; what it saw, store-independent."""
    seen: list[Any] = [_shape(await store.apply(_market(mid, 20000)))]
    version = 1
    for step in range(8):
        kind = rng.choice(["patch", "if_match", "stale", "many", "read", "validate"])
        if kind == "patch":
            out = await store.apply(_price(mid, 21000 + step))
        elif kind in ("if_match", "stale"):
            expect = version if kind == "if_match" else version - 1
            epoch = (await store.get(mid)).epoch  # type: ignore[union-attr]
            out = await store.apply(_price(mid, 22000 + step), expect=(epoch, expect))
        elif kind == "many":
            outs = await store.apply_many([_price(mid, 23000 + step),
                                           _price(mid, 23500 + step)])
            seen.append([_shape(o) for o in outs])
            version = outs[-1].market.version  # type: ignore[union-attr]
            continue
        elif kind == "read":
            got = await store.get_many([mid, *rng.sample(static, 2)])
            seen.append(sorted((k == mid, k if k != mid else "", v.version if v else None)
                               for k, v in got.items()))
            continue
        else:
            recs = await store.get_for_validation([mid, rng.choice(static)])
            seen.append(sorted((k == mid, k if k != mid else "", _record(v))
                               for k, v in recs.items()))
            continue
        seen.append(_shape(out))
        if isinstance(out, Changed):
            version = out.market.version
    return seen


async def test_concurrent_writes_reads_and_validations_match_one_at_a_time(store: Store
                                                                            ) -> None:
    """Sixty clients each writing its own market (plain, If-Match, stale If-Match and
    apply_many) and reading shared ones, all at once, see what the same sequences see run
    one after the other without batching."""
    static = [f"s{i}" for i in range(12)]
    await store.apply_many([_market(mid, 30000 + i) for i, mid in enumerate(static)])
    batched = await Store.connect(store.url, cluster=store.cluster, auto_pipeline=True)
    plain = await Store.connect(store.url, cluster=store.cluster, auto_pipeline=False)
    try:
        together = await _within(asyncio.gather(
            *(_script(batched, random.Random(k), f"a{k}", static) for k in range(60))))
        alone = [await _script(plain, random.Random(k), f"b{k}", static) for k in range(60)]
    finally:
        await batched.close()
        await plain.close()
    assert together == alone


async def test_applies_issued_in_order_apply_in_order(store: Store) -> None:
    """Two hundred price changes to one market issued one per task, without waiting for
    each other, are applied in the order issued: versions 2..201, the last price wins."""
    await store.apply(_market("m1"))
    tasks = [asyncio.ensure_future(store.apply(_price("m1", 10100 + i))) for i in range(200)]
    outs = await _within(asyncio.gather(*tasks))
    assert [o.market.version for o in outs] == list(range(2, 202))  # type: ignore[union-attr]
    final = await store.get("m1")
    assert final is not None
    assert final.selections["h"].price == 10100 + 199


async def test_a_failing_apply_fails_only_its_caller(store: Store) -> None:
    """An apply whose script errors (its state key holds a hash) raises StoreError naming
    the key for its caller alone; the applies and reads batched with it succeed."""
    await store.apply_many([_market(f"m{i}") for i in range(6)])
    await store.client.hset(state_key("bad"), "x", "1")  # type: ignore[misc]
    results = await _within(asyncio.gather(
        *(store.apply(_price(f"m{i}", 26000 + i)) for i in range(6)),
        store.apply(_price("bad", 26000)), store.apply_many([_price("m0", 27000)]),
        store.get_for_validation(["m1", "m2"]), return_exceptions=True))
    *good, bad, many, validation = results
    assert [o.market.version for o in good] == [2] * 6  # type: ignore[union-attr]
    assert isinstance(bad, StoreError)
    assert state_key("bad") in str(bad)
    assert many[0].market.version == 3  # type: ignore[index]
    assert isinstance(validation, dict)
    assert validation["m1"] is not None


async def test_a_lost_script_is_loaded_again(store: Store) -> None:
    """After SCRIPT FLUSH every concurrent apply still succeeds (NOSCRIPT: loaded, sent
    again in order)."""
    await store.apply(_market("m1"))
    await store.client.script_flush()  # on every primary in cluster mode
    outs = await _within(asyncio.gather(*(store.apply(_price("m1", 11000 + i))
                                          for i in range(30))))
    assert [o.market.version for o in outs] == list(range(2, 32))  # type: ignore[union-attr]


async def test_a_failed_cluster_node_fails_only_its_callers() -> None:
    """With one of three primaries killed, the reads and applies of markets on the other
    two succeed in the same batches; those on the dead node fail with StoreError."""
    with EmbeddedCluster(n_primaries=3) as cluster:
        store = await Store.connect(cluster.url, cluster=True, socket_timeout=2)
        try:
            ids = [f"m{i}" for i in range(30)]
            await store.apply_many([_market(mid) for mid in ids])
            port_of = {mid: store.client.get_node_from_key(state_key(mid)).port  # type: ignore[union-attr]
                       for mid in ids}
            victim = next(n for n in cluster.nodes if n.port == port_of["m0"])
            os.kill(victim.pid, signal.SIGKILL)
            t0 = time.monotonic()
            results = await _within(asyncio.gather(
                *(store.get(mid) for mid in ids), *(store.apply(_price(mid, 26000))
                                                   for mid in ids),
                return_exceptions=True))
            elapsed = time.monotonic() - t0
        finally:
            await store.close()
    reads, writes = results[:30], results[30:]
    for mid, read, write in zip(ids, reads, writes):
        if port_of[mid] == victim.port:
            assert isinstance(read, StoreError)
            assert isinstance(write, StoreError)
        else:
            assert getattr(read, "id", None) == mid
            assert isinstance(write, Changed), write
    assert elapsed < 10


async def test_an_outage_fails_every_waiting_writer_fast() -> None:
    """Applies sent to a hung store fail with StoreError within a second of the store being
    killed, and later applies fail at once."""
    with EmbeddedValkey() as server:
        store = await Store.connect(server.url, auto_pipeline=True, socket_timeout=30)
        try:
            await store.apply(_market("m1"))
            os.kill(server.pid, signal.SIGSTOP)  # the batch below is sent, never answered
            waiting = [asyncio.ensure_future(store.apply(_price("m1", 26000 + i)))
                       for i in range(50)]
            done, _ = await asyncio.wait(waiting, timeout=0.3)
            assert not done
            more = [asyncio.ensure_future(store.apply(_price("m1", 27000 + i)))
                    for i in range(20)]  # gathering behind the batch in flight
            os.kill(server.pid, signal.SIGKILL)
            t0 = time.monotonic()
            results = await asyncio.wait_for(
                asyncio.gather(*waiting, *more, return_exceptions=True), timeout=5)
            assert time.monotonic() - t0 < 1.0
            assert all(isinstance(r, StoreError) and "failed" in str(r) for r in results)
            t0 = time.monotonic()
            with pytest.raises(StoreError):
                await asyncio.wait_for(store.apply(_price("m1", 28000)), timeout=5)
            assert time.monotonic() - t0 < 1.0
        finally:
            await store.close()
