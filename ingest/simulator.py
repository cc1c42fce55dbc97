"""A simulated football feed: realistic, deterministic odds for the demo and for load.

Pure part on top (a seeded model producing MarketUpdates tick by tick); the thin async
driver at the bottom writes them through the store at a configured rate.

Model: each event has home and away scoring rates; the prices of its markets (match result,
total goals and handicap lines, see :data:`MARKETS`) come from a Poisson model of the goals
still to come, with a ~5% margin. Rates random-walk; goals suspend the event's markets for
1-3 ticks and move prices sharply; events go in play with a bet delay, then close, settle,
and are replaced by a new event so the demo never runs dry. Must not read the clock or the
environment in the pure part: start time and seed come in.

Failover (``backup_every``): every Nth event is also fed by a backup source (priority 1)
at slightly different prices, and the primary goes silent on those markets for
``outage_s`` of every ``outage_every_s`` seconds, so the backup drives them for a while
and hands them back (the store decides; see ingest/runner.py).

Entry points: ``run_simulator(store, SimulatorConfig(events=, seed=, rate_per_s=), stop=,
start_ms=)`` for `oddsfeed run`; ``updates_for(config, ticks)`` for tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from oddsfeed.core.model import MarketUpdate
from oddsfeed.core.prices import MAX_PRICE, MIN_PRICE, SCALE

from .runner import Applier, FeedRunner

TEAMS = ("Arsenal", "Barcelona", "Bayern", "Benfica", "Celtic", "Dortmund", "Inter", "Juventus",
         "Leipzig", "Liverpool", "Madrid", "Milan", "Napoli", "Porto", "PSG", "Roma", "Sevilla",
         "Sporting", "Ajax", "Chelsea", "Lyon", "Marseille", "Villarreal", "Feyenoord")
MATCH_MINUTES = 90
MAX_GOALS = 10  # goals still to come per team in the Poisson grid


@dataclass(frozen=True)
class MarketSpec:
    """One market type of every simulated event: kind, line and market id suffix."""

    kind: str
    line: float
    suffix: str


# The first ``markets_per_event`` of these are offered on every event.
MARKETS = (
    MarketSpec("1x2", 0.0, "1x2"),
    MarketSpec("totals", 2.5, "totals"),
    MarketSpec("handicap", 1.5, "handicap"),  # home -1.5 / away +1.5
    MarketSpec("totals", 1.5, "totals_1.5"),
    MarketSpec("totals", 3.5, "totals_3.5"),
    MarketSpec("handicap", 0.5, "handicap_0.5"),
    MarketSpec("handicap", 2.5, "handicap_2.5"),
)
KINDS = tuple(dict.fromkeys(m.kind for m in MARKETS))


@dataclass(frozen=True)
class SimulatorConfig:
    """The simulated feed: ``events`` live at a time, each with the first
    ``markets_per_event`` of :data:`MARKETS`; ``rate_per_s`` ticks per second (a tick moves
    one event and yields 0-7 updates); same ``seed``, same updates."""

    events: int = 4
    seed: int = 1
    rate_per_s: float = 20.0
    markets_per_event: int = 3
    margin: float = 0.05
    bet_delay_ms: int = 5000
    pre_match_ticks: int = 60  # ticks (of this event) before kick-off
    minutes_per_tick: float = 0.3
    suspension_chance: float = 0.01  # per live tick: a VAR check or a dangerous attack
    sport: str = "soccer"
    source: str = "sim"
    backup_every: int = 0  # 0: no backup; N: about one event in N also has a backup feed
    backup_skew: float = 0.02  # the backup's prices are this much shorter
    outage_every_s: float = 120.0  # the primary's outage period on the backed markets ...
    outage_s: float = 40.0  # ... and its length (longer than the staleness to fail over)

    def __post_init__(self) -> None:
        if not 1 <= self.markets_per_event <= len(MARKETS):
            raise ValueError(f"markets_per_event must be 1..{len(MARKETS)}")
        if self.backup_every < 0 or not 0 <= self.outage_s < self.outage_every_s:
            raise ValueError("backup_every >= 0 and 0 <= outage_s < outage_every_s are "
                             f"required, got {self.backup_every}, {self.outage_s}, "
                             f"{self.outage_every_s}")
        if self.events < 0 or self.rate_per_s <= 0 or not 0 < self.margin < 1:
            raise ValueError("events >= 0, rate_per_s > 0 and 0 < margin < 1 are required")


@dataclass
class _Event:
    id: str
    home: str
    away: str
    home_rate: float
    away_rate: float
    ticks: int = 0
    minute: float = 0.0
    score: tuple[int, int] = (0, 0)
    phase: str = "pre"  # pre, live, suspended, closed, settled
    suspended_for: int = 0
    markets: dict[str, MarketSpec] = field(default_factory=dict)  # market id -> spec


def _poisson_pmf(lam: float) -> list[float]:
    out = [math.exp(-lam)]
    for k in range(1, MAX_GOALS + 1):
        out.append(out[-1] * lam / k)
    return out


@dataclass(frozen=True)
class Outlook:
    """Distributions of the goals still to come: ``diff[k]`` is P(home - away goals to
    come = k - MAX_GOALS), ``total[k]`` is P(goals to come = k); ``score`` is the score now."""

    diff: list[float]
    total: list[float]
    score: tuple[int, int]


def outlook(home_rate: float, away_rate: float, score: tuple[int, int],
            minutes_left: float) -> Outlook:
    """The outlook from independent Poisson goals (``*_rate`` per 90 minutes) in the minutes
    left; each distribution sums to 1."""
    share = max(minutes_left, 0.0) / MATCH_MINUTES
    ph = _poisson_pmf(home_rate * share)
    pa = _poisson_pmf(away_rate * share)
    norm = sum(ph) * sum(pa)
    diff = [0.0] * (2 * MAX_GOALS + 1)
    total = [0.0] * (2 * MAX_GOALS + 1)
    for i, p_i in enumerate(ph):
        if p_i < 1e-15:
            break  # the Poisson tail: nothing left to add
        for j, p_j in enumerate(pa):
            p = p_i * p_j
            if p < 1e-15:
                break
            diff[MAX_GOALS + i - j] += p
            total[i + j] += p
    return Outlook([x / norm for x in diff], [x / norm for x in total], score)


def market_probabilities(spec: MarketSpec, view: Outlook) -> dict[str, float]:
    """True probabilities of a market's selections under the outlook."""
    lead = view.score[0] - view.score[1]
    goals = view.score[0] + view.score[1]
    if spec.kind == "1x2":
        # final difference lead + (k - MAX_GOALS) > 0  <=>  k > MAX_GOALS - lead
        cut = MAX_GOALS - lead
        return {"home": sum(view.diff[max(cut + 1, 0):]),
                "draw": view.diff[cut] if 0 <= cut < len(view.diff) else 0.0,
                "away": sum(view.diff[:max(cut, 0)])}
    if spec.kind == "totals":
        over = sum(p for k, p in enumerate(view.total) if goals + k > spec.line)
        return {"over": over, "under": 1 - over}
    home = sum(p for k, p in enumerate(view.diff) if lead + k - MAX_GOALS > spec.line)
    return {"home": home, "away": 1 - home}


