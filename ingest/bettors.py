"""Simulated bettors for the demo and the risk benchmark: a few sharp accounts and many
normal ones, each with its own token subject, betting through the real validation API.

They see the markets as any client does: one public WebSocket connection (subscribed to
every event GET /v1/markets lists) keeps their local view; slips go to
``POST /v1/bets/validate``.

- A sharp bettor is fast and chases moves: when the feed moves a price or suspends a
  market, it sometimes (``chase_chance`` per move) bets the old price at the old version at
  once, as a bettor with a faster picture than the book's would; it also takes a price that
  just lengthened (``take_chance``) before the book corrects it.
- A normal bettor bets now and then (``normal_every_s`` on average) on a random open
  selection at the price it saw, after a human delay (``human_delay_s``): sometimes the
  price moved meanwhile and it is rejected, seconds late.

Entry point: ``run_bettors(http_url, ws_url, token_for, BettorsConfig(...), stop=)``;
``token_for(sub)`` returns a bearer token with odds:read and bets:validate for ``sub``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

FEED_SUB = "bettors-feed"


@dataclass(frozen=True)
class BettorsConfig:
    """How many bettors of each kind, their habits, and the seed of their choices."""

    sharps: int = 3
    normals: int = 20
    seed: int = 1
    chase_chance: float = 0.08  # per sharp and per move seen: bet the old price at once
    take_chance: float = 0.04  # per sharp and per lengthened price: take it at once
    normal_every_s: float = 4.0  # mean time between a normal bettor's slips
    human_delay_s: tuple[float, float] = (0.5, 4.0)  # from seeing a price to betting it
    discover_every_s: float = 2.0
    max_inflight: int = 100  # slips in flight at once (an in-play one waits the bet delay)

    def __post_init__(self) -> None:
        if self.sharps < 0 or self.normals < 0:
            raise ValueError(f"sharps {self.sharps} and normals {self.normals} must be >= 0")


def sharp_subs(config: BettorsConfig) -> list[str]:
    return [f"sharp-{i}" for i in range(config.sharps)]


def normal_subs(config: BettorsConfig) -> list[str]:
    return [f"punter-{i}" for i in range(config.normals)]


@dataclass
class Stats:
    """What the bettors did, per subject: slips sent, accepted, rejected, failed."""

    sent: dict[str, int] = field(default_factory=dict)
    accepted: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    failed: int = 0

    def add(self, table: dict[str, int], sub: str) -> None:
        table[sub] = table.get(sub, 0) + 1


@dataclass
class _Market:
    epoch: str
    version: int
    open: bool
    prices: dict[str, float]  # open selections only


def _market(snap: dict[str, Any]) -> _Market:
    sels = snap.get("selections") or {}
    return _Market(str(snap.get("epoch")), int(snap.get("version") or 0),
                   snap.get("status") == "open",
                   {k: float(v["price"]) for k, v in sels.items()
                    if v.get("status", "active") == "active" and v.get("price") is not None})


class Bettors:
    """The bettors' shared view of the markets and their betting habits."""

    def __init__(self, http: aiohttp.ClientSession, http_url: str,
                 token_for: Callable[[str], str], config: BettorsConfig) -> None:
        self.http = http
        self.http_url = http_url.rstrip("/")
        self.config = config
        self.rng = random.Random(config.seed)
        self.markets: dict[str, _Market] = {}
        self.stats = Stats()
        self._tokens = {sub: token_for(sub) for sub in [*sharp_subs(config),
                                                          *normal_subs(config), FEED_SUB]}
        self._inflight: set[asyncio.Task[None]] = set()

    # ---- the feed ----------------------------------------------------------------------

    def on_message(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "batch":
            for item in msg.get("items") or []:
                self.on_message(item)
        elif op == "snapshot":
            snap = msg["market"]
            self.markets[str(snap["id"])] = _market(snap)
        elif op == "gone":
            self.markets.pop(str(msg.get("m")), None)
        elif op == "delta":
            self._on_delta(msg)

    def _on_delta(self, msg: dict[str, Any]) -> None:
        mid = str(msg["m"])
        old = self.markets.get(mid)
        if old is None or old.epoch != msg.get("e") or old.version != msg.get("base"):
            return  # out of step: the next snapshot (after a resubscribe) puts it right
        new = _Market(old.epoch, int(msg["v"]), old.open, dict(old.prices))
        if "status" in msg:
            new.open = msg["status"] == "open"
        moved: list[tuple[str, float, float]] = []
        for sid, change in (msg.get("sel") or {}).items():
            if change.get("status", "active") != "active":
                new.prices.pop(sid, None)
            elif change.get("price") is not None:
                price = float(change["price"])
                if sid in old.prices and price != old.prices[sid]:
                    moved.append((sid, old.prices[sid], price))
                new.prices[sid] = price
        self.markets[mid] = new
        if not old.open:
            return
        halted = not new.open
        for sub in sharp_subs(self.config):
            if (moved or halted) and self.rng.random() < self.config.chase_chance:
                sid = (self.rng.choice(moved)[0] if moved
                       else self.rng.choice(sorted(old.prices)) if old.prices else None)
                if sid is not None:
                    self.bet(sub, mid, sid, old.prices[sid], old.version)
            longer = [m for m in moved if m[2] > m[1]]
            if longer and not halted and self.rng.random() < self.config.take_chance:
                sid, _, price = self.rng.choice(longer)
                self.bet(sub, mid, sid, price, new.version)

    # ---- betting -----------------------------------------------------------------------

    def bet(self, sub: str, market: str, selection: str, price: float,
            version: int | None) -> None:
        """Send a one-leg slip in its own task (none when max_inflight are in flight)."""
        if len(self._inflight) >= self.config.max_inflight:
            return
        leg: dict[str, Any] = {"market": market, "selection": selection, "price": price}
        if version is not None:
            leg["version"] = version
        task = asyncio.get_running_loop().create_task(self._send(sub, leg))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _send(self, sub: str, leg: dict[str, Any]) -> None:
        self.stats.add(self.stats.sent, sub)
        headers = {"Authorization": f"Bearer {self._tokens[sub]}"}
        try:
            async with self.http.post(f"{self.http_url}/v1/bets/validate",
                                      json={"legs": [leg]}, headers=headers) as r:
                body = await r.json() if r.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            body = None
        if body is None:
            self.stats.failed += 1
        else:
            self.stats.add(self.stats.accepted if body.get("ok") else self.stats.rejected, sub)

    async def normal(self, sub: str, stop: asyncio.Event) -> None:
        """One normal bettor's life: wait, look at a random open selection, think, bet."""
        rng = random.Random(f"{self.config.seed}:{sub}")
        lo, hi = self.config.human_delay_s
        while not stop.is_set():
            await _pause(stop, rng.expovariate(1 / self.config.normal_every_s))
            open_ = sorted(m for m, st in self.markets.items() if st.open and st.prices)
            if not open_:
                continue
            mid = rng.choice(open_)
            seen = self.markets[mid]
            sid = rng.choice(sorted(seen.prices))
            price, version = seen.prices[sid], seen.version
            await _pause(stop, rng.uniform(lo, hi))
            if not stop.is_set():
                self.bet(sub, mid, sid, price, version if rng.random() < 0.5 else None)

    async def close(self) -> None:
        for task in list(self._inflight):
            task.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)

    # ---- discovery ---------------------------------------------------------------------

    async def events(self) -> set[str]:
        """The events of the markets GET /v1/markets lists now (empty on a failure)."""
        headers = {"Authorization": f"Bearer {self._tokens[FEED_SUB]}"}
        try:
            async with self.http.get(f"{self.http_url}/v1/markets", headers=headers) as r:
                if r.status != 200:
                    return set()
                body = await r.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return set()
        return {str(m["event"]) for m in body.get("markets") or [] if m.get("event")}

    async def _discover(self, ws: Any) -> None:
        subscribed: set[str] = set()
        while True:
            new = await self.events() - subscribed
            if new:
                subscribed.update(new)
                await ws.send(json.dumps({"op": "subscribe", "events": sorted(new)}))
            await asyncio.sleep(self.config.discover_every_s)

    async def watch(self, ws_url: str, stop: asyncio.Event) -> None:
        """Keep the view from one WebSocket connection, subscribing every event found;
        reconnects (resubscribing) after a drop until ``stop``."""
        sep = "&" if "?" in ws_url else "?"
        url = f"{ws_url}{sep}token={self._tokens[FEED_SUB]}"
        while not stop.is_set():
            try:
                async with connect(url, subprotocols=["oddsfeed.v1.json"]  # type: ignore[list-item]
                                   ) as ws:
                    finder = asyncio.create_task(self._discover(ws))
                    try:
                        async for frame in ws:
                            self.on_message(json.loads(frame))
                            if stop.is_set():
                                break
                    finally:
                        finder.cancel()
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await finder
            except (OSError, WebSocketException, ValueError):
                pass
            self.markets.clear()
            await _pause(stop, 1.0)


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def run_bettors(http_url: str, ws_url: str, token_for: Callable[[str], str],
                      config: BettorsConfig, *, stop: asyncio.Event) -> Stats:
    """Run every bettor until ``stop`` is set; returns what they did."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        bettors = Bettors(http, http_url, token_for, config)
        tasks = [asyncio.create_task(bettors.watch(ws_url, stop), name="bettors-feed")]
        tasks += [asyncio.create_task(bettors.normal(sub, stop), name=f"bettor-{sub}")
                  for sub in normal_subs(config)]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await bettors.close()
        return bettors.stats
