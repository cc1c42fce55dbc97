"""Replay of recorded JSON Lines files (``{"t": ms, "provider": name, "msg": ...}`` per line)
with their original timing, faster (``speed``), or as fast as possible (``speed=0``); and the
recorder that writes such files from any live adapter. Must not write to the store itself.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import IO, Any

from oddsfeed.core.errors import ProviderDataError
from oddsfeed.core.model import MarketUpdate

from .betfair import StreamState
from .normalised import FeedMapping, normalize_message, parse_line
from .oddsapi import normalize_event

NORMALISED_PROVIDERS = ("push", "simulator")


class Recorder:
    """Writes each raw provider message as one JSON line with its receive time (ms).

    Call it as ``recorder(provider, msg)``; ``provider`` is ``push``, ``simulator``,
    ``oddsapi`` or ``betfair`` (what :class:`Normalizer` understands).
    """

    def __init__(self, out: IO[str], clock: Callable[[], float] = time.time) -> None:
        self.out = out
        self.clock = clock
        self.count = 0

    def __call__(self, provider: str, msg: Any) -> None:
        self.out.write(json.dumps({"t": int(self.clock() * 1000), "provider": provider,
                                   "msg": msg}, separators=(",", ":")) + "\n")
        self.count += 1


class Normalizer:
    """Turns one recorded record into updates with the normaliser of the provider that sent
    it; keeps the stream state a recorded stream needs between records."""

    def __init__(self, mappings: dict[str, FeedMapping] | None = None, *, bookmaker: str = "",
                 odds_format: str = "decimal") -> None:
        self.mappings = mappings or {}
        self.stream = StreamState(mapping=self.mappings.get("betfair", FeedMapping()))
        self.bookmaker = bookmaker
        self.odds_format = odds_format

    def __call__(self, rec: dict[str, Any]) -> tuple[list[MarketUpdate], list[ProviderDataError]]:
        """(updates, bad parts) of one record; raises ProviderDataError for a bad record."""
        provider = rec.get("provider", "push")
        msg = rec["msg"]
        if provider == "betfair":
            out = self.stream.on_message(msg)
            return out.updates, out.errors
        if provider == "oddsapi":
            return normalize_event(msg, bookmaker=self.bookmaker, odds_format=self.odds_format,
                                   now_ms=int(rec["t"]), mapping=self.mappings.get("oddsapi")
                                   ), []
        if provider in NORMALISED_PROVIDERS:
            return [normalize_message(msg, provider=provider,
                                      mapping=self.mappings.get(provider))], []
        raise ProviderDataError(f"unknown provider {str(provider)[:40]!r} in recording",
                                provider="replay", raw=rec)


async def _sleep(s: float) -> None:
    await asyncio.sleep(s)


async def replay(lines: Iterable[str], submit: Callable[[MarketUpdate], Awaitable[Any]],
                 on_bad: Callable[[ProviderDataError], None], *, speed: float = 1.0,
                 normalizer: Normalizer | None = None,
                 sleep: Callable[[float], Awaitable[Any]] = _sleep,
                 stop: asyncio.Event | None = None) -> int:
    """Feed every record of ``lines`` to ``submit``, keeping the recorded gaps divided by
    ``speed`` (0: as fast as possible). Bad lines go to ``on_bad`` and are skipped; records
    are never reordered, so the timing is that of the first record onwards. Stops early
    when ``stop`` is set. Returns the number of updates submitted."""
    if speed < 0:
        raise ValueError("speed must be 0 (as fast as possible) or positive")
    normalize = normalizer or Normalizer()
    first_t: float | None = None
    waited = 0.0  # seconds of replay time already slept through
    n = 0
    for line in lines:
        if stop is not None and stop.is_set():
            break
        if not line.strip():
            continue
        try:
            rec = parse_line(line)
            updates, errors = normalize(rec)
        except ProviderDataError as exc:
            on_bad(exc)
            continue
        for err in errors:
            on_bad(err)
        if speed > 0:
            if first_t is None:
                first_t = rec["t"]
            delay = (rec["t"] - first_t) / 1000 / speed - waited
            if delay > 0:
                await sleep(delay)
                waited += delay
        for u in updates:
            await submit(u)
            n += 1
    return n
