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
    for item in raw:
        if type(item) is not dict or not item.keys() <= _LEG_KEYS:
            return None
        market, selection = item.get("market"), item.get("selection")
        price, version, epoch = item.get("price"), item.get("version"), item.get("epoch")
        if (type(market) is not str or type(selection) is not str
                or type(price) not in _PLAIN_PRICE
                or not ID_RE.match(market) or not ID_RE.match(selection)):
            return None
        if version is not None and (type(version) is not int
                                    or not 0 <= version <= schemas.MAX_INT):
            return None
        if epoch is not None and (type(epoch) is not str or not 1 <= len(epoch) <= 64):
            return None
        try:
            ticks = parse_price(price)  # memoised for plain inputs
        except InvalidInput:
            return None
        legs.append(Leg(market=market, selection=selection, price=ticks, version=version,
                        epoch=epoch))
    return tuple(legs), accept
