"""The risk routes (``GET /v1/risk/accounts``, ``/v1/risk/accounts/{sub}``, scope
``risk:read``), the recorder's life in the app and its aggregate Prometheus metrics (no
per-account labels). It translates HTTP to the risk store and the core score, nothing more."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import Counter, Histogram

from ..auth import RISK_READ, Principal
from ..clock import now_ms
from ..core.risk import Counts, as_map, score
from ..core.wire import Leg
from ..services.risk import Beat, RiskQueue
from ..services.risk_alerts import ThresholdWatch
from ..settings import RiskSettings
from ..store import DueQueue, RiskCounts, Store
from ..webkit import Problem
from .risk_hook import ThresholdAlerts

log = structlog.get_logger("oddsfeed.risk")

STALE = Histogram("oddsfeed_risk_stale_seconds",
                  "how long before the validation a rejected leg's price or version stopped "
                  "being current", buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
UNDATED = Counter("oddsfeed_risk_stale_unknown_total",
                  "rejected legs whose stale time the history no longer covered")
RECORDED = Counter("oddsfeed_risk_slips_total", "bet slips added to the risk counts")
DROPPED = Counter("oddsfeed_risk_dropped_total",
                  "bet slips (or beat legs: due_full) left out of the risk counts, by why",
                  ["why"])
JUDGED = Counter("oddsfeed_risk_beat_judged_total",
                 "accepted legs judged once their beat window ended")
BEATS = Counter("oddsfeed_risk_beats_total",
                "accepted legs followed within the beat window by a suspension or a shorter "
                "price")
MAX_LIMIT = 1000
_SUB = re.compile(r"^.{1,256}$", re.DOTALL)
_WINDOW = re.compile(r"^([0-9]{1,7})([smhd]?)$", re.ASCII)
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

PrincipalOf = Callable[[web.Request, str | None], Principal]


class PrometheusRiskMetrics:
    """The recorder's aggregate counters."""

    def recorded(self, slips: int, stale_ms: Sequence[int | None], reasons: Sequence[str]
                 ) -> None:
        RECORDED.inc(slips)
        for late in stale_ms:
            if late is not None:
                STALE.observe(late / 1000)
        undated = sum(1 for r in reasons if r not in ("unknown_market", "unknown_selection")
                      ) - sum(1 for late in stale_ms if late is not None)
        if undated > 0:
            UNDATED.inc(undated)

    def dropped(self, why: str, n: int = 1) -> None:
        DROPPED.labels(why).inc(n)

    def judged(self, legs: int, beats: int) -> None:
        JUDGED.inc(legs)
        BEATS.inc(beats)


@dataclass
class Risk:
    """What the routes and the validate hook need, kept on the app."""

    settings: RiskSettings
    counts: RiskCounts
    queue: RiskQueue
    principal_of: PrincipalOf


K_RISK: web.AppKey[Risk] = web.AppKey("risk", Risk)


def _counts(settings: RiskSettings, store: Store) -> RiskCounts:
    return RiskCounts(store.client, windows_s=settings.windows_s, buckets=settings.buckets,
                      max_accounts=settings.max_accounts, history_scan=settings.history_scan)


def recorder(settings: RiskSettings, store: Store) -> RiskQueue | None:
    """The process's risk recorder (None when risk signals are off); :func:`install` starts
    and stops it with the app that gets it."""
    if not settings.enabled:
        return None
    counts = _counts(settings, store)
    beat = None
    if settings.beat_window_ms > 0:
        due = DueQueue(store.client, shards=settings.due_shards, max_due=settings.max_due)
        beat = Beat(due, settings.beat_window_ms, settings.sweep_ms, settings.sweep_limit)
    alerts = ThresholdAlerts(settings.webhook_url, timeout_s=settings.webhook_timeout_s,
                             max_inflight=settings.webhook_max_inflight)
    watch = ThresholdWatch(counts, alerts, windows_s=settings.windows_s,
                           threshold=settings.threshold,
                           min_interval_ms=settings.threshold_check_ms)
    return RiskQueue(counts, PrometheusRiskMetrics(), max_pending=settings.max_pending,
                     on_error=lambda exc: log.warning("risk.record_failed", error=str(exc)),
                     beat=beat, watch=watch, clock=now_ms, on_stop=alerts.close,
                     parts=settings.debug_parts)


