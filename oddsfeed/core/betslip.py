"""Bet-slip validation policy (protocol.md section 4): legs + current markets -> verdicts.

Pure: the caller reads the markets (with their suspension record ``susp_v``) and waits the
in-play delay; this module only decides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from .model import Market
from .prices import to_float
from .wire import Leg

# (market, susp_v): susp_v is the last version at which the market was not open (0: never).
Record = tuple[Market, int]

REASONS = ("unknown_market", "unknown_selection", "market_suspended", "market_closed",
           "selection_suspended", "market_changed", "price_changed")


def check_leg(leg: Leg, record: Record | None, accept: str) -> dict[str, Any]:
    """One leg's verdict map ``{market, selection, ok, reason?, price, version}``."""
    out: dict[str, Any] = {"market": leg.market, "selection": leg.selection}
    if record is None:
        return {**out, "ok": False, "reason": "unknown_market", "price": None, "version": None}
    market, susp_v = record
    sel = market.selections.get(leg.selection)
    if sel is None:
        # protocol.md section 4: price and version are null for an unknown selection
        return {**out, "ok": False, "reason": "unknown_selection", "price": None,
                "version": None}
    out["price"] = to_float(sel.price)
    out["version"] = market.version
    reason = None
    if market.status == "suspended":
        reason = "market_suspended"
    elif market.status in ("closed", "settled"):
        reason = "market_closed"
    elif sel.status == "suspended":
        reason = "selection_suspended"
    elif (leg.epoch is not None and leg.epoch != market.epoch) or (
        leg.version is not None and suspended_since(susp_v, leg.version)
    ):
        reason = "market_changed"
    elif sel.price != leg.price and not (
        accept == "any" or (accept == "better" and sel.price >= leg.price)
    ):
        reason = "price_changed"
    if reason is None:
        return {**out, "ok": True}
    return {**out, "ok": False, "reason": reason}


def suspended_since(susp_v: int, version: int) -> bool:
    """Was the market suspended (or closed) at any moment after ``version`` was current?

    ``susp_v`` is the last version whose state was not open (0: never). The state of
    ``version`` itself lasts until the next version, so a leg carrying a suspended version
    counts as changed once the market reopens: the bettor never saw the reopened prices.
    """
    return susp_v > 0 and susp_v >= version


def check_slip(legs: Sequence[Leg], records: Mapping[str, Record | None], accept: str
               ) -> dict[str, Any]:
    """The ``validation`` body: ``{ok, legs}``; ok only if every leg is accepted."""
    results = [check_leg(leg, records.get(leg.market), accept) for leg in legs]
    return {"ok": all(r["ok"] for r in results), "legs": results}


def delay_ms(legs: Sequence[Leg], records: Mapping[str, Record | None]) -> int:
    """The longest in-play bet delay among the legs' markets (0: answer at once)."""
    longest = 0
    for leg in legs:
        rec = records.get(leg.market)
        if rec is not None and rec[0].in_play and rec[0].bet_delay_ms > longest:
            longest = rec[0].bet_delay_ms
    return longest


def pin_legs(legs: Sequence[Leg], records: Mapping[str, Record | None]) -> tuple[Leg, ...]:
    """Legs as if they carried the (epoch, version) current at arrival, for the re-check
    after an in-play delay: a suspension inside the delay then shows as market_changed."""
    pinned = []
    for leg in legs:
        rec = records.get(leg.market)
        if rec is None:
            pinned.append(leg)
            continue
        market = rec[0]
        version = market.version if leg.version is None else min(leg.version, market.version)
        pinned.append(replace(leg, version=version, epoch=leg.epoch or market.epoch))
    return tuple(pinned)
