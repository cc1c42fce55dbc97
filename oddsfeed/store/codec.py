"""Keys, channels and payload decoding of the store layout (docs/internals.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgpack

from ..core.book import Delta
from ..core.errors import InvalidInput
from ..core.model import Market
from .published import MARK, decode_published

# Every key and channel of one market (or event) carries the same hash tag, so a cluster
# puts them in one slot and the apply script may touch them in one call.
_MARKET_TAG = "of:{m:"
_EVENT_TAG = "of:{e:"
_CHANNEL = "}:c"


def state_key(market: str) -> str:
    return f"{_MARKET_TAG}{market}}}"


def meta_key(market: str) -> str:
    return f"{state_key(market)}:meta"


def history_key(market: str) -> str:
    return f"{state_key(market)}:h"


def market_channel(market: str) -> str:
    return f"{_MARKET_TAG}{market}{_CHANNEL}"


def event_set_key(event: str) -> str:
    return f"{_EVENT_TAG}{event}}}:m"


def event_channel(event: str) -> str:
    return f"{_EVENT_TAG}{event}{_CHANNEL}"


def bet_stop_key(event: str) -> str:
    """The event's bet-stop record: a hash of ``gen`` (a counter) and ``on`` (0 or 1)."""
    return f"of:{{e:{event}}}:bs"


def creating_key(event: str) -> str:
    """Markets of the event being created right now: a hash of id -> creators in flight."""
    return f"of:{{e:{event}}}:new"


def sport_set_key(sport: str) -> str:
    return f"of:sport:{sport}"


ALL_MARKETS_KEY = "of:markets"
_CHANNEL_KINDS = ((_MARKET_TAG, "market"), (_EVENT_TAG, "event"))
PUBLISHED_MARK = bytes((MARK,))  # a delta in its published form (published.py)


def parse_channel(channel: str) -> tuple[str, str] | None:
    """``("market", id)`` or ``("event", id)`` for one of our channels, else None."""
    if channel.endswith(_CHANNEL):
        for tag, kind in _CHANNEL_KINDS:
            if channel.startswith(tag):
                return kind, channel[len(tag):-len(_CHANNEL)]
    return None


@dataclass(frozen=True, slots=True)
class Gone:
    """The market was deleted (or lost): subscribers get ``gone``."""

    market: str


@dataclass(frozen=True, slots=True)
class Announced:
    """A market was created under an event (payload of an event channel)."""

    market: str


T = TypeVar("T")


class DecodeMemo(Generic[T]):
    """``decode`` of a stored payload, kept by the payload's exact bytes for the next read
    of the same bytes (an unchanged market read again). Not a cache of the store: every
    value still comes from bytes just read, and equal bytes decode to equal values. The
    values are shared between callers, so ``decode`` must return immutable ones. Holds at
    most ``size`` payloads (emptied when full); a decode that raises keeps nothing."""

    def __init__(self, decode: Callable[[bytes], T], size: int = 1024) -> None:
        self._decode = decode
        self._size = size
        self._kept: dict[bytes, T] = {}

    def __call__(self, raw: bytes) -> T:
        value = self._kept.get(raw)
        if value is None:
            value = self._decode(raw)
            if len(self._kept) >= self._size:
                self._kept.clear()
            self._kept[raw] = value
        return value


def unpack(data: bytes) -> dict[str, Any]:
    obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
    if not isinstance(obj, dict):
        raise InvalidInput("store payload is not a map")
    return obj


def decode_payload(data: bytes) -> tuple[Delta | Market | Gone | Announced, int]:
    """Decode one channel payload into (message, apply time in µs or 0).

    Raises InvalidInput on a payload that is not ours.
    """
    if data[:1] == PUBLISHED_MARK:
        return decode_published(data)
    try:
        obj = unpack(data)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise InvalidInput(f"bad store payload: {type(exc).__name__}") from None
    op = obj.get("op")
    t = int(obj.get("t") or 0)
    if op == "delta":
        return Delta.from_store(obj), t
    if op == "created":
        return Market.from_store(obj["market"]), t
    if op == "gone":
        return Gone(str(obj["m"])), 0
    if op == "market":
        return Announced(str(obj["m"])), 0
    raise InvalidInput(f"unknown store payload op {str(op)[:40]!r}")


def decode_history(res: Any, epoch: str, after_version: int
                   ) -> tuple[Market, list[Delta]] | None:
    """The market and its deltas after ``after_version`` in ``epoch`` from the reply of
    history.lua (state, the stream's first entry, the entries read), or None when they do
    not cover that position gap-free (see :meth:`Store.history`)."""
    if not res or not res[0]:
        return None
    market = Market.from_store(unpack(res[0]))
    if market.epoch != epoch or after_version > market.version or after_version < 1:
        return None
    first, entries = res[1], res[2]
    if not first:
        return None
    oldest = int(first[0][0].split(b"-")[0])
    if after_version + 1 < oldest:
        return None  # trimmed: versions after after_version are no longer all there
    deltas: list[Delta] = []
    expected = after_version + 1
    for _entry_id, fields in entries:
        obj = unpack(dict(zip(fields[::2], fields[1::2]))[b"d"])
        if obj.get("op") != "delta":
            return None
        d = Delta.from_store(obj)
        if d.version != expected or d.epoch != epoch:
            return None
        deltas.append(d)
        expected += 1
    if expected - 1 < market.version:
        return None  # more than the read's cap behind: a snapshot is cheaper
    return market, deltas
