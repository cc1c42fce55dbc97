"""Stale-bet risk signals: how late a rejected leg was, per-account counts and their score.

Pure: the caller reads the history and the clock; this module only computes. Times are
milliseconds passed in as arguments.

Counts (one vector of ints per account and window, :data:`FIELDS` in order): slips, legs,
accepted legs, rejected legs by reason, rejected legs by ``stale_ms`` bucket, and legs
accepted shortly before a suspension or an adverse move (``beat``: :func:`beat` decides it
from the history after the accepted version, once the beat window has passed).

Score, in [0, 100)::

    score = 100 * (sum_b W[b] * stale[b] + BEAT_WEIGHT * beat) / (legs + PRIOR_LEGS)

Why this formula:

- A bettor with a faster feed than the book tries the old price just after it moved: the
  leg is rejected with a small ``stale_ms``. An ordinary bettor is rejected rarely, and
  late (seconds to minutes after the move: they were reading the page). So a rejection
  weighs more the fresher it is (``W`` falls from 1 for under 250 ms to 0.05 past 30 s);
  the weights are the whole model, readable in :data:`STALE_WEIGHTS`.
- Dividing by the legs makes it a share: an account that bets a lot is not suspicious for
  volume alone. ``PRIOR_LEGS`` shrinks small samples toward 0 (one unlucky leg out of one
  is not 100).
- Every rejected leg lands in at most one stale bucket and every beat leg is an accepted
  leg, with every weight at most 1: the numerator never exceeds ``legs``, hence < 100.
- Monotone: turning a leg from accepted to a stale rejection, or making a rejection
  fresher, or marking an accepted leg as beating a suspension, never lowers the score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from .betslip import REASONS

# Upper bounds (exclusive) of the stale_ms buckets; the last bucket is everything above.
STALE_BOUNDS_MS = (250, 1000, 5000, 30000)
STALE_BUCKETS = ("lt250ms", "lt1s", "lt5s", "lt30s", "ge30s", "unknown")
# Weight of one rejected leg per bucket: fresher is likelier a faster feed. "unknown": the
# history no longer covers the leg's version (trimmed), counted but weighed little.
STALE_WEIGHTS = (1.0, 0.8, 0.4, 0.15, 0.05, 0.05)
BEAT_WEIGHT = 1.0
PRIOR_LEGS = 5
# Reasons whose leg had a price or version that once was current: they get a stale_ms.
STALE_REASONS = frozenset({"market_suspended", "market_closed", "selection_suspended",
                           "market_changed", "price_changed"})

FIELDS: tuple[str, ...] = ("slips", "legs", "accepted",
                           *(f"rejected_{r}" for r in REASONS),
                           *(f"stale_{b}" for b in STALE_BUCKETS), "beat")
_INDEX = {name: i for i, name in enumerate(FIELDS)}
Counts = tuple[int, ...]
ZERO: Counts = (0,) * len(FIELDS)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One history version as the risk signals need it.

    ``prices``: the selection prices (ticks) this version set (all of them for a creation);
    ``status_changed``: the market's or a selection's status changed in it; ``halted``: it
    suspended, closed or settled the market; ``halted_selections``: the selections it
    suspended or removed.
    """

    version: int
    at_ms: int
    prices: Mapping[str, int]
    status_changed: bool
    halted: bool = False
    halted_selections: frozenset[str] = frozenset()


class DueGroup(NamedTuple):
    """Accepted legs on one price of one selection at one market version, waiting for their
    beat windows to end: ``accepted`` holds ``(sub, [at_ms, ...])`` per account (each leg
    accepted at ``at_ms``, judged by :func:`beats_of` once ``at_ms + window_ms`` passed),
    ``price`` in ticks. (Grouped: a busy market takes many bets between two versions, and
    the history after a version is read and scanned once for all of them; one account's
    legs share its name.)"""

    market: str
    selection: str
    price: int
    version: int
    window_ms: int
    accepted: list[tuple[str, list[int]]]

    def size(self) -> int:
        """How many legs the group holds."""
        return sum(len(ats) for _, ats in self.accepted)

    def due_ms(self) -> int:
        """When the last of its legs' windows ends."""
        return max(max(ats) for _, ats in self.accepted) + self.window_ms


def stale_since_ms(history: Sequence[HistoryEntry], *, selection: str, price: int,
                   version: int | None, reason: str) -> int | None:
    """When the leg's price or version stopped being current (ms), or None if unknown.

    ``history`` is in version order. With a ``version`` it must start after it: a
    ``price_changed`` leg went stale at the first version setting another price for its
    selection, any other reason at the first version after the leg's. Without a version it
    is the newest stretch of the history: a ``price_changed`` leg went stale when its price
    was last replaced, another reason at the newest status change.
    """
    if reason not in STALE_REASONS:
        return None
    if version is not None:
        later = [e for e in history if e.version > version]
        if reason == "price_changed":
            for e in later:
                moved = e.prices.get(selection)
                if moved is not None and moved != price:
                    return e.at_ms
        return later[0].at_ms if later else None
    if reason != "price_changed":
        for e in reversed(history):
            if e.status_changed:
                return e.at_ms
        return None
    replaced_at: int | None = None
    for e in reversed(history):
        set_to = e.prices.get(selection)
        if set_to is None:
            continue
        if set_to == price:
            return replaced_at
        replaced_at = e.at_ms
    return None


def first_adverse_ms(history: Sequence[HistoryEntry], *, selection: str, price: int
                     ) -> int | None:
    """When the book first turned against a leg accepted at ``price`` (ticks): ``history``
    holds the versions after the accepted one (in version order); the first that halted
    the market or the leg's selection, or set the selection a shorter price than ``price``
    (the bettor got better odds than the book offers now). None: none did. A longer price
    is the book's gain, not adverse."""
    for e in history:
        if e.halted or selection in e.halted_selections:
            return e.at_ms
        moved = e.prices.get(selection)
        if moved is not None and moved < price:
            return e.at_ms
    return None


