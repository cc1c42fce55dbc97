"""HTTP polling of an odds API shaped like The Odds API v4; must not write to the store
itself (it hands updates to the runner).

Pure :func:`normalize_event` on top: one full-image update per (event, market key) of the
configured bookmaker. The thin :class:`Poller` at the bottom honours ETag / If-None-Match,
backs off on errors and on 429 (honouring Retry-After), has a per-request timeout and never
overlaps two polls (one loop, one request at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import structlog

from oddsfeed.core.errors import InvalidInput, ProviderDataError
from oddsfeed.core.model import MarketUpdate
from oddsfeed.core.prices import FORMATS, parse_price

from .normalised import FeedMapping

PROVIDER = "oddsapi"
MARKET_KINDS = {"h2h": "1x2", "spreads": "handicap", "totals": "totals"}
log = structlog.get_logger("oddsfeed.ingest.oddsapi")


def _ms(iso: object, what: str) -> int:
    if not isinstance(iso, str):
        raise ValueError(f"{what} must be an ISO 8601 string")
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def normalize_event(event: object, *, bookmaker: str, odds_format: str, now_ms: int,
                    mapping: FeedMapping | None = None) -> list[MarketUpdate]:
    """One event of the response -> one full-image update per (event, market key) of
    ``bookmaker`` (other bookmakers and unknown market keys are ignored).

    Selection ids are the outcome name plus its point; ``commence_time`` at or before
    ``now_ms`` turns the market in-play. ``seq`` is the market's ``last_update`` (or the
    commence time once that is later, so the in-play turn is not dropped as a replay).
    Raises ProviderDataError for a bad event.
    """
    mapping = mapping or FeedMapping()
    if odds_format not in FORMATS:
        raise ProviderDataError(f"unknown odds format {odds_format[:40]!r}", provider=PROVIDER,
                                raw=event)
    if not isinstance(event, dict):
        raise ProviderDataError("an event must be an object", provider=PROVIDER, raw=event)
    try:
        ev_id = mapping.event(event["id"], PROVIDER)
        sport = mapping.sport(event.get("sport_key") or event["sport_title"])
        title = f"{event['home_team']} v {event['away_team']}"
        commence = _ms(event["commence_time"], "commence_time")
        in_play = commence <= now_ms
        books = event.get("bookmakers") or []
        if not isinstance(books, list):
            raise ValueError("bookmakers must be a list")
        out = []
        for book in books:
            if not isinstance(book, dict) or book.get("key") != bookmaker:
                continue
            markets = book.get("markets") or []
            if not isinstance(markets, list):
                raise ValueError("markets must be a list")
            for market in markets:
                key = market["key"]
                if key not in MARKET_KINDS:
                    continue
                mid = mapping.market(f"{event['id']}:{key}", PROVIDER)
                outcomes = market["outcomes"]
                if not isinstance(outcomes, list) or not outcomes:
                    raise ValueError(f"market {key} has no outcomes")
                sels: dict[str, dict[str, Any]] = {}
                for o in outcomes:
                    name, point = o["name"], o.get("point")
                    if not isinstance(name, str):
                        raise ValueError("outcome name must be a string")
                    raw_id = name if point is None else f"{name}_{point}"
                    sel: dict[str, Any] = {"name": name,
                                           "price": parse_price({odds_format: o["price"]})}
                    if point is not None:
                        sel["point"] = point
                    sid = mapping.selection(raw_id, PROVIDER)
                    if sid in sels:
                        raise ValueError(f"duplicate outcome {raw_id!r}")
                    sels[sid] = sel
                ts = _ms(market.get("last_update") or book.get("last_update"), "last_update")
                seq = max(ts, commence) if in_play else ts
                out.append(MarketUpdate(
                    market=mid, fields={"event": ev_id, "sport": sport,
                                        "name": f"{title}: {key}",
                                        "kind": mapping.kind(key, MARKET_KINDS[key]),
                                        "in_play": in_play},
                    selections=sels, create=True, replace=True, ts=ts, seq=seq))
        return out
    except ProviderDataError:
        raise
    except InvalidInput as exc:
        raise ProviderDataError(str(exc), provider=PROVIDER, raw=event) from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProviderDataError(f"bad event: {type(exc).__name__}: {exc}", provider=PROVIDER,
                                raw=event) from None


_SECRET_PARAMS = frozenset({"apikey", "api_key", "key", "token", "access_token"})


def redact_url(url: str) -> str:
    """``url`` with the values of credential query parameters (apiKey, key, token, ...)
    replaced by ``***``, for logs."""
    base, sep, query = url.partition("?")
    if not sep:
        return url
    parts = []
    for pair in query.split("&"):
        name, eq, _ = pair.partition("=")
        parts.append(f"{name}=***" if eq and name.lower() in _SECRET_PARAMS else pair)
    return f"{base}?{'&'.join(parts)}"


def retry_after_s(value: str | None, now_s: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    with contextlib.suppress(TypeError, ValueError, IndexError):
        return max(0.0, parsedate_to_datetime(text).timestamp() - now_s)
    return None


class Poller:
    """Polls ``url`` every ``interval_s``; hands each good response's events to
    ``on_events``, calls ``on_not_modified`` on a 304 and ``on_bad`` for a response that is
    not a JSON list. Errors and 429 back off exponentially with jitter (at least
    Retry-After) up to ``max_backoff_s``. ``params`` are extra query parameters (the API
    key); logs show the URL with credentials masked."""

    def __init__(self, url: str, on_events: Callable[[list[Any]], Awaitable[None]], *,
                 interval_s: float = 5.0, timeout_s: float = 10.0, max_backoff_s: float = 120.0,
                 on_not_modified: Callable[[], Awaitable[None]] | None = None,
                 on_bad: Callable[[ProviderDataError], None] | None = None,
                 headers: dict[str, str] | None = None,
                 params: dict[str, str] | None = None,
                 rng: random.Random | None = None) -> None:
        self.url = url
        self.params = params or {}
        self.shown_url = redact_url(url)
        self.on_events = on_events
        self.on_not_modified = on_not_modified
        self.on_bad = on_bad
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.max_backoff_s = max_backoff_s
        self.headers = headers or {}
        self.rng = rng or random.Random()
        self.etag: str | None = None
        self.polls = 0
        self.not_modified = 0
        self.errors = 0
        self.failures_in_row = 0

    async def poll_once(self, session: aiohttp.ClientSession) -> float:
        """Make one request and hand its data on; returns the seconds to wait before the
        next poll. Never raises for provider or network trouble."""
        headers = dict(self.headers)
        if self.etag:
            headers["If-None-Match"] = self.etag
        self.polls += 1
        try:
            async with session.get(self.url, headers=headers, params=self.params,
                                   timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as r:
                if r.status == 304:
                    self.not_modified += 1
                    self.failures_in_row = 0
                    if self.on_not_modified:
                        await self.on_not_modified()
                    return self.interval_s
                if r.status == 429:
                    self.errors += 1
                    wait = retry_after_s(r.headers.get("Retry-After"), time.time())
                    log.warning("poll throttled (429)", url=self.shown_url, retry_after_s=wait)
                    return self._backoff(wait)
                if r.status >= 400:
                    self.errors += 1
                    log.warning("poll failed", url=self.shown_url, status=r.status)
                    return self._backoff(retry_after_s(r.headers.get("Retry-After"),
                                                       time.time()))
                body = await r.read()
                etag = r.headers.get("ETag")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.errors += 1
            log.warning("poll failed", url=self.shown_url, error=f"{type(exc).__name__}: {exc}")
            return self._backoff()
        try:
            data = _json_list(body)
        except ProviderDataError as exc:
            self.errors += 1
            if self.on_bad:
                self.on_bad(exc)
            return self._backoff()
        self.etag = etag  # only a response we could use may be skipped next time
        self.failures_in_row = 0
        await self.on_events(data)
        return self.interval_s

    def _backoff(self, at_least: float | None = None) -> float:
        self.failures_in_row += 1
        wait = min(self.max_backoff_s, self.interval_s * 2 ** self.failures_in_row)
        wait *= 0.5 + self.rng.random() / 2  # jitter: many pollers do not retry in step
        return float(max(wait, at_least or 0.0))

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; a poll starts only after the previous one ended."""
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                wait = await self.poll_once(session)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)


def _json_list(body: bytes) -> list[Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ProviderDataError("the response is not valid JSON", provider=PROVIDER,
                                raw=body[:300].decode("utf-8", "replace")) from None
    if not isinstance(data, list):
        raise ProviderDataError("the response must be a list of events", provider=PROVIDER,
                                raw=data)
    return data
