"""A simulated football feed: realistic, deterministic odds for the demo and for load.

Pure part on top (a seeded model producing MarketUpdates tick by tick); the thin async
driver at the bottom writes them through the store at a configured rate.

Model: each event has home and away scoring rates; prices come from a Poisson model of the
goals still to come, with a ~5% margin. Rates random-walk; goals suspend the event's
markets for a tick and move prices sharply; events go in play with a bet delay, then close,
settle, and are replaced by a new event so the demo never runs dry.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

from oddsfeed.model import MarketUpdate
from oddsfeed.prices import with_margin

TEAMS = ("Arsenal", "Barcelona", "Bayern", "Benfica", "Celtic", "Dortmund", "Inter", "Juventus",
         "Leipzig", "Liverpool", "Madrid", "Milan", "Napoli", "Porto", "PSG", "Roma", "Sevilla",
         "Sporting", "Ajax", "Chelsea", "Lyon", "Marseille", "Villarreal", "Feyenoord")
MATCH_MINUTES = 90
KINDS = ("1x2", "totals", "handicap")


@dataclass(frozen=True)
class SimulatorConfig:
    events: int = 4
    seed: int = 1
    rate_per_s: float = 20.0
    margin: float = 0.05
    bet_delay_ms: int = 1000
    pre_match_ticks: int = 60  # ticks (of this event) before kick-off
    minutes_per_tick: float = 0.3
    sport: str = "soccer"
    source: str = "sim"


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
    markets: dict[str, str] = field(default_factory=dict)  # kind -> market id


def _poisson(lam: float, k: int) -> float:
    return math.exp(-lam) * lam**k / math.factorial(k)


def outcome_probabilities(home_rate: float, away_rate: float, score: tuple[int, int],
                          minutes_left: float) -> dict[str, float]:
    """Probabilities of home/draw/away, over/under 2.5 goals, and home -1.5 / away +1.5,
    from independent Poisson goals in the minutes left."""
    share = max(minutes_left, 0.0) / MATCH_MINUTES
    lh, la = home_rate * share, away_rate * share
    ph = [_poisson(lh, k) for k in range(11)]
    pa = [_poisson(la, k) for k in range(11)]
    home = draw = away = over = hcap = 0.0
    for i, p_i in enumerate(ph):
        for j, p_j in enumerate(pa):
            p = p_i * p_j
            h, a = score[0] + i, score[1] + j
            if h > a:
                home += p
            elif h == a:
                draw += p
            else:
                away += p
            if h + a > 2.5:
                over += p
            if h - a >= 2:
                hcap += p
    total = home + draw + away
    return {"home": home / total, "draw": draw / total, "away": away / total,
            "over": over / total, "under": 1 - over / total,
            "hcap_home": hcap / total, "hcap_away": 1 - hcap / total}


def _clamp(p: float) -> Fraction:
    return Fraction(min(max(p, 0.0005), 0.995)).limit_denominator(100_000)


class Simulator:
    """Produces the feed's updates; same seed -> the same sequence of updates."""

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
        ev.markets = {k: f"{ev.id}:{k}" for k in KINDS}
        return ev

    def _update(self, market: str, **kw: Any) -> MarketUpdate:
        self.seq += 1
        return MarketUpdate(market=market, source=self.source, seq=self.seq, ts=self.clock_ms,
                            **kw)

    def _prices(self, ev: _Event) -> dict[str, dict[str, int]]:
        p = outcome_probabilities(ev.home_rate, ev.away_rate, ev.score,
                                  MATCH_MINUTES - ev.minute)
        m = self.cfg.margin
        one, draw, two = with_margin([_clamp(p["home"]), _clamp(p["draw"]), _clamp(p["away"])], m)
        over, under = with_margin([_clamp(p["over"]), _clamp(p["under"])], m)
        hh, ha = with_margin([_clamp(p["hcap_home"]), _clamp(p["hcap_away"])], m)
        return {"1x2": {"home": one, "draw": draw, "away": two},
                "totals": {"over": over, "under": under},
                "handicap": {"home": hh, "away": ha}}

    def _create(self, ev: _Event) -> list[MarketUpdate]:
        prices = self._prices(ev)
        names = {"1x2": f"{ev.home} v {ev.away}: match result",
                 "totals": f"{ev.home} v {ev.away}: total goals 2.5",
                 "handicap": f"{ev.home} v {ev.away}: handicap 1.5"}
        sel_names = {"home": ev.home, "draw": "Draw", "away": ev.away, "over": "Over 2.5",
                     "under": "Under 2.5"}
        points = {("totals", "over"): 2.5, ("totals", "under"): 2.5,
                  ("handicap", "home"): -1.5, ("handicap", "away"): 1.5}
        out = []
        for kind, mid in ev.markets.items():
            sels = {}
            for sid, price in prices[kind].items():
                sel: dict[str, Any] = {"name": sel_names[sid], "price": price}
                if (kind, sid) in points:
                    sel["point"] = points[(kind, sid)]
                sels[sid] = sel
            fields = {"event": ev.id, "sport": self.cfg.sport, "name": names[kind], "kind": kind,
                      "status": "open", "in_play": False, "bet_delay_ms": 0}
            out.append(self._update(mid, fields=fields, selections=sels, create=True,
                                    replace=True))
        return out

    def _all(self, ev: _Event, fields: dict[str, Any], prices: bool = False
             ) -> list[MarketUpdate]:
        table = self._prices(ev) if prices else {}
        return [self._update(mid, fields=fields,
                             selections={s: {"price": p} for s, p in table.get(kind, {}).items()})
                for kind, mid in ev.markets.items()]

    def initial(self) -> list[MarketUpdate]:
        """The updates that create the first events' markets."""
        out: list[MarketUpdate] = []
        while len(self.events) < self.cfg.events:
            ev = self._new_event()
            self.events.append(ev)
            out.extend(self._create(ev))
        return out

    def step(self) -> list[MarketUpdate]:
        """One tick of one randomly chosen event: what changed in its markets."""
        if not self.events:
            return self.initial()
        self.clock_ms += self.rng.randint(200, 1500)
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
        if r > 0.99:  # a VAR check or a dangerous attack
            ev.phase = "suspended"
            ev.suspended_for = 1
            return self._all(ev, {"status": "suspended"})
        return self._wiggle(ev)

    def _wiggle(self, ev: _Event) -> list[MarketUpdate]:
        # Reprice one or two markets of the event (the model moved a little).
        table = self._prices(ev)
        kinds = self.rng.sample(KINDS, self.rng.randint(1, 2))
        return [self._update(ev.markets[k], selections={s: {"price": p}
                                                        for s, p in table[k].items()})
                for k in kinds]


class _Applier(Protocol):
    async def apply(self, update: MarketUpdate) -> Any: ...


async def run_simulator(store: _Applier, config: SimulatorConfig, *,
                        stop: asyncio.Event | None = None, max_ticks: int | None = None,
                        start_ms: int = 1_700_000_000_000) -> int:
    """Write the simulated feed through ``store.apply`` at ``config.rate_per_s`` ticks per
    second until ``stop`` is set or ``max_ticks`` ticks ran; returns the ticks run.

    Pass the wall-clock ``start_ms`` so a restarted feed orders after the previous run."""
    sim = Simulator(config, start_ms=start_ms)
    for update in sim.initial():
        await store.apply(update)
    loop = asyncio.get_running_loop()
    interval = 1.0 / config.rate_per_s
    next_at = loop.time()
    ticks = 0
    while (stop is None or not stop.is_set()) and (max_ticks is None or ticks < max_ticks):
        for update in sim.step():
            await store.apply(update)
        ticks += 1
        next_at += interval
        delay = next_at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
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
