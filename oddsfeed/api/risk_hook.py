"""Where a risk threshold crossing goes: one structured log event
(``risk_threshold_crossed``) and, when ``risk.webhook_url`` is set, one JSON POST to it.

The POST runs in its own task with a bounded timeout; at most ``max_inflight`` run at once
(a crossing past that is not posted, counted); a failure is counted and logged, never
retried, and nothing waits on it (not the recorder, never a validation).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import structlog
from prometheus_client import Counter

from ..core.risk import Counts, as_map

log = structlog.get_logger("oddsfeed.risk")

CROSSED = Counter("oddsfeed_risk_threshold_crossed_total",
                  "accounts whose risk score crossed the alert threshold in a window")
WEBHOOK = Counter("oddsfeed_risk_webhook_total", "risk webhook posts, by outcome",
                  ["outcome"])
OVERFLOW = Counter("oddsfeed_risk_watch_dropped_total",
                   "accounts left unchecked against the threshold (pending set full)")


class ThresholdAlerts:
    """Logs every crossing and posts it to ``url`` (empty: log only)."""

    def __init__(self, url: str, *, timeout_s: float, max_inflight: int) -> None:
        self.url = url
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.max_inflight = max_inflight
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    def crossed(self, sub: str, window_s: int, score: float, counts: Counts) -> None:
        detail = as_map(counts)
        log.warning("risk_threshold_crossed", sub=sub, window_s=window_s, score=score,
                    counts=detail)
        CROSSED.inc()
        if not self.url:
            return
        if len(self._tasks) >= self.max_inflight:
            WEBHOOK.labels("dropped").inc()
            return
        body = {"event": "risk_threshold_crossed", "sub": sub, "window_s": window_s,
                "score": score, "counts": detail}
        task = asyncio.get_running_loop().create_task(self._post(body), name="risk-webhook")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def overflow(self) -> None:
        OVERFLOW.inc()

    async def _post(self, body: dict[str, Any]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        try:
            async with self._session.post(self.url, json=body) as resp:
                await resp.read()
                ok = 200 <= resp.status < 300
        except (aiohttp.ClientError, TimeoutError) as exc:
            ok = False
            log.warning("risk.webhook_failed", error=type(exc).__name__)
        else:
            if not ok:
                log.warning("risk.webhook_failed", status=resp.status)
        WEBHOOK.labels("ok" if ok else "failed").inc()

    async def close(self) -> None:
        """Wait for the posts in flight (each bounded by the timeout), then close."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
