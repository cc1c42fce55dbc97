"""The store's Lua apply path is exactly the core book, on a single server and a cluster."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from oddsfeed.core.book import Changed, Created, NoOp, Outcome, Rejected, apply_update
from oddsfeed.core.model import Market, MarketUpdate
from oddsfeed.store import Applied, Store
from oddsfeed.store.codec import history_key, meta_key, state_key

from ..core.strategies import markets, updates

MID = "m1"


def creation(market: Market, replace: bool, with_ts: bool) -> MarketUpdate:
    """The update that creates ``market`` (PUT or create-flagged patch)."""
    return MarketUpdate(
        market=MID, create=not replace, replace=replace,
        ts=market.ts if with_ts else None,
        fields={k: getattr(market, k) for k in (
            "event", "sport", "name", "kind", "status", "in_play", "bet_delay_ms")},
        selections={k: s.to_store() for k, s in market.selections.items()})


@st.composite
def steps(draw: Any) -> list[MarketUpdate]:
    """Random updates plus the cases random patches rarely hit: exact repeats (no-ops),
    settling, event or sport changes, updates without ts, create flags on an existing market."""
    out: list[MarketUpdate] = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(
            ["update"] * 6 + ["repeat", "settle", "conflict", "no_ts", "create_flag"]))
        if kind == "repeat" and out:
            out.append(out[-1])
        elif kind == "settle":
            out.append(MarketUpdate(market=MID, fields={"status": "settled"}))
        elif kind == "conflict":
            key, value = draw(st.sampled_from([("event", "e2"), ("sport", "tennis"),
                                               ("event", "e1")]))
            out.append(MarketUpdate(market=MID, fields={key: value, "name": "Renamed"}))
        else:
            u = draw(updates())
            if kind == "no_ts":
                u = dataclasses.replace(u, ts=None)
            elif kind == "create_flag" and not u.replace:
                u = dataclasses.replace(u, create=True)
            out.append(u)
    return out


def assert_same(got: Any, expected: Outcome) -> None:
    """The store's outcome equals the book's, the store's own epoch substituted."""
    assert type(got) is type(expected), (got, expected)
    if isinstance(expected, Created):
        assert got.market == dataclasses.replace(expected.market, epoch=got.market.epoch)
    elif isinstance(expected, Changed):
        assert got.market == expected.market
        assert got.delta == expected.delta
    elif isinstance(expected, NoOp):
        assert got.market == expected.market
    elif isinstance(expected, Rejected):
        assert (got.reason, got.path) == (expected.reason, expected.path)


def assert_same_short(got: Any, expected: Outcome) -> None:
    """The store's short outcome tells what the book's full one does: a change's or
    noop's kind, the market's epoch, version and status, and a change's delta."""
    if not isinstance(expected, Changed | NoOp):
        assert_same(got, expected)
        return
    assert isinstance(got, Applied), (got, expected)
    market = expected.market
    assert got.kind == ("changed" if isinstance(expected, Changed) else "noop")
    assert (got.market.id, got.market.epoch, got.market.version, got.market.status) == (
        market.id, market.epoch, market.version, market.status)
    assert got.delta() == (expected.delta if isinstance(expected, Changed) else None)


@pytest.fixture(params=["single", "cluster"])
def target(request: pytest.FixtureRequest,
           valkey_url: str) -> Iterator[tuple[asyncio.AbstractEventLoop, Store]]:
    """A private event loop and a Store on the session server or the session cluster, kept
    for all of hypothesis' examples."""
    cluster = request.param == "cluster"
    url = request.getfixturevalue("valkey_cluster").url if cluster else valkey_url
    loop = asyncio.new_event_loop()
    store = loop.run_until_complete(Store.connect(url, cluster=cluster))
    try:
        yield loop, store
    finally:
        loop.run_until_complete(store.close())
        loop.close()


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(initial=markets(), replace=st.booleans(), with_ts=st.booleans(),
       attempt=st.none() | updates(), attempt_create=st.booleans(), ups=steps(),
       short=st.booleans())
def test_lua_apply_is_the_core_book(target: tuple[asyncio.AbstractEventLoop, Store], initial: Market, replace: bool,
                                    with_ts: bool, attempt: MarketUpdate | None,
                                    attempt_create: bool,
                                    ups: list[MarketUpdate], short: bool) -> None:
    """For random markets and update sequences the store's outcome kind, Market and Delta
    equal oddsfeed.core.book.apply_update's on the same input (or, with short replies, the
    market's epoch, version and status)."""
    loop, store = target

    async def check() -> None:
        await store.client.delete(state_key(MID), meta_key(MID), history_key(MID))
        state: Market | None = None
        first = [dataclasses.replace(attempt, create=attempt_create)] if attempt else []
        for i, u in enumerate([*first, creation(initial, replace, with_ts), *ups]):
            now = 5_000 + i
            expected = apply_update(state, u, epoch="book-epoch", now_ms=now)
            got = await store.apply(u, now_ms=now, short=short)
            (assert_same_short if short else assert_same)(got, expected)
            event(type(expected).__name__ + (f" {expected.reason}"
                                             if isinstance(expected, Rejected) else ""))
            if isinstance(got, Created | Changed):
                state = got.market
            elif isinstance(got, Applied) and isinstance(expected, Changed):
                state = expected.market  # computed from the store's state, epoch included
        assert await store.get(MID) == state

    loop.run_until_complete(check())
