"""The body of ``POST /v1/bets/validate`` as core legs: a direct check of the plain shape
every client sends, and ``schemas.SlipIn`` (pydantic) for everything else.

The direct path accepts a body only when ``SlipIn`` would accept it with the same legs:
exact JSON types (the model is strict), the same id pattern, bounds and price parser.
Anything it is not sure of (a price object, a missing field, a wrong type, a bad value) goes
to the model, so every refusal is the model's, with its paths and messages.
"""

from __future__ import annotations

from typing import Any

from ..core.errors import InvalidInput
from ..core.model import ID_RE
from ..core.prices import parse_price
from ..core.wire import MAX_LEGS, Leg
from . import schemas
from .plumbing import model_of

_SLIP_KEYS = frozenset(("legs", "accept"))
_LEG_KEYS = frozenset(("market", "selection", "price", "version", "epoch"))
_ACCEPT = ("exact", "better", "any")
_PLAIN_PRICE = (int, float, str)
# Legs already accepted, by their exact inputs: a Leg is immutable, and the same inputs of
# the same exact types always pass the same checks to the same Leg, so a repeated leg (the
# common case: a few thousand live selections, each at its price) skips the id pattern,
# the price parser and the Leg's construction. Bounded: emptied when it reaches MEMO_LEGS.
MEMO_LEGS = 8192
_legs_seen: dict[tuple[Any, ...], Leg] = {}


def slip_of(data: Any) -> tuple[tuple[Leg, ...], str]:
    """(legs, accept) of a parsed request body; raises the model's 400 problem."""
    fast = _plain_slip(data)
    if fast is not None:
        return fast
    slip = model_of(schemas.SlipIn, data)
    return tuple(leg.leg() for leg in slip.legs), slip.accept


def _plain_slip(data: Any) -> tuple[tuple[Leg, ...], str] | None:
    """The slip when ``data`` is plainly valid; None: let the model decide."""
    if type(data) is not dict or not data.keys() <= _SLIP_KEYS:
        return None
    accept = data.get("accept", "exact")
    raw = data.get("legs")
    if type(accept) is not str or accept not in _ACCEPT or type(raw) is not list:
        return None
    if not 1 <= len(raw) <= MAX_LEGS:
        return None
    legs = []
    seen = _legs_seen
    for item in raw:
        if type(item) is not dict or not item.keys() <= _LEG_KEYS:
            return None
        market, selection = item.get("market"), item.get("selection")
        price, version, epoch = item.get("price"), item.get("version"), item.get("epoch")
        # Exact types first: they make the memo's key exact (True == 1, but a bool is
        # refused here before it could meet a 1 in the memo; 2 == 2.0: the type is in it).
        if (type(market) is not str or type(selection) is not str
                or type(price) not in _PLAIN_PRICE
                or (version is not None and type(version) is not int)
                or (epoch is not None and type(epoch) is not str)):
            return None
        key = (market, selection, type(price), price, version, epoch)
        leg = seen.get(key)
        if leg is None:
            leg = _plain_leg(market, selection, price, version, epoch)
            if leg is None:
                return None
            if len(seen) >= MEMO_LEGS:
                seen.clear()
            seen[key] = leg
        legs.append(leg)
    return tuple(legs), accept


def _plain_leg(market: str, selection: str, price: Any, version: int | None,
               epoch: str | None) -> Leg | None:
    """The leg of inputs of the exact plain types when the model would accept them as
    they are; None: let the model decide."""
    if not ID_RE.match(market) or not ID_RE.match(selection):
        return None
    if version is not None and not 0 <= version <= schemas.MAX_INT:
        return None
    if epoch is not None and not 1 <= len(epoch) <= 64:
        return None
    try:
        ticks = parse_price(price)  # memoised for plain inputs
    except InvalidInput:
        return None
    return Leg(market=market, selection=selection, price=ticks, version=version, epoch=epoch)
