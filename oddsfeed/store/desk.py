"""Desk operations: the event bet stop and bet start, a market's history and an event's
audit trail (the history entries, with their writer).

Every market's suspension (or reopening) is an ordinary versioned change of the apply
script, published as a delta; the event-wide part is one record in the event's slot,
ordered by a counter (``gen``), that the apply script also keeps in each market's slot
(see :mod:`oddsfeed.store.gate` for why no market is missed, even one being created).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis import exceptions as redis_errors

from ..core.book import Changed, Delta, NoOp
from ..core.errors import StoreError
from ..core.model import Market, MarketUpdate
from . import codec
from .codec import bet_stop_key, creating_key, event_set_key, history_key
from .gate import SWITCH
from .outcomes import outcome_name
from .redis_store import MAX_VERSION, Store


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


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One version of a market as its history keeps it: who made it, when, what changed.

    ``changes`` is the wire form: for ``op == "created"`` the whole market, for ``"delta"``
    the changed market fields and ``sel``. ``writer`` is the update's source (a feed's
    name, or ``desk:<subject>`` for the HTTP API; empty when none was given).
    """

    market: str
    version: int
    ts: int
    applied_us: int
    op: str
    writer: str
    changes: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        return {"market": self.market, "version": self.version, "ts": self.ts, "op": self.op,
                "writer": self.writer, "changes": self.changes}


_DELTA_KEYS = ("op", "m", "e", "v", "base", "ts", "t")


def _entry(mid: str, fields: list[bytes]) -> HistoryEntry:
    got = dict(zip(fields[::2], fields[1::2]))
    obj = codec.unpack(got[b"d"])
    writer = got.get(b"w", b"").decode()
    if obj.get("op") == "created":
        market = Market.from_store(obj["market"])
        return HistoryEntry(mid, market.version, market.ts, int(obj.get("t") or 0), "created",
                            writer, market.to_wire())
    delta = Delta.from_store(obj).to_wire()
    changes = {k: v for k, v in delta.items() if k not in _DELTA_KEYS}
    return HistoryEntry(mid, int(obj["v"]), int(obj["ts"]), int(obj.get("t") or 0), "delta",
                        writer, changes)


async def market_history(store: Store, market: str, *, limit: int,
                         before: int | None = None) -> list[HistoryEntry]:
    """The market's kept versions, newest first: at most ``limit`` of them, all below
    version ``before`` when given. Raises StoreError if the store fails."""
    top = "+" if before is None else f"({min(before, MAX_VERSION)}-0"
    try:
        raw = await store.client.xrevrange(history_key(market), top, "-", count=limit)
    except (redis_errors.RedisError, OSError) as exc:
        raise StoreError(f"history read failed for market {market}: {exc}") from None
    return [_entry(market, fields) for _id, fields in _pairs(raw)]


def _pairs(raw: Any) -> list[tuple[bytes, list[bytes]]]:
    # redis-py answers stream entries as (id, {field: value}) pairs; flatten the map.
    out: list[tuple[bytes, list[bytes]]] = []
    for entry_id, fields in raw:
        flat = [x for kv in fields.items() for x in kv] if isinstance(fields, dict) else fields
        out.append((entry_id, list(flat)))
    return out


async def event_audit(store: Store, event: str, *, limit: int) -> list[HistoryEntry]:
    """The ``limit`` most recent changes across the event's markets, newest ``ts`` first
    (each market's ``limit`` newest entries read in one pipelined round trip)."""
    ids = await store.event_market_ids(event)
    if not ids:
        return []
    try:
        pipe: Any = store.client.pipeline(transaction=False)
        for mid in ids:
            pipe.xrevrange(history_key(mid), "+", "-", count=limit)
        replies = await pipe.execute()
    except (redis_errors.RedisError, OSError) as exc:
        raise StoreError(f"audit read failed for event {event}: {exc}") from None
    entries = [_entry(mid, fields) for mid, raw in zip(ids, replies)
               for _id, fields in _pairs(raw)]
    entries.sort(key=lambda e: (e.ts, e.applied_us, e.market, e.version), reverse=True)
    return entries[:limit]
