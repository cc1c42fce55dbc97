"""The wall clock, read only by adapters and the composition root: the core takes times
as arguments and never reads a clock."""

from __future__ import annotations

import time

__all__ = ["now_ms"]


def now_ms() -> int:
    """Milliseconds since the Unix epoch (the unit of every ``ts`` on the wire and in the
    store)."""
    return int(time.time() * 1000)
