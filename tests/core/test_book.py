"""Properties and examples of the versioned book (oddsfeed.core.book)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from oddsfeed.core.book import (
    Applied,
    Changed,
    Created,
    Delta,
    Duplicate,
    NoOp,
    Rejected,
    Resync,
    apply_delta,
    apply_update,
    conflate,
)
from oddsfeed.core.model import Market, MarketUpdate, Selection

from .strategies import markets, updates


def run(initial: Market, ups: list[MarketUpdate]) -> tuple[Market, list[Delta]]:
    state, deltas = initial, []
    for i, u in enumerate(ups):
        out = apply_update(state, u, epoch="other", now_ms=i)
        if isinstance(out, Changed):
            deltas.append(out.delta)
            state = out.market
    return state, deltas


def replay(initial: Market, deltas: list[Delta]) -> Market:
    state = initial
    for d in deltas:
        res = apply_delta(state, d)
        assert isinstance(res, Applied), res
        state = res.market
    return state


@settings(max_examples=200, deadline=None)
@given(markets(), st.lists(updates(), max_size=12))
def test_deltas_replay_to_final_state(initial: Market, ups: list[MarketUpdate]) -> None:
    """Applying the emitted deltas to the initial snapshot gives exactly the final state."""
    final, deltas = run(initial, ups)
    assert replay(initial, deltas) == final


@settings(max_examples=200, deadline=None)
@given(markets(), st.lists(updates(), max_size=12))
def test_every_delta_is_one_version(initial: Market, ups: list[MarketUpdate]) -> None:
    """Every emitted delta has v = base + 1 and the market's epoch."""
    _, deltas = run(initial, ups)
    for prev, d in zip([None, *deltas], deltas, strict=False):
        assert d.version == d.base + 1
        assert d.epoch == initial.epoch
        if prev is not None:
            assert d.base == prev.version


@settings(max_examples=200, deadline=None)
@given(markets(), st.lists(updates(), min_size=1, max_size=12), st.data())
def test_conflation_equals_parts(initial: Market, ups: list[MarketUpdate],
                                 data: st.DataObject) -> None:
    """Conflating any consecutive run of deltas then applying it equals applying the parts."""
    final, deltas = run(initial, ups)
    if not deltas:
        return
    i = data.draw(st.integers(0, len(deltas) - 1))
    j = data.draw(st.integers(i + 1, len(deltas)))
    before = replay(initial, deltas[:i])
    merged = conflate(deltas[i:j])
    assert merged.base == deltas[i].base
    assert merged.version == deltas[j - 1].version
    after = apply_delta(before, merged)
    assert isinstance(after, Applied)
    assert replay(after.market, deltas[j:]) == final


@settings(max_examples=100, deadline=None)
@given(markets(), updates())
def test_reapplying_an_applied_update_is_a_noop(initial: Market, u: MarketUpdate) -> None:
    """An update applied twice changes nothing the second time: no version, no delta."""
    first = apply_update(initial, u, epoch="x", now_ms=5)
    if not isinstance(first, Changed):
        return
    again = apply_update(first.market, u, epoch="x", now_ms=6)
    assert isinstance(again, NoOp)
    assert again.market.version == first.market.version
    assert again.market.ts == first.market.ts


@settings(max_examples=100, deadline=None)
@given(markets(), st.lists(updates(), max_size=6))
def test_delta_store_round_trip(initial: Market, ups: list[MarketUpdate]) -> None:
    """Delta.to_store / from_store round-trips every emitted delta."""
    _, deltas = run(initial, ups)
    for d in deltas:
        assert Delta.from_store(d.to_store()) == d


def _m(**kw: object) -> Market:
    base: dict[str, object] = {"id": "m1", "event": "e1", "sport": "soccer", "name": "A v B", "epoch": "ep",
                                   "version": 3, "ts": 1, "selections": {"h": Selection("Home", 25000)}}
    base.update(kw)
    return Market(**base)  # type: ignore[arg-type]


