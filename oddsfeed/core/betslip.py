"""Bet-slip validation policy (protocol.md section 4): legs + current markets -> verdicts.

Pure: the caller reads the markets (with their suspension record ``susp_v``) and waits the
in-play delay; this module only decides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, Protocol

from .errors import InvalidInput
from .prices import to_float
from .wire import Leg


class Priced(Protocol):
    """What validation reads of a selection (a ``model.Selection`` has it)."""

    @property
    def price(self) -> int: ...
    @property
    def status(self) -> str: ...


class MarketLike(Protocol):
    """What validation reads of a market (a ``model.Market`` has it)."""

    @property
    def epoch(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def in_play(self) -> bool: ...
    @property
    def bet_delay_ms(self) -> int: ...
    @property
    def selections(self) -> Mapping[str, Priced]: ...


# (market, susp_v): susp_v is the last version at which the market was not open (0: never).
Record = tuple[MarketLike, int]


class Quote(NamedTuple):
    """A selection's price (ticks) and status, as validation reads it."""

    price: int
    status: str


@dataclass(frozen=True, slots=True)
class MarketView:
    """The fields of a stored market that validation reads, taken from the store's map
    without rebuilding (and so re-checking) a whole ``Market``: the store holds only what
    the apply script wrote from checked updates."""

    epoch: str
    version: int
    status: str
    in_play: bool
    bet_delay_ms: int
    selections: Mapping[str, Quote]


def record_from_store(d: Mapping[str, Any]) -> Record:
    """The (view, susp_v) of a market's store map; raises InvalidInput on a bad map."""
    sels = d.get("selections") or {}
    if isinstance(sels, list):  # Lua's cmsgpack encodes an empty table as an array
        sels = {}
    try:
        view = MarketView(
            epoch=d["epoch"], version=int(d["version"]), status=d.get("status", "open"),
            in_play=bool(d.get("in_play", False)), bet_delay_ms=int(d.get("bet_delay_ms", 0)),
            selections={str(k): Quote(int(v["price"]), v.get("status", "active"))
                        for k, v in sels.items()})
        return view, int(d.get("susp_v") or 0)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidInput(f"bad stored market: {exc}") from None

REASONS = ("unknown_market", "unknown_selection", "market_suspended", "market_closed",
           "selection_suspended", "market_changed", "price_changed")


def check_leg(leg: Leg, record: Record | None, accept: str) -> dict[str, Any]:
    """One leg's verdict map ``{market, selection, ok, reason?, price, version}``."""
    if record is None:
        return {"market": leg.market, "selection": leg.selection, "ok": False,
                "reason": "unknown_market", "price": None, "version": None}
    market, susp_v = record
    sel = market.selections.get(leg.selection)
    if sel is None:
        # protocol.md section 4: price and version are null for an unknown selection
        return {"market": leg.market, "selection": leg.selection, "ok": False,
                "reason": "unknown_selection", "price": None, "version": None}
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
    # One map per leg, its keys in the answer's order (price, version, then the verdict).
    if reason is None:
        return {"market": leg.market, "selection": leg.selection,
                "price": to_float(sel.price), "version": market.version, "ok": True}
    return {"market": leg.market, "selection": leg.selection, "price": to_float(sel.price),
            "version": market.version, "ok": False, "reason": reason}


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
