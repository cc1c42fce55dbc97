"""The risk threshold watch: finds the accounts whose score in a window crossed the alert
threshold and raises one alert per crossing.

Only a new stale rejection or a beat can raise a score, so the recorder hands over just the
accounts that got one; they are checked together at most once per ``min_interval_ms`` per
process (the rest wait in a bounded pending set), against the counts summed over every
worker. The store's mark (set once, by one worker) makes a crossing fire once; the mark
goes when the account is seen under the threshold again, or with the window.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..core.risk import Counts, score


class ScoreStore(Protocol):
    async def accounts(self, subs: Sequence[str], windows_s: Sequence[int], at_ms: int
                       ) -> dict[tuple[int, str], Counts]: ...

    async def flag(self, window_s: int, above: Sequence[str], below: Sequence[str]
                   ) -> list[str]: ...


class Alerts(Protocol):
    """Where a crossing goes (the adapter logs it and posts the webhook); never waits."""

    def crossed(self, sub: str, window_s: int, score: float, counts: Counts) -> None: ...

    def overflow(self) -> None: ...


class ThresholdWatch:
    """Checks the accounts it is told about against ``threshold`` in every window."""

    def __init__(self, store: ScoreStore, alerts: Alerts, *, windows_s: Sequence[int],
                 threshold: float, min_interval_ms: int, max_pending: int = 10_000) -> None:
        self.store = store
        self.alerts = alerts
        self.windows_s = tuple(windows_s)
        self.threshold = threshold
        self.min_interval_ms = min_interval_ms
        self.max_pending = max_pending
        self._pending: dict[str, None] = {}
        self._last_ms: int | None = None

    async def check(self, subs: Sequence[str], at_ms: int) -> None:
        """Note ``subs`` (a full pending set drops them, counted) and check the pending
        accounts if the last check is ``min_interval_ms`` old. Raises StoreError."""
        for sub in subs:
            if sub in self._pending:
                continue
            if len(self._pending) >= self.max_pending:
                self.alerts.overflow()
                continue
            self._pending[sub] = None
        await self.tick(at_ms)

    async def tick(self, at_ms: int) -> None:
        """Check the pending accounts unless the last check is too recent (the recorder
        calls it on its sweep so none waits long). Raises StoreError."""
        if not self._pending:
            return
        if self._last_ms is not None and at_ms - self._last_ms < self.min_interval_ms:
            return
        self._last_ms = at_ms
        subs, self._pending = list(self._pending), {}
        found = await self.store.accounts(subs, self.windows_s, at_ms)
        for window_s in self.windows_s:
            scores = {sub: score(found.get((window_s, sub), ())) for sub in subs}
            above = [sub for sub in subs if scores[sub] >= self.threshold]
            below = [sub for sub in subs if scores[sub] < self.threshold]
            for sub in await self.store.flag(window_s, above, below):
                self.alerts.crossed(sub, window_s, scores[sub], found[window_s, sub])
