"""The bet-slip validation service shared by the HTTP route and the WebSocket op: reads
the store (never a cache), waits the in-play delay without blocking, decides with
:mod:`oddsfeed.betslip`, and counts the verdicts. It holds no state between calls."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from prometheus_client import Counter, Histogram

from .betslip import Record, check_slip, delay_ms, pin_legs
from .wire import Leg

LEGS = Counter("oddsfeed_validations_total", "bet-slip legs validated, by result and reason",
               ["result", "reason"])
SLIPS = Counter("oddsfeed_bet_slips_total", "bet slips validated, by result", ["result"])
SECONDS = Histogram("oddsfeed_validation_seconds",
                    "bet-slip validation time (store reads, plus the in-play delay if any)",
                    ["delayed"],
                    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 2.5,
                             5, 10, 30, 61))


# Label children looked up once: .labels() costs more than the increment.
@functools.cache
def _legs(ok: bool, reason: str) -> Any:
    return LEGS.labels("accepted" if ok else "rejected", reason)


@functools.cache
def _slips(ok: bool) -> Any:
    return SLIPS.labels("accepted" if ok else "rejected")


@functools.cache
def _seconds(delayed: bool) -> Any:
    return SECONDS.labels("true" if delayed else "false")


class _Reader(Protocol):
    async def get_for_validation(self, ids: Sequence[str]) -> dict[str, Record | None]: ...


async def validate_slip(store: _Reader, legs: Sequence[Leg], accept: str, *,
                        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
                        ) -> dict[str, Any]:
    """The ``validation`` reply body ``{ok, legs}`` for a slip (protocol.md section 4).

    Call it once per slip, from the HTTP route or the WebSocket ``validate`` op. All legs'
    markets are read in one pipelined round trip (each market atomically, with its
    suspension record). When a leg's market is in play with a bet delay, the answer waits
    the longest such delay with ``sleep`` (the event loop keeps running), reads again and
    checks every leg as if it carried the (epoch, version) current on arrival: a suspension
    at any moment inside the delay is then ``market_changed``, decided from the store's
    ``susp_v`` record rather than by polling. A leg refused on arrival stays refused.
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
    for leg in body["legs"]:
        _legs(leg["ok"], leg.get("reason", "")).inc()
    _slips(body["ok"]).inc()
    _seconds(wait > 0).observe(time.perf_counter() - started)
    return body
