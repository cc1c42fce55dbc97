"""What one apply of the store can answer besides the core book's outcomes (an update out
of order for its source, a failed If-Match, a feed standing by for a higher-priority one),
and the one name of each outcome for logs, metrics and answers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import Counter

from ..core.book import OUTCOME_NAMES, Changed, Created, NoOp, Rejected
from ..core.model import Market

__all__ = ["LOCK_REFUSED", "OutOfOrder", "Precondition", "Standby", "StoreOutcome",
           "outcome_name"]

LOCK_REFUSED = Counter("oddsfeed_lock_refused_total",
                       "feed updates of locked fields dropped by a price lock (per selection "
                       "named, or one per update under a whole-market lock)")


@dataclass(frozen=True, slots=True)
class OutOfOrder:
    """The update's (source, seq) was not newer than the last accepted one: dropped."""

    market: str
    last_seq: int


@dataclass(frozen=True, slots=True)
class Precondition:
    """``expect`` did not match: ``current`` is the market now (None if it does not exist)."""

    current: Market | None


@dataclass(frozen=True, slots=True)
class Standby:
    """A feed's update was not applied: ``driver``, a feed of a higher priority (or, for a
    silence sweep, any other feed), was seen on the market within the staleness period.
    ``market`` is the market as it is."""

    market: Market
    driver: str


StoreOutcome = Created | Changed | NoOp | Rejected | OutOfOrder | Precondition | Standby
_NAMES: Mapping[type, str] = {**OUTCOME_NAMES, OutOfOrder: "outoforder",
                              Precondition: "precondition", Standby: "standby"}


def outcome_name(outcome: StoreOutcome) -> str:
    """How logs, metrics and answers name an apply outcome ("created", "outoforder", ...)."""
    return _NAMES[type(outcome)]
