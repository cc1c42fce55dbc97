"""Hypothesis strategies for markets and updates (shared by core and store tests)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from oddsfeed.core.model import Market, MarketUpdate, Selection
from oddsfeed.core.prices import MAX_PRICE, MIN_PRICE

SEL_IDS = ["home", "draw", "away", "over", "under", "x"]
prices = st.integers(MIN_PRICE, 200_000) | st.integers(MIN_PRICE, MAX_PRICE)
points = st.none() | st.sampled_from([-2.5, -1.5, -0.25, 0.0, 0.5, 1.5, 2.5])
names = st.sampled_from(["Home", "Away", "Draw", "Over", "Under", "Other"])


@st.composite
def selections(draw: Any) -> Selection:
    return Selection(name=draw(names), price=draw(prices),
                     status=draw(st.sampled_from(["active", "suspended"])), point=draw(points))


@st.composite
def markets(draw: Any, status: Any = None) -> Market:
    sels = draw(st.dictionaries(st.sampled_from(SEL_IDS), selections(), max_size=4))
    return Market(id="m1", event="e1", sport="soccer", name=draw(names), epoch="ep",
                  version=draw(st.integers(1, 50)), ts=1000,
                  kind=draw(st.sampled_from(["", "1x2", "totals"])),
                  status=status or draw(st.sampled_from(["open", "suspended", "closed"])),
                  in_play=draw(st.booleans()), bet_delay_ms=draw(st.sampled_from([0, 1000, 5000])),
                  selections=sels)


@st.composite
def selection_patches(draw: Any, full: bool = False) -> dict[str, Any]:
    if draw(st.integers(0, 5)) == 0 and not full:
        return {"status": "removed"}
    keys = ["name", "price", "status", "point"]
    chosen = keys if full else draw(st.lists(st.sampled_from(keys), unique=True, max_size=4))
    patch: dict[str, Any] = {}
    for k in chosen:
        if k == "name":
            patch[k] = draw(names)
        elif k == "price":
            patch[k] = draw(prices)
        elif k == "status":
            patch[k] = draw(st.sampled_from(["active", "suspended"]))
        else:
            patch[k] = draw(points)
    if full:
        patch.setdefault("name", "N")
    return patch


@st.composite
def updates(draw: Any) -> MarketUpdate:
    replace = draw(st.integers(0, 6)) == 0
    fields: dict[str, Any] = {}
    if replace:
        fields = {"event": "e1", "sport": "soccer", "name": draw(names)}
    for key, strat in (("name", names), ("kind", st.sampled_from(["", "1x2"])),
                       ("status", st.sampled_from(["open", "suspended", "closed"])),
                       ("in_play", st.booleans()),
                       ("bet_delay_ms", st.sampled_from([0, 1000]))):
        if draw(st.booleans()) and draw(st.booleans()):
            fields[key] = draw(strat)
    sels = draw(st.dictionaries(st.sampled_from(SEL_IDS),
                                selection_patches(full=replace), max_size=3))
    if not replace:
        # a patch that adds a selection must carry name and price; make half of them full
        sels = {k: ({**v, "name": v.get("name", "N"), "price": v.get("price", 20000)}
                    if v.get("status") != "removed" and draw(st.booleans()) else v)
                for k, v in sels.items()}
    return MarketUpdate(market="m1", fields=fields, selections=sels, replace=replace,
                        ts=draw(st.integers(0, 10**6)))