def beat(history: Sequence[HistoryEntry], *, selection: str, price: int, until_ms: int
         ) -> bool:
    """Whether an accepted leg beat a suspension or an adverse move: the book turned
    against it (:func:`first_adverse_ms`) at or before ``until_ms`` (acceptance + the beat
    window)."""
    at = first_adverse_ms(history, selection=selection, price=price)
    return at is not None and at <= until_ms


def beats_of(group: DueGroup, history: Sequence[HistoryEntry]) -> list[tuple[str, int]]:
    """The ``(sub, at_ms)`` of the group's legs that beat the book (:func:`beat` for each:
    ``history`` holds the versions after the group's), in the group's order."""
    turned = first_adverse_ms(history, selection=group.selection, price=group.price)
    if turned is None:
        return []
    since = turned - group.window_ms  # at + window >= turned
    return [(sub, at) for sub, ats in group.accepted for at in ats if at >= since]


def beat_counts() -> Counts:
    """The counts one beat leg adds (to its acceptance-time bucket): ``beat`` only, since
    its slip and legs were counted when it was validated."""
    out = list(ZERO)
    out[_INDEX["beat"]] = 1
    return tuple(out)


def stale_bucket(stale_ms: int | None) -> str:
    """The name of the bucket ``stale_ms`` falls in ("unknown" for None)."""
    if stale_ms is None:
        return "unknown"
    for bound, name in zip(STALE_BOUNDS_MS, STALE_BUCKETS, strict=False):
        if stale_ms < bound:
            return name
    return "ge30s"


def slip_counts(legs: Sequence[Mapping[str, Any]], stale_ms: Sequence[int | None]) -> Counts:
    """The counts one validated slip adds: ``legs`` are the verdicts ``validate_slip``
    returned, ``stale_ms`` one value per leg (None for accepted or unknown)."""
    out = list(ZERO)
    out[_INDEX["slips"]] = 1
    out[_INDEX["legs"]] = len(legs)
    for verdict, late in zip(legs, stale_ms, strict=True):
        if verdict.get("ok"):
            out[_INDEX["accepted"]] += 1
            continue
        reason = str(verdict.get("reason"))
        if f"rejected_{reason}" in _INDEX:
            out[_INDEX[f"rejected_{reason}"]] += 1
        if reason in STALE_REASONS:
            out[_INDEX[f"stale_{stale_bucket(late)}"]] += 1
    return tuple(out)


_SLIPS, _LEGS, _ACCEPTED = _INDEX["slips"], _INDEX["legs"], _INDEX["accepted"]
_REJECTED_AT = {r: _INDEX[f"rejected_{r}"] for r in REASONS}
_STALE_AT = {b: _INDEX[f"stale_{b}"] for b in STALE_BUCKETS}
_NONE: tuple[int, ...] = ()


def count_slip(total: list[int], legs: Sequence[Mapping[str, Any]]) -> Sequence[int]:
    """Add one validated slip's counts to ``total`` (a mutable vector of :data:`FIELDS`) in
    place, all but the stale buckets of its legs rejected for a :data:`STALE_REASONS`
    reason, and return those legs' positions: each gets its bucket from
    :func:`count_stale` once its ``stale_ms`` is known. Together they add exactly
    :func:`slip_counts` (the recorder sums a whole batch in place, one vector per account
    and time bucket, instead of one tuple per slip)."""
    total[_SLIPS] += 1
    total[_LEGS] += len(legs)
    later: list[int] | None = None
    for i, verdict in enumerate(legs):
        if verdict.get("ok"):
            total[_ACCEPTED] += 1
            continue
        reason = verdict.get("reason")
        at = _REJECTED_AT.get(reason)  # type: ignore[arg-type]
        if at is not None:
            total[at] += 1
        if reason in STALE_REASONS:
            if later is None:
                later = [i]
            else:
                later.append(i)
    return _NONE if later is None else later


def count_accepted(total: list[int], legs: int, slips: int = 1) -> None:
    """:func:`count_slip` for ``slips`` slips whose ``legs`` legs (all of them together)
    were all accepted (each slip's ``ok``)."""
    total[_SLIPS] += slips
    total[_LEGS] += legs
    total[_ACCEPTED] += legs


def count_stale(total: list[int], stale_ms: int | None) -> None:
    """Add one rejected leg's stale bucket (:func:`count_slip` left it out) to ``total``."""
    total[_STALE_AT[stale_bucket(stale_ms)]] += 1


def add(a: Sequence[int], b: Sequence[int]) -> Counts:
    """Element-wise sum of two count vectors (a shorter one is padded with zeros)."""
    n = max(len(a), len(b), len(FIELDS))
    return tuple((a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(n))


def as_map(counts: Sequence[int]) -> dict[str, int]:
    """The counts by field name (what the HTTP API shows)."""
    return {name: int(counts[i]) if i < len(counts) else 0 for i, name in enumerate(FIELDS)}


def score(counts: Sequence[int]) -> float:
    """The account's score in [0, 100) (formula in the module docstring), rounded to 0.01."""
    c = as_map(counts)
    bad = sum(w * c[f"stale_{b}"] for b, w in zip(STALE_BUCKETS, STALE_WEIGHTS, strict=True))
    bad += BEAT_WEIGHT * c["beat"]
    legs = max(c["legs"], 0)
    value = 100.0 * max(bad, 0.0) / (legs + PRIOR_LEGS)
    return round(min(value, 99.99), 2)
