"""What one apply of the store can answer besides the core book's outcomes (an update out
of order for its source, a failed If-Match), and the one name of each outcome for logs,
metrics and answers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..core.book import OUTCOME_NAMES, Changed, Created, NoOp, Rejected
from ..core.model import Market

__all__ = ["OutOfOrder", "Precondition", "StoreOutcome", "outcome_name"]


@dataclass(frozen=True, slots=True)
class OutOfOrder:
    """The update's (source, seq) was not newer than the last accepted one: dropped."""

    market: str
    last_seq: int


@dataclass(frozen=True, slots=True)
class Precondition:
    """``expect`` did not match: ``current`` is the market now (None if it does not exist)."""

    current: Market | None


StoreOutcome = Created | Changed | NoOp | Rejected | OutOfOrder | Precondition
_NAMES: Mapping[type, str] = {**OUTCOME_NAMES, OutOfOrder: "outoforder",
                              Precondition: "precondition"}


def outcome_name(outcome: StoreOutcome) -> str:
    """How logs, metrics and answers name an apply outcome ("created", "outoforder", ...)."""
    return _NAMES[type(outcome)]
