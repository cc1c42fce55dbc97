"""HTTP polling of an odds API shaped like The Odds API v4.

Pure ``normalize_events`` on top; the thin poller at the bottom honours ETag, backs off on
errors and 429 (Retry-After), has a per-request timeout and never overlaps two polls.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import aiohttp
import structlog

from oddsfeed.errors import InvalidInput, ProviderDataError
from oddsfeed.model import MarketUpdate
from oddsfeed.prices import from_american, from_decimal

from .normalised import Mapping, safe_id

PROVIDER = "oddsapi"
MARKET_KINDS = {"h2h": "1x2", "spreads": "handicap", "totals": "totals"}
log = structlog.get_logger("oddsfeed.ingest.oddsapi")


def _ms(iso: object) -> int:
    if not isinstance(iso, str):
        raise ValueError("time must be an ISO 8601 string")
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def normalize_event(event: object, *, bookmaker: str, odds_format: str, now_ms: int,
                    mapping: Mapping | None = None) -> list[MarketUpdate]:
    """One event of the response -> one full-image update per (event, market key) of the
    configured bookmaker. Raises ProviderDataError for a bad event."""
    mapping = mapping or Mapping()
    if not isinstance(event, dict):
        raise ProviderDataError("an event must be an object", provider=PROVIDER, raw=event)
    try:
        ev_id = mapping.event(event["id"], PROVIDER)
        sport = str(event.get("sport_key") or event["sport_title"])
        title = f"{event['home_team']} v {event['away_team']}"
        in_play = _ms(event["commence_time"]) <= now_ms
        books = event.get("bookmakers") or []
        if not isinstance(books, list):
            raise ValueError("bookmakers must be a list")
        out = []
        for book in books:
            if not isinstance(book, dict) or book.get("key") != bookmaker:
                continue
            for market in book.get("markets") or []:
                key = market["key"]
                if key not in MARKET_KINDS:
                    continue
                mid = mapping.market(f"{event['id']}:{key}", PROVIDER)
                sels: dict[str, dict[str, Any]] = {}
                for o in market["outcomes"]:
                    point = o.get("point")
                    raw_id = o["name"] if point is None else f"{o['name']}_{point}"
                    price = (from_american(o["price"]) if odds_format == "american"
                             else from_decimal(o["price"]))
                    sel: dict[str, Any] = {"name": str(o["name"]), "price": price}
                    if point is not None:
                        sel["point"] = point
                    sels[mapping.selection(raw_id, PROVIDER)] = sel
                if not sels:
                    raise ValueError(f"market {key} has no outcomes")
                ts = _ms(market.get("last_update") or book.get("last_update"))
                out.append(MarketUpdate(
                    market=mid, fields={"event": ev_id, "sport": safe_id(sport),
                                        "name": f"{title}: {key}", "kind": MARKET_KINDS[key],
                                        "in_play": in_play},
                    selections=sels, create=True, replace=True, ts=ts, seq=ts))
        return out
    except ProviderDataError:
        raise
    except InvalidInput as exc:
        raise ProviderDataError(str(exc), provider=PROVIDER, raw=event) from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProviderDataError(f"bad event: {type(exc).__name__}: {exc}", provider=PROVIDER,
                                raw=event) from None


class Poller:
    """Polls ``url`` every ``interval_s``; hands each response's events to ``on_events``."""

    def __init__(self, url: str, on_events: Callable[[list[Any]], Awaitable[None]], *,
                 interval_s: float = 5.0, timeout_s: float = 10.0, max_backoff_s: float = 120.0,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.url = url
        self.on_events = on_events
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.max_backoff_s = max_backoff_s
        self.sleep = sleep
        self.etag: str | None = None
        self.polls = 0
        self.not_modified = 0
        self.errors = 0

    async def poll_once(self, session: aiohttp.ClientSession) -> float:
        """One request; returns how long to wait before the next one."""
        headers = {"If-None-Match": self.etag} if self.etag else {}
        self.polls += 1
        try:
            async with session.get(self.url, headers=headers,
                                   timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as r:
                if r.status == 304:
                    self.not_modified += 1
                    return self.interval_s
                if r.status == 429:
                    self.errors += 1
                    retry = r.headers.get("Retry-After", "")
                    wait = float(retry) if retry.replace(".", "", 1).isdigit() else None
                    return self._backoff(wait)
                if r.status >= 400:
                    self.errors += 1
                    log.warning("poll failed", url=self.url, status=r.status)
                    return self._backoff()
                data = await r.json(content_type=None)
                self.etag = r.headers.get("ETag")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.errors += 1
            log.warning("poll failed", url=self.url, error=f"{type(exc).__name__}: {exc}")
            return self._backoff()
        self._fails = 0
        if not isinstance(data, list):
            raise ProviderDataError("the response must be a list of events", provider=PROVIDER,
                                    raw=data)
        await self.on_events(data)
        return self.interval_s

    _fails = 0

    def _backoff(self, at_least: float | None = None) -> float:
        self._fails += 1
        wait = min(self.max_backoff_s, self.interval_s * 2 ** self._fails)
        wait *= 0.5 + random.random() / 2
        return float(max(wait, at_least or 0.0))

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Poll until ``stop``; a poll never overlaps the previous one (one loop)."""
        async with aiohttp.ClientSession() as session:
            while stop is None or not stop.is_set():
                try:
                    wait = await self.poll_once(session)
                except ProviderDataError as exc:
                    log.warning("bad response", error=str(exc), raw=exc.raw)
                    wait = self._backoff()
                await self.sleep(wait)
