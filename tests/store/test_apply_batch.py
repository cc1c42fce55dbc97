"""The apply script called with a batch of items (one call for the applies of a loop turn on a
single server) answers, writes, records and publishes exactly what the same items called one
at a time do, applies them in order, and turns one item's Lua error into that item's error
without stopping the items after it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
from redis.asyncio import Redis

from oddsfeed.core.errors import StoreError
from oddsfeed.core.model import FeedRank, MarketUpdate
from oddsfeed.store import Store
from oddsfeed.store.autopipe import BATCH_ITEMS, SPLIT_ITEMS
from oddsfeed.store.codec import history_key, market_channel, meta_key, state_key

MIDS = [f"bm{i}" for i in range(5)]
NOW_MS = 1_700_000_000_000
FEED = FeedRank("feed:batch", 1, 60_000)


def _create(mid: str) -> MarketUpdate:
    return MarketUpdate(market=mid, create=True,
                        fields={"event": "e-batch", "sport": "soccer", "name": mid},
                        selections={"h": {"name": "H", "price": 20000},
                                    "a": {"name": "A", "price": 30000, "point": 1.5}})


def _updates() -> list[MarketUpdate]:
    """Changes of every kind the script decides, interleaved across the markets."""
    out: list[MarketUpdate] = []
    for i in range(8):
        for k, mid in enumerate(MIDS):
            step = (i + k) % 8
            if step == 0:
                out.append(MarketUpdate(market=mid, selections={"h": {"price": 21000 + i}}))
            elif step == 1:
                out.append(MarketUpdate(market=mid, fields={"status": "suspended"}))
            elif step == 2:
                out.append(MarketUpdate(market=mid, fields={"status": "open"},
                                        selections={"d": {"name": "D", "price": 33000}}))
            elif step == 3:
                out.append(MarketUpdate(market=mid, selections={"d": {"status": "removed"},
                                                                "a": {"point": None}}))
            elif step == 4:  # a noop
                out.append(MarketUpdate(market=mid, fields={"name": mid}))
            elif step == 5:  # refused: an event never changes
                out.append(MarketUpdate(market=mid, fields={"event": "other"}))
            elif step == 6:  # from a feed with a sequence, then a repeat of it (out of order)
                out.append(MarketUpdate(market=mid, selections={"h": {"price": 40000 + i}},
                                        source="feed:batch", seq=10 + i, feed=FEED))
                out.append(MarketUpdate(market=mid, selections={"h": {"price": 41000}},
                                        source="feed:batch", seq=10 + i, feed=FEED))
            else:
                out.append(MarketUpdate(market=mid, fields={"in_play": True},
                                        selections={"a": {"price": 31000 + i}}))
    return out


def _shape(outcome: Any) -> Any:
    """An outcome without its epoch (a store's own)."""
    market = getattr(outcome, "market", None)
    if market is None or isinstance(market, str):
        return repr(outcome)
    return (type(outcome).__name__, market.version, market.status,
            sorted((sid, s.price, s.status, s.point) for sid, s in market.selections.items()))


async def _run(url: str, *, batched: bool) -> tuple[list[Any], list[bytes], list[Any]]:
    """Create the markets, apply the updates in one apply_many; the outcomes, the published
    payloads (epoch and apply time blanked) and the history entries (the same)."""
    store = await Store.connect(url, auto_pipeline=batched)
    sub = Redis.from_url(url)
    pubsub = sub.pubsub()
    channels = [market_channel(m) for m in MIDS]
    got: list[bytes] = []
    try:
        await store.client.delete(*(k for m in MIDS
                                    for k in (state_key(m), meta_key(m), history_key(m))))
        await (pubsub.ssubscribe(*channels) if store.sharded else pubsub.subscribe(*channels))
        await store.apply_many([_create(m) for m in MIDS], now_ms=NOW_MS)
        outcomes = await store.apply_many(_updates(), now_ms=NOW_MS)
        changed = sum(type(o).__name__ == "Changed" for o in outcomes)
        epochs = {m: (await store.get(m)).epoch for m in MIDS}  # type: ignore[union-attr]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while len(got) < len(MIDS) + changed and loop.time() < deadline:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if msg is not None:
                got.append(msg["data"])
        history = []
        for m in MIDS:
            for _, entry in await store.client.xrange(history_key(m)):
                d = msgpack.unpackb(entry[b"d"])
                d.pop("t", None)
                if d.get("op") == "created":
                    d["market"]["epoch"] = ""
                else:
                    d["e"] = ""
                history.append((m, d, entry[b"w"]))
    finally:
        await pubsub.aclose()
        await sub.aclose()
        await store.close()
    published = []
    for data in got:
        for e in epochs.values():
            data = data.replace(e.encode(), b"E" * len(e))
        if data[:1] == b"\xc1":
            data = data[:18] + bytes(8) + data[26:]  # the apply time in µs
        else:  # a creation, as stored: its apply time is a msgpack member
            created = msgpack.unpackb(data)
            created.pop("t")
            data = msgpack.packb(created)
        published.append(data)
    return [_shape(o) for o in outcomes], published, history


async def test_a_batch_answers_writes_and_publishes_as_one_at_a_time(valkey_url: str) -> None:
    """The same creations and forty-five changes of five markets (changes, noops, a refusal,
    a repeated sequence, feed writes), sent as batches of the apply script and as one call
    each, give the same outcomes, published payloads and history entries."""
    one_by_one = await _run(valkey_url, batched=False)
    batched = await _run(valkey_url, batched=True)
    assert batched[0] == one_by_one[0]
    assert len(batched[1]) == len(MIDS) + sum(s[0] == "Changed" for s in batched[0])
    assert batched[1] == one_by_one[1]
    assert batched[2] == one_by_one[2]


@pytest.fixture
async def single(valkey_url: str) -> AsyncIterator[Store]:
    store = await Store.connect(valkey_url)
    await store.client.delete(*(k for m in [*MIDS, "bm-junk"]
                                for k in (state_key(m), meta_key(m), history_key(m))))
    yield store
    await store.close()


async def _evalsha_calls(store: Store) -> int:
    stats = await store.client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_concurrent_applies_go_as_few_script_calls(single: Store) -> None:
    """Two hundred applies issued in one loop turn reach the server as a handful of script
    calls (at most BATCH_ITEMS items each), and apply in the order issued."""
    await single.apply(_create("bm0"))
    before = await _evalsha_calls(single)
    outs = await asyncio.gather(*(single.apply(MarketUpdate(
        market="bm0", selections={"h": {"price": 10100 + i}})) for i in range(200)))
    calls = await _evalsha_calls(single) - before
    assert [o.market.version for o in outs] == list(range(2, 202))  # type: ignore[union-attr]
    assert calls <= 200 // BATCH_ITEMS + 2


async def test_a_turn_of_applies_is_split_so_batches_overlap(single: Store) -> None:
    """Applies to distinct markets issued in one loop turn go out as batches of
    SPLIT_ITEMS (the next one packed while the server runs the first), each item applied."""
    mids = [f"bs{i}" for i in range(2 * SPLIT_ITEMS)]
    await single.client.delete(*(k for m in mids
                                 for k in (state_key(m), meta_key(m), history_key(m))))
    await single.apply_many([_create(m) for m in mids])
    before = await _evalsha_calls(single)
    outs = await asyncio.gather(*(single.apply(MarketUpdate(
        market=m, selections={"h": {"price": 10100}})) for m in mids))
    calls = await _evalsha_calls(single) - before
    assert [o.market.version for o in outs] == [2] * len(mids)  # type: ignore[union-attr]
    assert calls == 2


async def test_a_lua_error_fails_its_item_only(single: Store) -> None:
    """An item whose stored state is not a market (the script raises a Lua error, not a
    command error) fails its caller with StoreError; the items before and after it in the
    same batch, the same market's included, apply in order."""
    await single.apply_many([_create(m) for m in MIDS[:2]])
    await single.client.set(state_key("bm-junk"), b"\x01")  # msgpack for the number 1
    results = await asyncio.gather(
        single.apply(MarketUpdate(market="bm0", selections={"h": {"price": 22000}})),
        single.apply(MarketUpdate(market="bm-junk", selections={"h": {"price": 22000}})),
        single.apply(MarketUpdate(market="bm0", selections={"h": {"price": 23000}})),
        single.apply(MarketUpdate(market="bm1", selections={"h": {"price": 24000}})),
        return_exceptions=True)
    first, junk, second, other = results
    assert isinstance(junk, StoreError)
    assert state_key("bm-junk") in str(junk)
    assert (first.market.version, second.market.version) == (2, 3)  # type: ignore[union-attr]
    assert other.market.version == 2  # type: ignore[union-attr]
    assert (await single.get("bm0")).selections["h"].price == 23000  # type: ignore[union-attr]


async def test_batches_in_flight_together_keep_each_markets_order(store: Store) -> None:
    """Applies to twenty markets issued over many loop turns, without waiting (so several
    batches are out at once, on a single server and a cluster), apply in the order issued
    within each market: versions rise in issue order and the last price issued wins."""
    mids = [f"bo{i}" for i in range(20)]
    await store.apply_many([_create(m) for m in mids])
    issued: dict[str, list[asyncio.Future[Any]]] = {m: [] for m in mids}
    for wave in range(30):
        for k, m in enumerate(mids):
            if (wave + k) % 3:  # each wave touches two markets in three
                issued[m].append(asyncio.ensure_future(store.apply(MarketUpdate(
                    market=m, selections={"h": {"price": 10100 + wave}}))))
        await asyncio.sleep(0)  # the next wave in a later loop turn
    for m in mids:
        outs = await asyncio.gather(*issued[m])
        versions = [o.market.version for o in outs]
        assert versions == list(range(2, 2 + len(outs))), m
        last = await store.get(m)
        assert last is not None
        assert last.selections["h"].price == outs[-1].market.selections["h"].price
