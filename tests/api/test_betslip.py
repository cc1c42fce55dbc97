"""The pure bet-slip policy (protocol.md section 4): values in, verdicts out, no I/O."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oddsfeed.core.betslip import (
    REASONS,
    check_leg,
    check_slip,
    delay_ms,
    pin_legs,
    suspended_since,
)
from oddsfeed.core.model import Market, Selection
from oddsfeed.core.wire import Leg


def market(mid: str = "m1", *, version: int = 5, status: str = "open", epoch: str = "E",
           in_play: bool = False, delay: int = 0, **sels: Selection) -> Market:
    sels = sels or {"h": Selection("Home", 25000), "s": Selection("S", 30000, "suspended")}
    return Market(id=mid, event="e1", sport="soccer", name="A v B", epoch=epoch,
                  version=version, ts=0, status=status, in_play=in_play, bet_delay_ms=delay,
                  selections=sels)


OPEN = (market(), 3)  # open at v5; last suspended at v3
CASES: list[tuple[str, tuple[Market, int] | None, dict[str, Any], str, str | None]] = [
    ("unknown market", None, {}, "exact", "unknown_market"),
    ("unknown selection", OPEN, {"selection": "zz"}, "exact", "unknown_selection"),
    ("market suspended", (market(status="suspended"), 5), {}, "exact", "market_suspended"),
    ("market closed", (market(status="closed"), 5), {}, "exact", "market_closed"),
    ("market settled", (market(status="settled"), 5), {}, "exact", "market_closed"),
    ("selection suspended", OPEN, {"selection": "s", "price": 30000}, "exact",
     "selection_suspended"),
    ("exact price", OPEN, {}, "exact", None),
    ("price moved", OPEN, {"price": 26000}, "exact", "price_changed"),
    ("better: current longer", OPEN, {"price": 24000}, "better", None),
    ("better: current shorter", OPEN, {"price": 26000}, "better", "price_changed"),
    ("any: shorter is fine", OPEN, {"price": 90000}, "any", None),
    ("exact: longer is not", OPEN, {"price": 24000}, "exact", "price_changed"),
    ("old epoch", OPEN, {"epoch": "OLD"}, "exact", "market_changed"),
    ("current epoch", OPEN, {"epoch": "E"}, "exact", None),
    ("suspended after the leg's version", OPEN, {"version": 2}, "exact", "market_changed"),
    ("leg carries the suspended version", OPEN, {"version": 3}, "exact", "market_changed"),
    ("suspension before the leg's version", OPEN, {"version": 4}, "exact", None),
    ("stale version alone never rejects", (market(), 0), {"version": 1}, "exact", None),
    ("version ahead of the store", OPEN, {"version": 99}, "exact", None),
    ("changed beats price under any", OPEN, {"version": 2, "price": 90000}, "any",
     "market_changed"),
    ("suspended beats changed", (market(status="suspended"), 5), {"epoch": "OLD"}, "any",
     "market_suspended"),
    ("selection suspension beats changed", OPEN,
     {"selection": "s", "price": 30000, "version": 1}, "exact", "selection_suspended"),
]


@pytest.mark.parametrize(("record", "leg", "accept", "reason"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_reason_table(record: tuple[Market, int] | None, leg: dict[str, Any], accept: str,
                      reason: str | None) -> None:
    """Each reason of section 4 in its order, and each accept policy."""
    out = check_leg(Leg(**{"market": "m1", "selection": "h", "price": 25000, **leg}), record,
                    accept)
    assert out.get("reason") == reason
    assert out["ok"] is (reason is None)
    if record is None:
        assert (out["price"], out["version"]) == (None, None)
    elif leg.get("selection") == "zz":
        assert out["price"] is None
    else:
        sel = record[0].selections[leg.get("selection", "h")]
        assert out["price"] == sel.price / 10000
        assert out["version"] == record[0].version


def test_slip_ok_only_when_every_leg_is() -> None:
    """A slip is ok only if all legs are; verdicts keep the legs' order."""
    legs = [Leg("m1", "h", 25000), Leg("m2", "h", 25000)]
    body = check_slip(legs, {"m1": OPEN, "m2": None}, "exact")
    assert body["ok"] is False
    assert [leg["ok"] for leg in body["legs"]] == [True, False]
    assert check_slip(legs[:1], {"m1": OPEN}, "exact")["ok"] is True


def test_delay_is_the_longest_in_play_one() -> None:
    """Only in-play markets with a delay count; the longest wins."""
    recs = {"a": (market("a", in_play=True, delay=500), 0),
            "b": (market("b", in_play=True, delay=2000), 0),
            "c": (market("c", in_play=False, delay=9000), 0), "d": None}
    legs = [Leg(m, "h", 25000) for m in "abcd"]
    assert delay_ms(legs, recs) == 2000
    assert delay_ms(legs[2:], recs) == 0


def test_pinned_legs_see_a_suspension_inside_the_delay() -> None:
    """After the delay, legs pinned to the arrival version are market_changed if the market
    was suspended meanwhile, even when it reopened at the same price."""
    arrival = {"m1": (market(version=5, in_play=True, delay=1000), 3)}
    pinned = pin_legs([Leg("m1", "h", 25000)], arrival)
    assert (pinned[0].version, pinned[0].epoch) == (5, "E")
    reopened = {"m1": (market(version=7, in_play=True, delay=1000), 6)}
    assert check_slip(pinned, reopened, "exact")["legs"][0]["reason"] == "market_changed"
    calm = {"m1": (market(version=6, in_play=True, delay=1000), 3)}
    assert check_slip(pinned, calm, "exact")["ok"] is True
    recreated = {"m1": (market(version=1, epoch="NEW"), 0)}
    assert check_slip(pinned, recreated, "exact")["legs"][0]["reason"] == "market_changed"


@given(susp_v=st.integers(0, 50), version=st.integers(0, 50), price=st.integers(10001, 99999),
       accept=st.sampled_from(["exact", "better", "any"]))
def test_never_accepted_at_a_worse_price_or_after_a_suspension(
        susp_v: int, version: int, price: int, accept: str) -> None:
    """Whatever the inputs, an accepted leg never had a suspension at or after its version,
    and under exact its price is the current one; the reason is always a known one."""
    rec = (market(version=max(version, susp_v, 1)), susp_v)
    out = check_leg(Leg("m1", "h", price, version=version), rec, accept)
    assert out.get("reason") in (None, *REASONS)
    if out["ok"]:
        assert not suspended_since(susp_v, version)
        if accept == "exact":
            assert price == 25000
        if accept == "better":
            assert price <= 25000
