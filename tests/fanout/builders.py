"""Market updates for the fan-out suite (prices in ticks, as the store takes them)."""

from __future__ import annotations

import random

from oddsfeed.core.model import MarketUpdate


def create(mid: str, event: str = "e1", **prices: int) -> MarketUpdate:
    """Create (or keep) market ``mid`` under ``event`` with selections id -> price ticks."""
    prices = prices or {"h": 25000, "a": 30000}
    return MarketUpdate(market=mid, fields={"event": event, "sport": "soccer", "name": mid},
                        selections={s: {"name": s.upper(), "price": p} for s, p in prices.items()},
                        create=True)


def price(mid: str, ticks: int, sid: str = "h") -> MarketUpdate:
    """Move one selection's price."""
    return MarketUpdate(market=mid, selections={sid: {"price": ticks}})


def random_update(rng: random.Random, mid: str) -> MarketUpdate:
    """One random change of the kinds a feed sends: prices (mostly), statuses, lines,
    in-play, names, selections added and removed."""
    roll = rng.random()
    if roll < 0.70:
        sids = rng.sample(["h", "a"], rng.randint(1, 2))
        return MarketUpdate(market=mid, selections={
            s: {"price": rng.randint(10_500, 120_000)} for s in sids})
    if roll < 0.76:
        return MarketUpdate(market=mid, fields={"status": rng.choice(["open", "suspended"])})
    if roll < 0.80:
        return MarketUpdate(market=mid, selections={
            rng.choice(["h", "a"]): {"status": rng.choice(["active", "suspended"])}})
    if roll < 0.84:
        return MarketUpdate(market=mid, fields={"in_play": rng.random() < 0.5,
                                                "bet_delay_ms": rng.choice([0, 5000])})
    if roll < 0.87:
        return MarketUpdate(market=mid, fields={"name": f"{mid} {rng.randint(0, 9)}"})
    if roll < 0.91:
        return MarketUpdate(market=mid, selections={"h": {"point": rng.choice([-1.5, 0.5, None])}})
    if roll < 0.96:
        return MarketUpdate(market=mid, selections={
            "x": {"name": "Draw", "price": rng.randint(20_000, 50_000),
                  "point": rng.choice([None, 2.5])}})
    return MarketUpdate(market=mid, selections={"x": {"status": "removed"}})
