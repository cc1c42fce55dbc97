"""The Redis/Valkey store adapter: the one atomic write path, reads, history and the bus.

See docs/internals.md for the key layout and the payloads. Works against a single server
and against Redis Cluster (every key of a market shares the hash tag ``{m:<id>}``).
"""

from .bus import Bus
from .codec import PUBLISHED_MARK, Announced, Gone, decode_payload
from .desk import BetStopResult, HistoryEntry, event_audit, market_history, set_bet_stop
from .feeds import FeedHealth, feed_health, publish_feed_health
from .idempotency import IdempotencyRecord, IdempotencyStoreError, record_key
from .locks import DeskMarket, FeedSeen, desk_markets, set_locks
from .outcomes import Applied, Head, OutOfOrder, Precondition, Standby, StoreOutcome, outcome_name
from .published import LiveDelta, live_delta
from .redis_store import Store
from .risk import RiskCounts
from .risk_due import DueQueue

__all__ = [
    "PUBLISHED_MARK",
    "Announced",
    "Applied",
    "BetStopResult",
    "Bus",
    "DeskMarket",
    "DueQueue",
    "FeedHealth",
    "FeedSeen",
    "Gone",
    "Head",
    "HistoryEntry",
    "IdempotencyRecord",
    "IdempotencyStoreError",
    "LiveDelta",
    "OutOfOrder",
    "Precondition",
    "RiskCounts",
    "Standby",
    "Store",
    "StoreOutcome",
    "decode_payload",
    "desk_markets",
    "event_audit",
    "feed_health",
    "live_delta",
    "market_history",
    "outcome_name",
    "publish_feed_health",
    "record_key",
    "set_bet_stop",
    "set_locks",
]
