"""Replay of recorded JSON Lines files (``{"t": ms, "provider": name, "msg": ...}``) with
their original timing, faster (``speed``), or as fast as possible (``speed=0``); and the
recorder that writes such files from any live adapter."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import IO, Any

from oddsfeed.errors import ProviderDataError
from oddsfeed.model import MarketUpdate

from .betfair import StreamState
from .normalised import Mapping, normalize_message, parse_line
from .oddsapi import normalize_event


class Recorder:
    """Writes each raw provider message as one JSON line with its receive time."""

    def __init__(self, out: IO[str], clock: Callable[[], float] = time.time) -> None:
        self.out = out
        self.clock = clock
        self.count = 0

    def __call__(self, provider: str, msg: Any) -> None:
        self.out.write(json.dumps({"t": int(self.clock() * 1000), "provider": provider,
                                   "msg": msg}, separators=(",", ":")) + "\n")
        self.count += 1


class Normalizer:
    """Turns a recorded record into updates by the provider that sent it."""

    def __init__(self, mapping: Mapping | None = None, *, bookmaker: str = "",
                 odds_format: str = "decimal") -> None:
        self.mapping = mapping or Mapping()
        self.betfair = StreamState(mapping=self.mapping)
        self.bookmaker = bookmaker
        self.odds_format = odds_format

    def __call__(self, rec: dict[str, Any]) -> list[MarketUpdate]:
        provider = rec.get("provider", "push")
        msg = rec["msg"]
        if provider == "betfair":
            return self.betfair.on_message(msg)
        if provider == "oddsapi":
            return normalize_event(msg, bookmaker=self.bookmaker, odds_format=self.odds_format,
                                   now_ms=int(rec["t"]), mapping=self.mapping)
        return [normalize_message(msg, provider=str(provider))]


async def replay(lines: Iterable[str], submit: Callable[[MarketUpdate], Awaitable[Any]],
                 on_bad: Callable[[ProviderDataError], None], *, speed: float = 1.0,
                 normalizer: Normalizer | None = None,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> int:
    """Feed every record of ``lines`` to ``submit`` keeping the recorded gaps divided by
    ``speed`` (0: no waiting). Bad lines go to ``on_bad`` and are skipped. Returns the
    number of updates submitted."""
    normalize = normalizer or Normalizer()
    first_t: float | None = None
    waited = 0.0  # seconds of recorded time already slept through
    n = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            rec = parse_line(line)
            updates = normalize(rec)
        except ProviderDataError as exc:
            on_bad(exc)
            continue
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