def test_apply_delta_duplicate_and_resync() -> None:
    """apply_delta ignores old versions and asks for a resync on a gap or another epoch."""
    m = _m()
    assert isinstance(apply_delta(m, Delta("m1", "ep", 3, 2, 1)), Duplicate)
    assert isinstance(apply_delta(m, Delta("m1", "ep", 5, 4, 1)), Resync)
    assert isinstance(apply_delta(m, Delta("m1", "other", 4, 3, 1)), Resync)


def test_settled_rejects_changes_but_not_noops() -> None:
    """A settled market refuses a change (409) while an update changing nothing is a no-op."""
    m = _m(status="settled")
    out = apply_update(m, MarketUpdate("m1", selections={"h": {"price": 30000}}), epoch="x",
                       now_ms=2)
    assert isinstance(out, Rejected)
    assert out.reason == "settled"
    same = apply_update(m, MarketUpdate("m1", selections={"h": {"price": 25000}}), epoch="x",
                        now_ms=2)
    assert isinstance(same, NoOp)


def test_event_and_sport_never_change() -> None:
    """An update naming another event or sport is a conflict."""
    out = apply_update(_m(), MarketUpdate("m1", fields={"sport": "tennis"}), epoch="x", now_ms=1)
    assert isinstance(out, Rejected)
    assert out.reason == "conflict"
    assert out.path == "sport"


def test_patch_on_missing_market_and_incomplete_selection() -> None:
    """A patch needs an existing market; a new selection needs a name and a price."""
    out = apply_update(None, MarketUpdate("m9", selections={"h": {"price": 20000}}), epoch="x",
                       now_ms=1)
    assert isinstance(out, Rejected)
    assert out.reason == "unknown_market"
    out = apply_update(_m(), MarketUpdate("m1", selections={"z": {"price": 20000}}), epoch="x",
                       now_ms=1)
    assert isinstance(out, Rejected)
    assert out.reason == "invalid"
    assert out.path == "selections.z"


def test_create_and_replace() -> None:
    """A create starts at version 1 with the given epoch; a replace drops left-out selections
    and resets left-out optional fields."""
    up = MarketUpdate("m1", fields={"event": "e1", "sport": "soccer", "name": "A v B",
                                    "in_play": True},
                      selections={"h": {"name": "Home", "price": 25000},
                                  "a": {"name": "Away", "price": 30000}}, create=True, ts=7)
    created = apply_update(None, up, epoch="new", now_ms=1)
    assert isinstance(created, Created)
    assert created.market.version == 1
    assert created.market.epoch == "new"
    assert created.market.ts == 7
    rep = MarketUpdate("m1", fields={"event": "e1", "sport": "soccer", "name": "A v B"},
                       selections={"h": {"name": "Home", "price": 26000}}, replace=True)
    out = apply_update(created.market, rep, epoch="x", now_ms=9)
    assert isinstance(out, Changed)
    assert set(out.market.selections) == {"h"}
    assert out.market.in_play is False
    assert out.delta.sel == {"a": {"status": "removed"}, "h": {"price": 26000}}
    assert out.delta.fields == {"in_play": False}
    assert out.market.epoch == "new"


def test_removed_selection_can_come_back() -> None:
    """A removed selection disappears and the same id may be added again as new."""
    gone = apply_update(_m(), MarketUpdate("m1", selections={"h": {"status": "removed"}}),
                        epoch="x", now_ms=2)
    assert isinstance(gone, Changed)
    assert "h" not in gone.market.selections
    back = apply_update(gone.market, MarketUpdate("m1", selections={
        "h": {"name": "Home", "price": 21000, "point": 1.5}}), epoch="x", now_ms=3)
    assert isinstance(back, Changed)
    assert back.delta.sel["h"] == {"name": "Home", "price": 21000, "status": "active",
                                   "point": 1.5}
