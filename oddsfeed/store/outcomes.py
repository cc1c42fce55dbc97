"""What one apply of the store can answer besides the core book's outcomes (an update out
of order for its source, a failed If-Match, a feed standing by for a higher-priority one),
and the one name of each outcome for logs, metrics and answers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import Counter

from ..core.book import OUTCOME_NAMES, Changed, Created, Delta, NoOp, Rejected
from ..core.model import Market
from . import codec

__all__ = ["LOCK_REFUSED", "Applied", "Head", "OutOfOrder", "Precondition", "Standby",
           "StoreOutcome", "outcome_name"]

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
class Head:
    """What a short reply tells of a market after an apply, instead of its whole state."""

    id: str
    epoch: str
    version: int
    status: str


@dataclass(frozen=True, slots=True)
class Standby:
    """A feed's update was not applied: ``driver``, a feed of a higher priority (or, for a
    silence sweep, any other feed), was seen on the market within the staleness period.
    ``market`` is the market as it is (its head only, from a short reply)."""

    market: Market | Head
    driver: str


@dataclass(frozen=True, slots=True)
class Applied:
    """A changed (new version) or noop outcome from a short reply (``kind`` says which):
    the market's head after it, and for a change the published delta, decoded on demand."""

    kind: str
    market: Head
    delta_bytes: bytes = b""

    def delta(self) -> Delta | None:
        """The change's delta (None for a noop). Raises InvalidInput on a payload not ours."""
        return Delta.from_store(codec.unpack(self.delta_bytes)) if self.delta_bytes else None


StoreOutcome = (Created | Changed | NoOp | Rejected | OutOfOrder | Precondition | Standby
                | Applied)
_NAMES: Mapping[type, str] = {**OUTCOME_NAMES, OutOfOrder: "outoforder",
                              Precondition: "precondition", Standby: "standby"}


def outcome_name(outcome: StoreOutcome) -> str:
    """How logs, metrics and answers name an apply outcome ("created", "outoforder", ...)."""
    if type(outcome) is Applied:
        return outcome.kind
    return _NAMES[type(outcome)]
