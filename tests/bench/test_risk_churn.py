"""The churn harness measures the path it means to: its slips are accepted one-leg slips,
each queued whole for the counts and the beat signal."""

from __future__ import annotations

from bench.risk_churn import _frames, _maps, _Metrics, _slip, _Store
from oddsfeed.clock import now_ms
from oddsfeed.services.risk import Beat, RiskQueue


def test_the_churn_harness_offers_accepted_one_leg_slips() -> None:
    """Every slip of the harness is answered ok and lands in the batch's one-leg list."""
    queue = RiskQueue(_Store(), _Metrics(), max_pending=1000,  # type: ignore[arg-type]
                      beat=Beat(None, 10_000, 500, 1000), clock=now_ms)  # type: ignore[arg-type]
    frames, maps = _frames(), _maps()
    for frame in frames:
        assert b'"ok":true' in _slip(queue, frame, maps).replace(b" ", b"")
    batch = queue._batch
    assert (batch.slips, len(batch.one), batch.accepted, batch.dating) == (
        len(frames), 7 * len(frames), [], [])
