"""Desk operations over many markets at once: the event bet stop and bet start.

Every market's suspension (or reopening) is an ordinary versioned change of the apply
script, published as a delta; the event-wide part is one record in the event's slot,
ordered by a counter (``gen``), that the apply script also keeps in each market's slot
(see :mod:`oddsfeed.store.gate` for why no market is missed, even one being created).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis import exceptions as redis_errors

from ..core.book import Changed, NoOp
from ..core.errors import StoreError
from ..core.model import MarketUpdate
from .codec import bet_stop_key, creating_key, event_set_key
from .gate import SWITCH
from .redis_store import Store, outcome_name


@dataclass(frozen=True, slots=True)
class BetStopResult:
    """The record's ``gen`` and each existing market of the event with its version after."""

    event: str
    stopped: bool
    markets: list[tuple[str, int]]


async def set_bet_stop(store: Store, event: str, *, stopped: bool, source: str, ts: int
                       ) -> BetStopResult:
    """Stop (``stopped=True``) or restart betting on every market of ``event``.

    Returns once every market's apply has been acknowledged by its shard: from then on a
    bet stop holds every market of the event (and any created later) suspended until a bet
    start, which reopens only the markets the bet stop held. Raises StoreError if the store
    fails (the call can be retried: a retry is a newer record).
    """
    try:
        gen, raw_ids = await store.client.eval(
            SWITCH, 3, event_set_key(event), bet_stop_key(event), creating_key(event),
            "1" if stopped else "0")
    except (redis_errors.RedisError, OSError) as exc:
        raise StoreError(f"bet stop failed for event {event}: {exc}") from None
    ids = sorted({x.decode() if isinstance(x, bytes) else str(x) for x in raw_ids})
    record = f"{int(gen)}:{1 if stopped else 0}"
    mode = "stop" if stopped else "start"
    updates = [MarketUpdate(market=mid, ts=ts, source=source) for mid in ids]
    calls = [store._apply_args(u, None, None, record, mode) for u in updates]
    replies: list[Any] = await store._run(calls, ids)
    markets: list[tuple[str, int]] = []
    for mid, reply in zip(ids, replies):
        outcome = store._outcome(mid, reply)
        if isinstance(outcome, Changed | NoOp):
            markets.append((mid, outcome.market.version))
        elif outcome_name(outcome) != "rejected":  # rejected: not created (yet): record kept
            raise StoreError(f"bet stop of market {mid}: unexpected {outcome_name(outcome)}")
    return BetStopResult(event, stopped, markets)
