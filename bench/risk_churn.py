"""What the risk recorder adds to a WebSocket validation's own CPU, in-process, with the
request's allocations around it: per slip a JSON frame decoded into fresh legs, the
market's store map unpacked into a record, the verdict built, ``offer`` called and the
reply encoded, as the server does (no network, no store); every ``BATCH`` slips the
recorder's batch is taken and folded as its task would (no store writes). Recorder off
and on alternate over the rounds; the figure is the on - off CPU per slip (median).

Unlike ``bench.risk_legs`` (``offer`` in a tight loop over the same few objects), this
shows what ``offer`` and the batch it keeps cost the request path around them: the
request's own objects are freed as it ends, and whatever the batch keeps of them is not.

    python -m bench.risk_churn      (or: PYTHONPATH=TREE python bench/risk_churn.py)

``BENCH_ROUNDS`` (default 12) rounds of ``BENCH_BATCHES`` (default 4) batches per setting.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from typing import Any

import msgpack

from oddsfeed.clock import now_ms
from oddsfeed.core.betslip import check_slip, record_from_store
from oddsfeed.core.wire import JSON, Validate, decode_request, encode
from oddsfeed.services.risk import Beat, RiskQueue
from oddsfeed.worker import tune_gc

BATCH = 4500  # half a second of the WebSocket row's ~9,000 slips/s
MARKETS = 20
FOLD = os.environ.get("BENCH_FOLD", "1") != "0"  # 0: batches are dropped, not folded


class _Store:
    grain_ms = 5000


class _Metrics:
    def recorded(self, slips: int, stale_ms: Any, reasons: Any) -> None:
        pass

    def dropped(self, why: str, n: int = 1) -> None:
        pass

    def judged(self, legs: int, beats: int) -> None:
        pass


def _frames() -> list[bytes]:
    return [json.dumps({"op": "validate", "id": n, "legs": [
        {"market": f"m{n % MARKETS}", "selection": "h", "price": "2.5", "version": 7}]}).encode()
        for n in range(MARKETS * 5)]


def _maps() -> dict[str, bytes]:
    return {f"m{i}": msgpack.packb({"epoch": "e1", "version": 7, "status": "open",
                                    "selections": {"h": {"price": 25000},
                                                   "a": {"price": 30000}}})
            for i in range(MARKETS)}


def _slip(queue: RiskQueue | None, frame: bytes, maps: dict[str, bytes]) -> bytes:
    """One WebSocket validation as the server makes it, offered to ``queue`` (if any)."""
    arrived = now_ms()
    req = decode_request(frame, JSON)
    assert isinstance(req, Validate)
    legs = req.legs
    records = {leg.market: record_from_store(msgpack.unpackb(maps[leg.market]))
               for leg in legs}
    body = check_slip(legs, records, "exact")
    if queue is not None:
        queue.offer("bench", legs, body, now_ms(), arrived)
    return encode({"op": "validation", "id": req.id, **body}, JSON)


def _run(queue: RiskQueue | None, batches: int, frames: list[bytes], maps: dict[str, bytes]
         ) -> float:
    """CPU µs per slip of ``batches`` batches of slips (recorder off when ``queue`` is
    None)."""
    nframes = len(frames)
    t0 = time.process_time()
    for b in range(batches):
        for n in range(BATCH):
            _slip(queue, frames[(b * BATCH + n) % nframes], maps)
        if queue is not None:
            batch, queue._batch = queue._batch, type(queue._batch)(True, 5000)
            if FOLD:
                batch.fold()
    return (time.process_time() - t0) / (batches * BATCH) * 1e6


def run() -> dict[str, Any]:
    rounds = int(os.environ.get("BENCH_ROUNDS", 12))
    batches = int(os.environ.get("BENCH_BATCHES", 4))
    tune_gc(10_000)  # as the worker tunes its collector
    frames, maps = _frames(), _maps()
    queue = RiskQueue(_Store(), _Metrics(), max_pending=10 * BATCH,  # type: ignore[arg-type]
                      beat=Beat(None, 10_000, 500, 1000), clock=now_ms)  # type: ignore[arg-type]
    _run(queue, 1, frames, maps)
    _run(None, 1, frames, maps)
    offs: list[float] = []
    ons: list[float] = []
    for r in range(rounds):
        order = (None, queue) if r % 2 == 0 else (queue, None)
        for q in order:
            (offs if q is None else ons).append(_run(q, batches, frames, maps))
    diffs = [b - a for a, b in zip(offs, ons, strict=True)]
    return {"off_us": round(statistics.median(offs), 3), "on_us": round(statistics.median(ons), 3),
            "on_minus_off_us": round(statistics.median(diffs), 3),
            "diffs": [round(d, 2) for d in diffs]}


if __name__ == "__main__":
    json.dump(run(), sys.stdout)
    print()
