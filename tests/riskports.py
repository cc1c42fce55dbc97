"""A recording stand-in for the risk recorder's metrics port (``services.risk.RiskMetrics``),
shared by the recorder's tests: what it was told, kept for the assertions."""

from __future__ import annotations

from typing import Any


class RiskMetrics:
    """Remembers the drops (by reason), the slips recorded and the legs and beats judged."""

    def __init__(self) -> None:
        self.why: list[str] = []
        self.slips = 0
        self.judged_legs = 0
        self.beats = 0

    def recorded(self, slips: int, stale_ms: Any, reasons: Any) -> None:
        self.slips += slips

    def dropped(self, why: str, n: int = 1) -> None:
        self.why += [why] * n

    def judged(self, legs: int, beats: int) -> None:
        self.judged_legs += legs
        self.beats += beats