def priced(probabilities: list[float], margin: float) -> list[int]:
    """Canonical prices for true probabilities scaled up by ``1 + margin`` (the overround).

    Our own float version of :func:`oddsfeed.core.prices.with_margin`, 20x faster: a model price
    needs no exactness, only the resulting int ticks do. Clamped into 1.0001-10000.
    """
    out = []
    for p in probabilities:
        q = min(max(p, 0.0005), 0.995) * (1 + margin)
        out.append(min(max(round(SCALE / q), MIN_PRICE), MAX_PRICE))
    return out


class Simulator:
    """Produces the feed's updates, pure and deterministic: same config and start time ->
    the same sequence of updates. Call :meth:`initial` once, then :meth:`step` per tick."""

    def __init__(self, config: SimulatorConfig, *, start_ms: int = 1_700_000_000_000) -> None:
        self.cfg = config
        self.rng = random.Random(config.seed)
        # seq grows from the start time, so a restarted feed is newer than the old one
        self.seq = start_ms * 1000
        self.clock_ms = start_ms  # simulated source time, advances per tick
        self.events: list[_Event] = []
        self._next_event = 1

    @property
    def source(self) -> str:
        return f"{self.cfg.source}:{self.cfg.seed}"

    def _new_event(self) -> _Event:
        home, away = self.rng.sample(TEAMS, 2)
        ev = _Event(id=f"ev{self.cfg.seed}-{self._next_event}", home=home, away=away,
                    home_rate=self.rng.uniform(0.9, 2.1), away_rate=self.rng.uniform(0.7, 1.8))
        self._next_event += 1
        ev.markets = {f"{ev.id}:{spec.suffix}": spec
                      for spec in MARKETS[: self.cfg.markets_per_event]}
        return ev

    def _update(self, market: str, **kw: Any) -> MarketUpdate:
        self.seq += 1
        return MarketUpdate(market=market, source=self.source, seq=self.seq, ts=self.clock_ms,
                            **kw)

    def _prices(self, ev: _Event, only: list[str] | None = None) -> dict[str, dict[str, int]]:
        """Prices of the event's markets (``only`` these), each with the configured margin."""
        view = outlook(ev.home_rate, ev.away_rate, ev.score, MATCH_MINUTES - ev.minute)
        out = {}
        for mid in only if only is not None else ev.markets:
            probs = market_probabilities(ev.markets[mid], view)
            prices = priced(list(probs.values()), self.cfg.margin)
            out[mid] = dict(zip(probs, prices, strict=True))
        return out

    def _create(self, ev: _Event) -> list[MarketUpdate]:
        prices = self._prices(ev)
        title = f"{ev.home} v {ev.away}"
        out = []
        for mid, spec in ev.markets.items():
            if spec.kind == "1x2":
                name = f"{title}: match result"
                sels: dict[str, dict[str, Any]] = {
                    "home": {"name": ev.home}, "draw": {"name": "Draw"},
                    "away": {"name": ev.away}}
            elif spec.kind == "totals":
                name = f"{title}: total goals {spec.line}"
                sels = {"over": {"name": f"Over {spec.line}", "point": spec.line},
                        "under": {"name": f"Under {spec.line}", "point": spec.line}}
            else:
                name = f"{title}: handicap {spec.line}"
                sels = {"home": {"name": ev.home, "point": -spec.line},
                        "away": {"name": ev.away, "point": spec.line}}
            for sid, sel in sels.items():
                sel["price"] = prices[mid][sid]
            fields = {"event": ev.id, "sport": self.cfg.sport, "name": name, "kind": spec.kind,
                      "status": "open", "in_play": False, "bet_delay_ms": 0}
            out.append(self._update(mid, fields=fields, selections=sels, create=True,
                                    replace=True))
        return out

    def _all(self, ev: _Event, fields: dict[str, Any], prices: bool = False
             ) -> list[MarketUpdate]:
        table = self._prices(ev) if prices else {}
        return [self._update(mid, fields=fields,
                             selections={s: {"price": p} for s, p in table.get(mid, {}).items()})
                for mid in ev.markets]

    def initial(self) -> list[MarketUpdate]:
        """The updates that create the first events' markets."""
        out: list[MarketUpdate] = []
        while len(self.events) < self.cfg.events:
            ev = self._new_event()
            self.events.append(ev)
            out.extend(self._create(ev))
        return out

    def step(self, now_ms: int | None = None) -> list[MarketUpdate]:
        """One tick of one randomly chosen event: what changed in its markets.

        Pre-match prices random-walk; at kick-off the markets go in play with the bet
        delay; a goal suspends them for 1-3 ticks and reopens them at sharply moved prices;
        at full time they close, then settle, and a new event takes the slot.
        The source time advances by a random 200-1500 ms per tick, or, given the wall
        clock's ``now_ms`` (a live feed), follows it, so stamps never run ahead of real time.
        """
        if not self.events:
            return self.initial()
        advance = self.rng.randint(200, 1500)  # drawn either way: the same seed, the same feed
        self.clock_ms = (self.clock_ms + advance if now_ms is None
                         else max(self.clock_ms + 1, now_ms))
        idx = self.rng.randrange(len(self.events))
        ev = self.events[idx]
        ev.ticks += 1
        rng = self.rng
        # strengths random-walk a little every tick
        ev.home_rate = min(3.5, max(0.3, ev.home_rate * math.exp(rng.gauss(0, 0.03))))
        ev.away_rate = min(3.5, max(0.3, ev.away_rate * math.exp(rng.gauss(0, 0.03))))
        if ev.phase == "pre":
            if ev.ticks >= self.cfg.pre_match_ticks:
                ev.phase = "live"
                return self._all(ev, {"in_play": True, "bet_delay_ms": self.cfg.bet_delay_ms},
                                 prices=True)
            return self._wiggle(ev)
        if ev.phase == "suspended":
            ev.suspended_for -= 1
            if ev.suspended_for <= 0:
                ev.phase = "live"
                return self._all(ev, {"status": "open"}, prices=True)
            return []
        if ev.phase == "closed":
            ev.phase = "settled"
            return self._all(ev, {"status": "settled"})
        if ev.phase == "settled":
            new = self._new_event()
            self.events[idx] = new
            return self._create(new)
        # live
        ev.minute += self.cfg.minutes_per_tick
        if ev.minute >= MATCH_MINUTES:
            ev.phase = "closed"
            return self._all(ev, {"status": "closed", "in_play": False})
        dt = self.cfg.minutes_per_tick / MATCH_MINUTES
        r = rng.random()
        p_home, p_away = ev.home_rate * dt, ev.away_rate * dt
        if r < p_home + p_away:
            ev.score = (ev.score[0] + 1, ev.score[1]) if r < p_home else (ev.score[0],
                                                                          ev.score[1] + 1)
            ev.phase = "suspended"
            ev.suspended_for = rng.randint(1, 3)
            return self._all(ev, {"status": "suspended"})
        if r > 1 - self.cfg.suspension_chance:
            ev.phase = "suspended"
            ev.suspended_for = 1
            return self._all(ev, {"status": "suspended"})
        return self._wiggle(ev)

    def _wiggle(self, ev: _Event) -> list[MarketUpdate]:
        # Reprice one or two markets of the event (the model moved a little).
        ids = list(ev.markets)
        chosen = self.rng.sample(ids, min(len(ids), self.rng.randint(1, 2)))
        table = self._prices(ev, chosen)
        return [self._update(mid, selections={s: {"price": p} for s, p in table[mid].items()})
                for mid in chosen]


