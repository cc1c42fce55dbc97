"""The market model validates on construction and names the bad field (oddsfeed.core.model)."""

from __future__ import annotations

from typing import Any

import pytest

from oddsfeed.core.errors import InvalidInput
from oddsfeed.core.model import FeedRank, Market, MarketUpdate, Selection


def market(**over: Any) -> Market:
    """A valid market with ``over`` replacing some of its fields."""
    base: dict[str, Any] = {
        "id": "m1", "event": "e1", "sport": "soccer", "name": "Match Odds", "epoch": "ep", "version": 1, "ts": 0,
        "selections": {"home": Selection(name="Home", price=25000)},
    }
    base.update(over)
    return Market(**base)


def test_valid_market_constructs() -> None:
    """A well-formed market keeps its fields and defaults."""
    m = market(kind="1x2", in_play=True, bet_delay_ms=5000)
    assert m.status == "open"
    assert m.bet_delay_ms == 5000
    assert m.selections["home"].price == 25000
    assert m.selections["home"].status == "active"


def test_selection_point_is_rounded() -> None:
    """A selection's point is kept rounded to 2 places, with -0.0 folded into 0.0."""
    assert Selection(name="Over", price=19000, point=2.505001).point == 2.51
    assert str(Selection(name="Over", price=19000, point=-0.0).point) == "0.0"


@pytest.mark.parametrize(
    ("over", "path"),
    [
        ({"bet_delay_ms": -1}, "bet_delay_ms"),
        ({"bet_delay_ms": 60_001}, "bet_delay_ms"),
        ({"status": "live"}, "status"),
        ({"id": ""}, "id"),
        ({"id": "x" * 129}, "id"),
        ({"id": "bad id"}, "id"),
        ({"event": "é"}, "event"),
        ({"name": ""}, "name"),
        ({"in_play": 1}, "in_play"),
        ({"version": 0}, "version"),
        ({"epoch": ""}, "epoch"),
    ],
    ids=repr,
)
def test_market_errors_name_the_field(over: dict[str, Any], path: str) -> None:
    """A bad market field raises InvalidInput whose path names that field."""
    with pytest.raises(InvalidInput) as exc:
        market(**over)
    assert exc.value.path == path
    assert str(exc.value).startswith(f"{path}: ")


def test_id_of_128_characters_is_accepted() -> None:
    """An id of exactly 128 allowed characters is valid."""
    assert market(id="a" * 128).id == "a" * 128


@pytest.mark.parametrize(
    ("sel", "path"),
    [
        ({"price": 10000}, "price"),
        ({"price": True}, "price"),
        ({"price": 2.5}, "price"),
        ({"status": "removed"}, "status"),
        ({"point": float("nan")}, "point"),
        ({"name": ""}, "name"),
    ],
    ids=repr,
)
def test_selection_errors_name_the_field(sel: dict[str, Any], path: str) -> None:
    """A bad selection field raises InvalidInput naming it; removed is not a stored status."""
    with pytest.raises(InvalidInput) as exc:
        Selection(**{"name": "Home", "price": 25000, **sel})
    assert exc.value.path == path


def test_market_rejects_bad_selection_id() -> None:
    """A selection id outside the charset is reported under selections.<id>."""
    with pytest.raises(InvalidInput) as exc:
        market(selections={"bad id": Selection(name="Home", price=25000)})
    assert exc.value.path == "selections.bad id"


def test_update_selection_price_path() -> None:
    """A bad price in an update names selections.<id>.price."""
    with pytest.raises(InvalidInput) as exc:
        MarketUpdate(market="m1", selections={"home": {"price": 5}})
    assert exc.value.path == "selections.home.price"


def test_update_unknown_fields_rejected() -> None:
    """Unknown market or selection fields in an update are rejected by path."""
    with pytest.raises(InvalidInput) as exc:
        MarketUpdate(market="m1", fields={"colour": "red"})
    assert exc.value.path == "colour"
    with pytest.raises(InvalidInput) as exc:
        MarketUpdate(market="m1", selections={"home": {"odds": 2}})
    assert exc.value.path == "selections.home.odds"


@pytest.mark.parametrize("mid", ["", "y" * 129, "a/b", None])
def test_update_market_id_checked(mid: Any) -> None:
    """An update's market id outside the charset is rejected with path market."""
    with pytest.raises(InvalidInput) as exc:
        MarketUpdate(market=mid)
    assert exc.value.path == "market"


def test_update_allows_removed_status() -> None:
    """An update may mark a selection removed, and a patch needs no price."""
    u = MarketUpdate(market="m1", selections={"home": {"status": "removed"}, "away": {"point": -0.0}})
    assert u.selections["home"] == {"status": "removed"}
    assert u.selections["away"] == {"point": 0.0}


@pytest.mark.parametrize("missing", ["event", "sport", "name"])
def test_replace_needs_event_sport_name(missing: str) -> None:
    """A replace update without event, sport or name is rejected naming the missing one."""
    fields = {"event": "e1", "sport": "soccer", "name": "Match Odds"}
    del fields[missing]
    with pytest.raises(InvalidInput) as exc:
        MarketUpdate(market="m1", fields=fields, replace=True)
    assert exc.value.path == missing


@pytest.mark.parametrize("sel", [{"name": "Home"}, {"price": 25000}, {"status": "active"}])
def test_replace_needs_name_and_price_per_selection(sel: dict[str, Any]) -> None:
    """Every kept selection of a replace update needs both a name and a price."""
    fields = {"event": "e1", "sport": "soccer", "name": "Match Odds"}
    with pytest.raises(InvalidInput) as exc:
        MarketUpdate(market="m1", fields=fields, replace=True, selections={"home": sel})
    assert exc.value.path == "selections.home"


def test_replace_valid() -> None:
    """A complete replace update, with a removed selection, is valid."""
    fields = {"event": "e1", "sport": "soccer", "name": "Match Odds"}
    u = MarketUpdate(market="m1", fields=fields, replace=True,
                     selections={"home": {"name": "Home", "price": 25000},
                                 "away": {"status": "removed"}})
    assert u.replace
    assert set(u.selections) == {"home", "away"}


def test_update_under_another_source_is_the_same_update() -> None:
    """``under`` gives the update with only source, feed (and a reopening status) changed,
    equal to building it afresh, and leaves the original as it was."""
    base = MarketUpdate(market="m1", fields={"name": "Match odds"},
                        selections={"a": {"price": 25000, "point": -1.5}}, create=False,
                        ts=5, seq=7, source="provider")
    rank = FeedRank("feed:a", 1, 5_000)
    copy = base.under("feed:a", rank)
    assert copy == MarketUpdate(market="m1", fields={"name": "Match odds"},
                                selections={"a": {"price": 25000, "point": -1.5}}, ts=5,
                                seq=7, source="feed:a", feed=rank)
    reopened = base.under("feed:a", rank, reopen=True)
    assert reopened.fields == {"name": "Match odds", "status": "open"}
    assert base.fields == {"name": "Match odds"}
    assert base.source == "provider"
    closed = MarketUpdate(market="m1", fields={"status": "closed"})
    assert closed.under("feed:a", rank, reopen=True).fields == {"status": "closed"}
    with pytest.raises(InvalidInput, match="at most 200"):
        base.under("x" * 201, rank)
