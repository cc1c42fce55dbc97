"""The per-connection outbox (oddsfeed.core.session.Outbox) as pure values: conflation past the
high-water mark, urgent messages, and the slow-consumer verdicts (protocol.md section 2)."""

from __future__ import annotations

import itertools
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from oddsfeed.core import wire
from oddsfeed.core.book import Applied, Changed, Delta, apply_delta, apply_update
from oddsfeed.core.model import Market, MarketUpdate, Selection
from oddsfeed.core.session import (
    BUSY_HIGH,
    BUSY_LOW,
    FLUSH_BYTES,
    FULL,
    OK,
    SLOW,
    Outbox,
    adaptive_window,
)

from .builders import random_update
from .mirror import ClientBook, delta_from_wire


def market(mid: str) -> Market:
    return Market(id=mid, event="e1", sport="soccer", name=mid, epoch="ep", version=1, ts=1,
                  selections={"h": Selection(name="H", price=25000),
                              "a": Selection(name="A", price=30000)})


def history(start: Market, updates: list[MarketUpdate]) -> tuple[list[Delta], Market]:
    """The deltas of ``updates`` applied in order by the core book, and the final state."""
    state, deltas = start, []
    for i, up in enumerate(updates):
        out = apply_update(state, up, epoch=state.epoch, now_ms=1000 + i)
        if isinstance(out, Changed):
            deltas.append(out.delta)
            state = out.market
    return deltas, state


def outbox(**kw: Any) -> Outbox:
    args: dict[str, Any] = {"encoding": "json", "high_water_bytes": 1 << 20,
                            "max_bytes": 8 << 20, "max_lag_s": 10.0}
    args.update(kw)
    return Outbox(**args)


def drain(box: Outbox) -> list[dict[str, Any]]:
    """Every queued message, decoded, oldest first."""
    out: list[dict[str, Any]] = []
    while box:
        out += [wire.decode_message(p, box.encoding) for p in box.take()]
    return out


def push_deltas(box: Outbox, deltas: list[Delta], now: float = 0.0) -> list[str]:
    return [box.push(wire.delta(d), now=now, market=d.market, delta=d) for d in deltas]


def test_below_high_water_every_delta_is_its_own_message() -> None:
    """A connection under its high-water mark gets every version as its own delta."""
    rng = random.Random(1)
    deltas, _ = history(market("m1"), [random_update(rng, "m1") for _ in range(30)])
    box = outbox()
    assert set(push_deltas(box, deltas)) == {OK}
    assert box.conflations == 0
    sent = drain(box)
    assert [(m["base"], m["v"]) for m in sent] == [(d.base, d.version) for d in deltas]
    assert box.queued_bytes == 0


def test_past_high_water_deltas_are_conflated_per_market() -> None:
    """Past the high-water mark each market's pending deltas become one delta whose base
    spans the merged versions, and applying it gives the state of applying each one."""
    rng = random.Random(2)
    starts = {m: market(m) for m in ("m1", "m2")}
    runs = {m: history(s, [random_update(rng, m) for _ in range(40)]) for m, s in starts.items()}
    box = outbox(high_water_bytes=2000)
    for pair in itertools.zip_longest(runs["m1"][0], runs["m2"][0]):
        push_deltas(box, [d for d in pair if d is not None])
    assert box.conflations > 0
    book = ClientBook()
    book.markets.update(starts)
    sent = drain(box)
    for msg in sent:
        assert book.apply(msg) is None
    for m, (deltas, final) in runs.items():
        assert book.markets[m] == final
        mine = [x for x in sent if x["m"] == m]
        assert mine[0]["base"] == deltas[0].base
        assert mine[-1]["v"] == deltas[-1].version
        assert any(x["base"] < x["v"] - 1 for x in mine)
    assert not book.resyncs


def test_snapshot_ends_a_run() -> None:
    """A snapshot (or gone) of a market is never merged over: deltas before it and after it
    conflate separately, so the client state stays right."""
    rng = random.Random(3)
    before, mid_state = history(market("m1"), [random_update(rng, "m1") for _ in range(10)])
    after, final = history(mid_state, [random_update(rng, "m1") for _ in range(10)])
    box = outbox(high_water_bytes=1)
    push_deltas(box, before)
    box.push(wire.snapshot(mid_state), now=0.0, market="m1")
    push_deltas(box, after)
    sent = drain(box)
    assert [m["op"] for m in sent] == ["delta", "snapshot", "delta"]
    book = ClientBook()
    book.markets["m1"] = market("m1")
    for msg in sent:
        book.apply(msg)
    assert book.markets["m1"] == final
    assert not book.resyncs


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 60),
       high_water=st.sampled_from([1, 300, 1500, 1 << 20]),
       encoding=st.sampled_from(["json", "msgpack"]), chunk=st.integers(1, 7))
def test_conflation_replays_to_the_same_state(seed: int, n: int, high_water: int,
                                              encoding: str, chunk: int) -> None:
    """Whatever the high-water mark and however the writer takes frames in between, a client
    applying what comes out ends with each market's state after every update, with no gap."""
    rng = random.Random(seed)
    ids = ["m1", "m2", "m3"]
    starts = {m: market(m) for m in ids}
    states = dict(starts)
    box = outbox(encoding=encoding, high_water_bytes=high_water)
    book = ClientBook()
    book.markets.update(starts)
    for i in range(n):
        m = rng.choice(ids)
        deltas, states[m] = history(states[m], [random_update(rng, m)])
        push_deltas(box, deltas)
        if i % chunk == 0:  # the writer gets a turn
            for p in box.take(rng.randint(1, 4)):
                assert book.apply(wire.decode_message(p, encoding)) is None
    for msg in drain(box):
        assert book.apply(msg) is None
    assert book.markets == states
    assert not book.resyncs
    assert not book.anomalies