def install(app: web.Application, settings: RiskSettings, store: Store,
            principal_of: PrincipalOf, *, queue: RiskQueue | None = None) -> None:
    """Give ``app`` the recorder ``queue`` (default: a new one), started and stopped with
    the app, when risk is enabled; the routes answer 404 otherwise."""
    queue = queue or recorder(settings, store)
    if queue is None or not settings.enabled:
        return
    app[K_RISK] = Risk(settings, _counts(settings, store), queue, principal_of)

    async def start(app: web.Application) -> None:
        queue.start()

    async def stop(app: web.Application) -> None:
        await queue.stop()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)


def offer(request: web.Request, principal: Principal, legs: Sequence[Leg],
          body: Mapping[str, Any], arrived_ms: int | None = None) -> None:
    """Hand a finished verdict (of a slip that arrived at ``arrived_ms``) to the recorder
    (no-op when risk is off); never waits."""
    risk = request.app.get(K_RISK)
    if risk is not None:
        risk.queue.offer(principal.sub, legs, body, now_ms(), arrived_ms)


def _risk(request: web.Request) -> Risk:
    risk = request.app.get(K_RISK)
    if risk is None:
        raise Problem(404, "not found", "risk signals are off (risk.enabled)")
    risk.principal_of(request, RISK_READ)
    return risk


def _window(risk: Risk, raw: str | None) -> int:
    windows = risk.settings.windows_s
    if raw is None:
        return windows[0]
    found = _WINDOW.match(raw)
    seconds = int(found[1]) * _UNIT_S[found[2]] if found else -1
    if seconds not in windows:
        names = ", ".join(str(w) for w in windows)
        raise Problem(400, "invalid query", f"window {raw[:20]!r} is not one of {names} (s)",
                      errors=[{"path": "window", "message": f"one of {names} seconds"}])
    return seconds


def _query(request: web.Request, allowed: set[str]) -> None:
    unknown = set(request.query) - allowed
    if unknown:
        raise Problem(400, "invalid query", "unknown query parameter",
                      errors=[{"path": k, "message": "unknown query parameter"}
                              for k in sorted(unknown)])


def _account(sub: str, counts: Counts) -> dict[str, Any]:
    return {"sub": sub, "score": score(counts), "counts": as_map(counts)}


async def list_accounts(request: web.Request) -> web.Response:
    risk = _risk(request)
    _query(request, {"window", "limit"})
    window_s = _window(risk, request.query.get("window"))
    raw_limit = request.query.get("limit", "50")
    if not re.fullmatch(r"[0-9]{1,4}", raw_limit, re.ASCII) or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise Problem(400, "invalid query", f"limit {raw_limit[:20]!r} must be 1-{MAX_LIMIT}",
                      errors=[{"path": "limit", "message": f"an integer 1-{MAX_LIMIT}"}])
    at = now_ms()
    accounts = [_account(sub, c) for sub, c in (await risk.counts.window(window_s, at)).items()]
    accounts.sort(key=lambda a: (-a["score"], -a["counts"]["legs"], a["sub"]))
    return web.json_response({"window_s": window_s, "at_ms": at,
                              "accounts": accounts[:int(raw_limit)]})


async def get_account(request: web.Request) -> web.Response:
    risk = _risk(request)
    _query(request, {"window"})
    window_s = _window(risk, request.query.get("window"))
    sub = request.match_info["sub"]
    if not _SUB.match(sub):
        raise Problem(400, "invalid account", "an account is 1-256 characters",
                      errors=[{"path": "sub", "message": "1-256 characters"}])
    at = now_ms()
    counts = await risk.counts.account(sub, window_s, at) or ()
    return web.json_response({"window_s": window_s, "at_ms": at, **_account(sub, counts)})


HANDLERS: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {
    "risk_accounts": list_accounts, "risk_account": get_account,
}
