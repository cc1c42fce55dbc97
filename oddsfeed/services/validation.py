"""The bet-slip validation service shared by the HTTP route and the WebSocket op: reads
the store (never a cache), waits the in-play delay without blocking, decides with
:mod:`oddsfeed.core.betslip`, and counts the verdicts through its metrics port. It holds
no state between calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from ..core.betslip import Record, check_slip, delay_ms, pin_legs
from ..core.wire import Leg


class ValidationMetrics(Protocol):
    """Where the verdicts are counted: one call per slip, after it was decided."""

    def record(self, body: dict[str, Any], *, delayed: bool, seconds: float) -> None: ...


class _Uncounted:
    def record(self, body: dict[str, Any], *, delayed: bool, seconds: float) -> None:
        pass


UNCOUNTED: ValidationMetrics = _Uncounted()


class _Reader(Protocol):
    async def get_for_validation(self, ids: Sequence[str]) -> dict[str, Record | None]: ...


async def validate_slip(store: _Reader, legs: Sequence[Leg], accept: str, *,
                        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                        metrics: ValidationMetrics = UNCOUNTED) -> dict[str, Any]:
    """The ``validation`` reply body ``{ok, legs}`` for a slip (protocol.md section 4).

    Call it once per slip, from the HTTP route or the WebSocket ``validate`` op. All legs'
    markets are read in one pipelined round trip (each market atomically, with its
    suspension record). When a leg's market is in play with a bet delay, the answer waits
    the longest such delay with ``sleep`` (the event loop keeps running), reads again and
    checks every leg as if it carried the (epoch, version) current on arrival: a suspension
    at any moment inside the delay is then ``market_changed``, decided from the store's
    ``susp_v`` record rather than by polling. A leg refused on arrival stays refused.
    The verdict is counted in ``metrics``.
    Raises StoreError if the store fails; the caller answers 503 / ``internal``.
    """
    started = time.perf_counter()
    ids = [leg.market for leg in legs]
    records = await store.get_for_validation(ids)
    wait = delay_ms(legs, records)
    if wait <= 0:
        body = check_slip(legs, records, accept)
    else:
        first = check_slip(legs, records, accept)
        pinned = pin_legs(legs, records)
        await sleep(wait / 1000)
        body = check_slip(pinned, await store.get_for_validation(ids), accept)
        # A leg refused on arrival stays refused (for the reason seen now, if any).
        for a, b in zip(first["legs"], body["legs"], strict=True):
            if not a["ok"] and b["ok"]:
                b["ok"] = False
                b["reason"] = a["reason"]
        body["ok"] = all(leg["ok"] for leg in body["legs"])
    metrics.record(body, delayed=wait > 0, seconds=time.perf_counter() - started)
    return body
