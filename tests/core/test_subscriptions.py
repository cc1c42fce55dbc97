"""The subscription index (oddsfeed.core.subscriptions) against a naive model."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from oddsfeed.core.subscriptions import SubscriptionIndex

ops = st.lists(st.tuples(st.sampled_from(["add", "remove", "drop"]), st.integers(0, 3),
                         st.sampled_from(["m1", "m2", "m3"])), max_size=40)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_index_matches_model(steps: list[tuple[str, int, str]]) -> None:
    """First/last-subscriber signals and subscriber sets match a naive set model."""
    idx: SubscriptionIndex[int] = SubscriptionIndex()
    model: dict[str, set[int]] = {}
    for op, conn, market in steps:
        if op == "add":
            first = idx.add_market(conn, market)
            assert first == (not model.get(market))
            model.setdefault(market, set()).add(conn)
        elif op == "remove":
            last = idx.remove_market(conn, market)
            had = conn in model.get(market, set())
            model.get(market, set()).discard(conn)
            assert last == (had and not model[market])
        else:
            lost, _ = idx.drop(conn)
            before = {m for m, s in model.items() if s == {conn}}
            for s in model.values():
                s.discard(conn)
            assert set(lost) == before
        for m in ("m1", "m2", "m3"):
            assert set(idx.market_subscribers(m)) == model.get(m, set())


def test_events_signal_first_and_last() -> None:
    """Events report their first and last local subscriber too."""
    idx: SubscriptionIndex[str] = SubscriptionIndex()
    assert idx.add_event("a", "e1")
    assert not idx.add_event("b", "e1")
    assert not idx.remove_event("a", "e1")
    assert idx.remove_event("b", "e1")


def test_drop_reports_lost_markets_and_events() -> None:
    """drop() forgets a connection and reports only the markets and events it was last on."""
    idx: SubscriptionIndex[str] = SubscriptionIndex()
    idx.add_market("a", "m1")
    idx.add_market("a", "m2")
    idx.add_market("b", "m2")
    idx.add_event("a", "e1")
    idx.add_event("a", "e2")
    idx.add_event("b", "e2")
    lost_markets, lost_events = idx.drop("a")
    assert sorted(lost_markets) == ["m1"]
    assert sorted(lost_events) == ["e1"]
    assert idx.count("a") == 0
    assert set(idx.market_subscribers("m2")) == {"b"}
    assert set(idx.markets()) == {"m2"}
    assert set(idx.events()) == {"e2"}
    assert len(idx) == 1
    assert idx.drop("a") == ([], [])
