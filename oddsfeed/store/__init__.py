"""The Redis/Valkey store adapter: the one atomic write path, reads, history and the bus.

See docs/internals.md for the key layout and the payloads. Works against a single server
and against Redis Cluster (every key of a market shares the hash tag ``{m:<id>}``).
"""

from .bus import Bus
from .codec import Announced, Gone, decode_payload
from .desk import BetStopResult, HistoryEntry, event_audit, market_history, set_bet_stop
from .idempotency import IdempotencyRecord, IdempotencyStoreError, record_key
from .outcomes import OutOfOrder, Precondition, StoreOutcome, outcome_name
from .redis_store import Store
from .risk import RiskCounts
from .risk_due import DueQueue

__all__ = [
    "Announced",
    "BetStopResult",
    "Bus",
    "DueQueue",
    "Gone",
    "HistoryEntry",
    "IdempotencyRecord",
    "IdempotencyStoreError",
    "OutOfOrder",
    "Precondition",
    "RiskCounts",
    "Store",
    "StoreOutcome",
    "decode_payload",
    "event_audit",
    "market_history",
    "outcome_name",
    "record_key",
    "set_bet_stop",
]
