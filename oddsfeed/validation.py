"""The bet-slip validation service shared by the HTTP route and the WebSocket op: reads
the store (never a cache), waits the in-play delay without blocking, decides with
:mod:`oddsfeed.betslip`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from .betslip import Record, check_slip, delay_ms, pin_legs
from .wire import Leg


class _Reader(Protocol):
    async def get_for_validation(self, ids: Sequence[str]) -> dict[str, Record | None]: ...


async def validate_slip(store: _Reader, legs: Sequence[Leg], accept: str, *,
                        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
                        ) -> dict[str, Any]:
    """The ``validation`` reply body ``{ok, legs}`` for a slip (protocol.md section 4).

    All legs' markets are read in one pipelined round trip; when a leg's market is in play
    with a bet delay, the answer waits the longest delay and every leg is checked again
    as if it carried the version current on arrival. Raises StoreError if the store fails.
    """
    ids = [leg.market for leg in legs]
    records = await store.get_for_validation(ids)
    wait = delay_ms(legs, records)
    if wait <= 0:
        return check_slip(legs, records, accept)
    first = check_slip(legs, records, accept)
    pinned = pin_legs(legs, records)
    await sleep(wait / 1000)
    later = await store.get_for_validation(ids)
    second = check_slip(pinned, later, accept)
    # A leg refused on arrival stays refused (for the reason seen now, if any).
    for a, b in zip(first["legs"], second["legs"], strict=True):
        if not a["ok"] and b["ok"]:
            b["ok"] = False
            b["reason"] = a["reason"]
    second["ok"] = all(leg["ok"] for leg in second["legs"])
    return second
