"""The delta the apply script publishes carries wire bodies that decode to exactly what the
Python encoders make of the stored delta, on a single server and on a cluster."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oddsfeed.core import wire
from oddsfeed.core.book import Changed, Delta
from oddsfeed.core.errors import InvalidInput
from oddsfeed.core.model import FeedRank, MarketUpdate
from oddsfeed.core.prices import MAX_PRICE, MIN_PRICE
from oddsfeed.store import Store, decode_payload
from oddsfeed.store.codec import history_key, meta_key, state_key
from oddsfeed.store.locks import set_locks
from oddsfeed.store.published import LiveDelta, live_delta

MID = "m.published"
SEL_IDS = ["home", "away", "x.1", "o:2-5", "U_9"]
# any text a name may hold: every code point but lone surrogates (which never encode)
names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
ticks = (st.sampled_from([MIN_PRICE, 15_000, 20_000, 25_000, 100_000, MAX_PRICE])
         | st.integers(MIN_PRICE, 300_000) | st.integers(MIN_PRICE, MAX_PRICE))
points = st.none() | st.integers(-1_000_000, 1_000_000).map(lambda c: c / 100)
FEED = FeedRank("feed:published", 0, 10_000_000)


@st.composite
def patches(draw: Any) -> dict[str, Any]:
    """A selection patch: removal, or any of name, price, status, point (a new selection
    gets a name and a price)."""
    if draw(st.integers(0, 6)) == 0:
        return {"status": "removed"}
    patch: dict[str, Any] = {"name": draw(names), "price": draw(ticks)}
    for key in draw(st.lists(st.sampled_from(["name", "price"]), unique=True, max_size=2)):
        del patch[key]
    if draw(st.booleans()):
        patch["status"] = draw(st.sampled_from(["active", "suspended"]))
    if draw(st.booleans()):
        patch["point"] = draw(points)
    return patch


@st.composite
def steps(draw: Any) -> list[tuple[str, Any]]:
    """Updates (market fields and selection patches, some from a feed), and desk locks."""
    out: list[tuple[str, Any]] = []
    for i in range(draw(st.integers(1, 6))):
        if draw(st.integers(0, 5)) == 0:
            sels = draw(st.none() | st.lists(st.sampled_from(SEL_IDS), min_size=1, max_size=2))
            out.append(("lock", (draw(st.booleans()), sels)))
            continue
        fields: dict[str, Any] = {}
        for key, strat in (("name", names), ("kind", names | st.just("")),
                           ("status", st.sampled_from(["open", "suspended", "closed"])),
                           ("in_play", st.booleans()),
                           ("bet_delay_ms", st.integers(0, 60_000))):
            if draw(st.booleans()):
                fields[key] = draw(strat)
        sels = draw(st.dictionaries(st.sampled_from(SEL_IDS), patches(), max_size=4))
        feed = FEED if draw(st.booleans()) else None
        out.append(("update", MarketUpdate(market=MID, fields=fields, selections=sels,
                                           ts=draw(st.integers(0, 2**50)), feed=feed,
                                           source="s" if feed else "", seq=i if feed else None)))
    return out


def typed(x: Any) -> Any:
    """``x`` with the type of every value beside it, so that 2 and 2.0 differ."""
    if isinstance(x, dict):
        return {k: typed(v) for k, v in x.items()}
    if isinstance(x, list):
        return [typed(v) for v in x]
    return (type(x).__name__, x)


def check_published(raw: bytes, stored: Delta) -> None:
    """``raw`` (published) decodes to what the Python encoders make of ``stored``."""
    expected = wire.delta(stored)
    got = live_delta(MID, raw)
    out = got.out
    assert (got.epoch, got.version, got.base, out.urgent) == (
        stored.epoch, stored.version, stored.base, expected.urgent)
    assert typed(json.loads(out.payload(wire.JSON))) == typed(
        json.loads(expected.payload(wire.JSON)))
    assert typed(msgpack.unpackb(out.payload(wire.MSGPACK))) == typed(
        msgpack.unpackb(expected.payload(wire.MSGPACK)))
    assert decode_payload(raw)[0] == stored
    assert isinstance(got, LiveDelta)
    assert (got.ts, got.fields, got.sel, got.ext) == (stored.ts, stored.fields, stored.sel,
                                                      stored.ext)


@pytest.fixture(params=["single", "cluster"])
def target(request: pytest.FixtureRequest,
           valkey_url: str) -> Iterator[tuple[asyncio.AbstractEventLoop, Store, list[bytes]]]:
    """A private loop, a Store on the session server or cluster, and what its bus received
    on the market's channel, kept for all of hypothesis' examples."""
    cluster = request.param == "cluster"
    url = request.getfixturevalue("valkey_cluster").url if cluster else valkey_url
    loop = asyncio.new_event_loop()
    store = loop.run_until_complete(Store.connect(url, cluster=cluster))
    got: list[bytes] = []
    bus = store.bus(lambda kind, ident, data: got.append(data))
    loop.run_until_complete(bus.start())
    loop.run_until_complete(bus.subscribe_market(MID))
    try:
        yield loop, store, got
    finally:
        loop.run_until_complete(bus.stop())
        loop.run_until_complete(store.close())
        loop.close()


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=names, prices=st.lists(ticks, min_size=2, max_size=2),
       point=points, plan=steps())
def test_published_bodies_are_the_python_encodings(
        target: tuple[asyncio.AbstractEventLoop, Store, list[bytes]], name: str,
        prices: list[int], point: float | None, plan: list[tuple[str, Any]]) -> None:
    """For random markets, updates and locks every published delta's JSON and msgpack
    bodies decode to the same dict, values and types as the Python encoders' output for
    the stored delta, and its header to the delta's epoch, version, base and urgency."""
    loop, store, got = target

    async def published(n: int) -> bytes:
        deadline = loop.time() + 5
        while len(got) < n and loop.time() < deadline:
            await asyncio.sleep(0.002)
        assert len(got) >= n, "the delta was not published"
        return got[n - 1]

    async def check() -> None:
        await store.client.delete(state_key(MID), meta_key(MID), history_key(MID))
        got.clear()
        create = MarketUpdate(
            market=MID, create=True, fields={"event": "e1", "sport": "soccer", "name": name},
            selections={"home": {"name": name, "price": prices[0], "point": point},
                        "away": {"name": "Away", "price": prices[1]}})
        await store.apply(create)
        n = 1
        await published(n)
        changed: list[Delta] = []
        for kind, step in plan:
            if kind == "lock":
                on, sels = step
                outcome = await set_locks(store, MID, on=on, selections=sels,
                                          source="desk:t", ts=1)
            else:
                outcome = await store.apply(step)
            if isinstance(outcome, Changed):
                changed.append(outcome.delta)
                n += 1
                check_published(await published(n), outcome.delta)
        market = await store.get(MID)
        assert market is not None
        history = await store.history(MID, market.epoch, 1)
        assert history is not None
        assert history[1] == changed  # the history keeps the stored delta

    loop.run_until_complete(check())


@pytest.mark.parametrize("data", [
    b"\xc1",  # shorter than the header
    b"\xc1" + bytes(27) + b"\x00\x00\x00\x09" + b"{}",  # the JSON body past the end
    b"\xc1" + bytes(25) + b"\x00\x01" + bytes(4) + b"\xff" + b"\x80",  # epoch not UTF-8
    b"\xc1" + bytes(27) + b"\x00\x00\x00\x01" + b"{" + b"\x01",  # msgpack body not a map
    b"\xc1" + bytes(40),  # msgpack body with bytes after its value
])
def test_not_a_published_delta_is_refused(data: bytes) -> None:
    """A payload that is not a whole published delta (short, lengths past its end, an
    epoch that is not UTF-8, a msgpack body that is not a map) is refused as InvalidInput."""
    with pytest.raises(InvalidInput):
        decode_payload(data)
