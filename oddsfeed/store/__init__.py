"""The Redis/Valkey store adapter: the one atomic write path, reads, history and the bus.

See docs/internals.md for the key layout and the payloads. Works against a single server
and against Redis Cluster (every key of a market shares the hash tag ``{m:<id>}``).
"""

from .bus import Bus
from .codec import Announced, Gone, decode_payload
from .redis_store import OutOfOrder, Precondition, Store, StoreOutcome

__all__ = ["Announced", "Bus", "Gone", "OutOfOrder", "Precondition", "Store", "StoreOutcome",
           "decode_payload"]
