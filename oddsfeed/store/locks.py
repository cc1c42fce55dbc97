"""Price locks and the desk's view of a market: its locks, what they refused, the feed
driving it and every feed that wrote it (docs/protocol.md section 6).

A lock or unlock is a desk's versioned apply of the one apply script (a new version whose
delta carries ``locks``); the script drops a feed's update of locked fields and counts it
in the market's meta hash, which :func:`desk_markets` reads beside the market.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
from redis import exceptions as redis_errors

from ..core.errors import StoreError
from ..core.model import Market, MarketUpdate
from . import codec
from .codec import meta_key, state_key
from .outcomes import StoreOutcome
from .redis_store import Store


async def set_locks(store: Store, market: str, *, on: bool, selections: Sequence[str] | None,
                    source: str, ts: int, expect: tuple[str, int] | None = None
                    ) -> StoreOutcome:
    """Lock (``on``) or unlock ``selections`` of ``market`` (None: the whole market; an
    unlock of the whole market releases every lock of it). Returns the apply's outcome:
    Changed with ``locks`` in its delta, NoOp when the locks were already so, Rejected
    (unknown market or selection, settled), Precondition. Raises StoreError."""
    lock: dict[str, Any] = {"on": on}
    if selections is not None:
        lock["sels"] = list(dict.fromkeys(selections))
    update = MarketUpdate(market=market, ts=ts, source=source)
    call = store._apply_args(update, expect, None, extra={"lock": lock})
    (reply,) = await store._run([call], [market])
    return store._outcome(market, reply)


@dataclass(frozen=True, slots=True)
class FeedSeen:
    """A feed that wrote the market: its priority and when the store last saw it."""

    source: str
    priority: int
    last_seen_ms: int


@dataclass(frozen=True, slots=True)
class DeskMarket:
    """A market as the desk sees it: the market, its locks, the feed updates each lock
    refused (selection id, or ``*`` for the whole market), its driver and its feeds."""

    market: Market
    locked_market: bool = False
    locked: tuple[str, ...] = ()
    refused: dict[str, int] = field(default_factory=dict)
    driver: str | None = None
    feeds: tuple[FeedSeen, ...] = ()

    def to_wire(self, now: int) -> dict[str, Any]:
        m = self.market
        return {
            "market": m.id, "event": m.event, "epoch": m.epoch, "version": m.version,
            "status": m.status,
            "locks": {"market": self.locked_market, "selections": list(self.locked)},
            "refused": dict(self.refused), "driver": self.driver,
            "sources": [{"source": f.source, "priority": f.priority,
                         "last_seen_ms": f.last_seen_ms,
                         "age_ms": max(0, now - f.last_seen_ms)} for f in self.feeds],
        }


def _text(x: bytes | str) -> str:
    return x.decode() if isinstance(x, bytes) else x


def _desk_market(raw: bytes, meta: dict[Any, Any]) -> DeskMarket:
    market = Market.from_store(codec.unpack(raw))
    got = {_text(k): v for k, v in meta.items()}
    locked_market, locked = False, ()
    if got.get("lk"):
        lk = msgpack.unpackb(got["lk"], raw=False, strict_map_key=False)
        sels = lk.get("s") or {}
        locked_market = bool(lk.get("m"))
        # a lock of a selection removed since is no lock
        locked = tuple(sorted(s for s in (sels if isinstance(sels, dict) else {})
                              if s in market.selections))
    refused = {k[3:]: int(v) for k, v in sorted(got.items()) if k.startswith("rf:")}
    feeds: tuple[FeedSeen, ...] = ()
    if got.get("fd"):
        fd = msgpack.unpackb(got["fd"], raw=False, strict_map_key=False)
        if isinstance(fd, dict):
            feeds = tuple(sorted((FeedSeen(str(k), int(v[0]), int(v[1])) for k, v in fd.items()),
                                 key=lambda f: (f.priority, f.source)))
    driver = _text(got["drv"]) if got.get("drv") else None
    return DeskMarket(market, locked_market, locked, refused, driver, feeds)


async def desk_markets(store: Store, ids: Sequence[str]) -> dict[str, DeskMarket | None]:
    """The desk's view of each market (None: no such market), in one pipelined round trip
    (each market's state and meta hash share its slot). Raises StoreError."""
    wanted = list(dict.fromkeys(ids))
    try:
        pipe: Any = store.client.pipeline(transaction=False)
        for mid in wanted:
            pipe.get(state_key(mid))
            pipe.hgetall(meta_key(mid))
        replies = await pipe.execute()
    except (redis_errors.RedisError, OSError) as exc:
        raise StoreError(f"desk read failed: {exc}") from None
    out: dict[str, DeskMarket | None] = {}
    for i, mid in enumerate(wanted):
        raw, meta = replies[2 * i], replies[2 * i + 1]
        out[mid] = _desk_market(raw, meta or {}) if raw else None
    return out