def test_a_suspension_is_never_conflated_away() -> None:
    """Conflation never merges a suspension with a later reopening: the client still sees
    the market suspended before it sees it open again."""
    start = market("m1")
    updates = [MarketUpdate(market="m1", selections={"h": {"price": 26000}}),
               MarketUpdate(market="m1", fields={"status": "suspended"}),
               MarketUpdate(market="m1", selections={"h": {"price": 40000}}),
               MarketUpdate(market="m1", fields={"status": "open"}),
               MarketUpdate(market="m1", selections={"h": {"price": 41000}})]
    deltas, final = history(start, updates)
    box = outbox(high_water_bytes=1)
    push_deltas(box, deltas)
    assert box.urgent
    state, seen = start, []
    for msg in drain(box):
        result = apply_delta(state, delta_from_wire(msg))
        assert isinstance(result, Applied)
        state = result.market
        seen.append(state.status)
    assert state == final
    assert "suspended" in seen


def test_urgent_message_flags_the_outbox_until_taken() -> None:
    """Pushing a suspension (urgent) sets outbox.urgent; taking the queue clears it."""
    deltas, _ = history(market("m1"), [
        MarketUpdate(market="m1", selections={"h": {"price": 26000}}),
        MarketUpdate(market="m1", fields={"status": "suspended"})])
    box = outbox()
    push_deltas(box, deltas[:1])
    assert not box.urgent
    push_deltas(box, deltas[1:])
    assert box.urgent
    drain(box)
    assert not box.urgent
    box.push(wire.gone("m1"), now=0.0, market="m1")
    assert box.urgent


def test_past_max_bytes_is_slow() -> None:
    """Queued bytes past max_bytes that conflation cannot shrink give the slow verdict."""
    box = outbox(high_water_bytes=500, max_bytes=4000)
    size = len(wire.snapshot(market("m0")).payload("json"))
    verdicts = []
    for i in range(40):
        verdicts.append(box.push(wire.snapshot(market(f"m{i}")), now=0.0, market=f"m{i}"))
        if verdicts[-1] == SLOW:
            break
    assert verdicts[-1] == SLOW
    assert set(verdicts[:-1]) <= {OK, FULL}  # FULL: a frame's worth queued, not slow
    assert 4000 < box.queued_bytes <= 4000 + size


def test_conflation_keeps_a_single_busy_market_under_max_bytes() -> None:
    """One market updated without end stays bounded by conflation and is not slow."""
    rng = random.Random(4)
    deltas, _ = history(market("m1"), [random_update(rng, "m1") for _ in range(500)])
    box = outbox(high_water_bytes=1000, max_bytes=4000)
    peak = 0
    for d in deltas:
        assert box.push(wire.delta(d), now=0.0, market="m1", delta=d) != SLOW
        peak = max(peak, box.queued_bytes)
    assert peak <= 4000


def test_past_max_lag_is_slow() -> None:
    """A queue whose oldest message is older than max_lag_s gives the slow verdict."""
    box = outbox(max_lag_s=1.0)
    assert box.push(wire.heartbeat(1), now=100.0) == OK
    assert box.verdict(100.5) == OK
    assert box.verdict(101.01) == SLOW
    assert box.push(wire.heartbeat(2), now=101.5) == SLOW
    drain(box)
    assert box.verdict(500.0) == OK


def test_a_frames_worth_queued_is_full() -> None:
    """Past flush_bytes (FLUSH_BYTES, or half the high-water mark when that is lower) push
    says FULL: the connection is written now rather than at the end of a batching window,
    so batching alone never drives a connection into conflation."""
    for high_water in (4 * FLUSH_BYTES, 4000):
        box = outbox(high_water_bytes=high_water, max_bytes=100 * FLUSH_BYTES)
        limit = min(FLUSH_BYTES, high_water // 2)
        verdict = OK
        while box.queued_bytes < limit:
            assert verdict == OK
            verdict = box.push(wire.heartbeat(1), now=0.0)
        assert verdict == FULL
        assert box.conflations == 0
        drain(box)
        assert box.push(wire.heartbeat(2), now=0.0) == OK


windows = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
shares = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@given(shares, shares, windows, windows)
def test_adaptive_window_is_bounded_and_grows_with_the_busy_share(
        a: float, b: float, base: float, top: float) -> None:
    """The hot connections' window stays within [base, max], never shrinks as the worker gets
    busier, is the base up to BUSY_LOW and the max from BUSY_HIGH; a max at or below the base
    keeps the base."""
    lo, hi = sorted((a, b))
    w_lo, w_hi = adaptive_window(lo, base, top), adaptive_window(hi, base, top)
    assert min(base, max(base, top)) <= w_lo <= w_hi <= max(base, top)
    if top <= base:
        assert w_lo == w_hi == base
    if lo <= BUSY_LOW:
        assert w_lo == base
    if hi >= BUSY_HIGH:
        assert w_hi == max(base, top)