def backed(config: SimulatorConfig, market: str) -> bool:
    """Whether the backup feed also covers ``market`` (decided by its event id)."""
    if config.backup_every <= 0:
        return False
    event = market.rpartition(":")[0] or market
    return zlib.crc32(event.encode()) % config.backup_every == 0


def primary_out(config: SimulatorConfig, elapsed_s: float) -> bool:
    """Whether the primary is silent on the backed markets ``elapsed_s`` into the run: the
    last ``outage_s`` of every ``outage_every_s``."""
    return elapsed_s % config.outage_every_s >= config.outage_every_s - config.outage_s


def backup_update(config: SimulatorConfig, update: MarketUpdate) -> MarketUpdate:
    """The backup provider's version of ``update``: the same change at slightly shorter
    prices, under the backup's source."""
    sels = {sid: ({**p, "price": min(max(round(p["price"] * (1 - config.backup_skew)),
                                         MIN_PRICE), MAX_PRICE)} if "price" in p else dict(p))
            for sid, p in update.selections.items()}
    return MarketUpdate(market=update.market, fields=update.fields, selections=sels,
                        replace=update.replace, create=update.create, ts=update.ts,
                        source=f"{config.source}-backup:{config.seed}", seq=update.seq)


async def run_simulator(store: Applier, config: SimulatorConfig, *,
                        stop: asyncio.Event | None = None, max_ticks: int | None = None,
                        start_ms: int = 1_700_000_000_000, count: bool = True,
                        staleness_s: float = 30.0) -> int:
    """Write the simulated feed through ``store.apply`` at ``config.rate_per_s`` ticks per
    second until ``stop`` is set or ``max_ticks`` ticks ran; returns the ticks run.

    Pass the wall-clock ``start_ms`` so a restarted feed orders after the previous run.
    With ``count`` the updates go through a :class:`~oddsfeed_ingest.runner.FeedRunner` (source
    ``sim:<seed>``): outcomes and lag in the ingest metrics, store errors retried; with
    ``backup_every`` too, the backed markets' copies through a second one (source
    ``sim-backup:<seed>``, priority 1), both judging silence by ``staleness_s``."""
    sim = Simulator(config, start_ms=start_ms)
    backup: FeedRunner | None = None
    if count:
        runner = FeedRunner(store, sim.source, staleness_s=staleness_s)
        if config.backup_every > 0:
            backup = FeedRunner(store, f"{config.source}-backup:{config.seed}",
                                staleness_s=staleness_s, priority=1)

        class _Counted:
            async def apply(self, update: MarketUpdate) -> Any:
                return await runner.submit(update)

            async def apply_many(self, updates: Sequence[MarketUpdate]) -> list[Any]:
                return await runner.submit_many(updates)

        store = _Counted()
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def write(update: MarketUpdate) -> None:
        if backup is None or not backed(config, update.market):
            await store.apply(update)
            return
        if not primary_out(config, loop.time() - started):
            await store.apply(update)
        await backup.submit(backup_update(config, update))

    for update in sim.initial():
        await write(update)
    interval = 1.0 / config.rate_per_s
    next_at = loop.time()
    ticks = 0
    while (stop is None or not stop.is_set()) and (max_ticks is None or ticks < max_ticks):
        for update in sim.step(now_ms=start_ms + int((loop.time() - started) * 1000)):
            await write(update)
        ticks += 1
        next_at += interval
        delay = next_at - loop.time()
        if delay > 0:
            if stop is None:
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        else:
            next_at = loop.time()  # running behind: do not try to catch up in a burst
    return ticks


def updates_for(config: SimulatorConfig, ticks: int) -> Sequence[MarketUpdate]:
    """The first ``ticks`` ticks' updates (deterministic; for tests and benchmarks)."""
    sim = Simulator(config)
    out = list(sim.initial())
    for _ in range(ticks):
        out.extend(sim.step())
    return out
