"""Feed health in the store: each ingest source's latest report, one field per source of
the hash ``of:feeds``, entries not refreshed for an hour dropped. It owns no market state
and decides nothing about markets (the apply script does); it only lets a desk see feeds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from redis import exceptions as redis_errors

from ..core.errors import StoreError
from .redis_store import Store

FEEDS_KEY = "of:feeds"
PERIOD_MS = 1_000  # a runner publishes its entry about this often
STALE_AFTER_MS = 3 * PERIOD_MS  # an entry not refreshed for this long: its ingester is gone
DROP_AFTER_MS = 3_600_000  # an entry not refreshed for this long is deleted

# KEYS: 1 the feeds hash; ARGV: 1 source, 2 entry (JSON), 3 cutoff (ms): entries updated
# before it are deleted. One hash of a few dozen sources: reading it whole stays cheap.
_PUBLISH = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local cutoff = tonumber(ARGV[3])
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local ok, e = pcall(cjson.decode, all[i + 1])
  if not ok or type(e) ~= 'table' or (tonumber(e.updated_ms) or 0) < cutoff then
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return 0
"""


@dataclass(frozen=True, slots=True)
class FeedHealth:
    """One source's health as its runner last published it (times in unix ms, from the
    runner's clock). ``last_message_ms`` is 0 while the source has sent nothing."""

    source: str
    last_message_ms: int
    lag_ms: int
    markets: int
    suspended_for_silence: int
    updated_ms: int
    priority: int = 0

    def to_json(self) -> str:
        return json.dumps({"source": self.source, "last_message_ms": self.last_message_ms,
                           "lag_ms": self.lag_ms, "markets": self.markets,
                           "suspended_for_silence": self.suspended_for_silence,
                           "updated_ms": self.updated_ms, "priority": self.priority},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> FeedHealth | None:
        """The entry, or None when ``raw`` is not one (skipped by readers)."""
        try:
            obj = json.loads(raw)
            return cls(source=str(obj["source"]), last_message_ms=int(obj["last_message_ms"]),
                       lag_ms=int(obj["lag_ms"]), markets=int(obj["markets"]),
                       suspended_for_silence=int(obj["suspended_for_silence"]),
                       updated_ms=int(obj["updated_ms"]), priority=int(obj.get("priority", 0)))
        except (ValueError, TypeError, KeyError, AttributeError):
            return None

    def view(self, now_ms: int) -> dict[str, Any]:
        """The wire form of ``GET /v1/desk/feeds``: ``age_ms`` since the source's last
        message (None if it sent none), ``stale`` once the entry is older than
        :data:`STALE_AFTER_MS` (its ingester stopped publishing)."""
        return {"source": self.source,
                "age_ms": max(0, now_ms - self.last_message_ms) if self.last_message_ms
                else None,
                "lag_ms": self.lag_ms, "markets": self.markets,
                "suspended_for_silence": self.suspended_for_silence,
                "stale": now_ms - self.updated_ms > STALE_AFTER_MS, "priority": self.priority}


async def publish_feed_health(store: Store, entry: FeedHealth) -> None:
    """Write ``entry`` as its source's field and drop entries not refreshed within
    :data:`DROP_AFTER_MS` of it, in one step. Raises StoreError if the store fails."""
    try:
        await store.client.eval(_PUBLISH, 1, FEEDS_KEY, entry.source, entry.to_json(),
                                entry.updated_ms - DROP_AFTER_MS)
    except (redis_errors.RedisError, OSError) as exc:
        raise StoreError(f"feed health write failed for {entry.source}: {exc}") from None


async def feed_health(store: Store, *, now_ms: int) -> list[FeedHealth]:
    """Every source's entry refreshed within :data:`DROP_AFTER_MS` of ``now_ms``, by
    priority then source. Raises StoreError if the store fails."""
    try:
        raw: dict[Any, Any] = await store.client.hgetall(FEEDS_KEY)
    except (redis_errors.RedisError, OSError) as exc:
        raise StoreError(f"feed health read failed: {exc}") from None
    entries = [e for e in map(FeedHealth.from_json, raw.values())
               if e is not None and now_ms - e.updated_ms <= DROP_AFTER_MS]
    return sorted(entries, key=lambda e: (e.priority, e.source))
