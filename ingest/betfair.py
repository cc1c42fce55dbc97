"""A streaming feed in the shape of Betfair's Exchange Stream API, one JSON per line over TCP.

Pure part: :class:`StreamState` keeps each market's definition and ladders and turns ``mcm``
messages into MarketUpdates (best available-to-back price -> selection price). Thin I/O at
the bottom: connect, subscribe with the last clocks, read lines, detect a silent link by
heartbeats, reconnect with jittered backoff.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from oddsfeed.errors import InvalidInput, ProviderDataError
from oddsfeed.model import MarketUpdate
from oddsfeed.prices import from_decimal

from .normalised import Mapping, safe_id

PROVIDER = "betfair"
STATUS = {"OPEN": "open", "SUSPENDED": "suspended", "CLOSED": "closed", "INACTIVE": "suspended"}
log = structlog.get_logger("oddsfeed.ingest.betfair")


@dataclass
class _Market:
    definition: dict[str, Any] = field(default_factory=dict)
    batb: dict[str, dict[int, float]] = field(default_factory=dict)  # runner -> level -> price
    atb: dict[str, dict[float, float]] = field(default_factory=dict)  # runner -> price -> size
    names: dict[str, str] = field(default_factory=dict)


@dataclass
class StreamState:
    """Per-connection stream state: clocks and per-market ladders."""

    mapping: Mapping = field(default_factory=Mapping)
    clk: str | None = None
    initial_clk: str | None = None
    markets: dict[str, _Market] = field(default_factory=dict)
    heartbeat_ms: int = 5000

    def on_message(self, msg: object) -> list[MarketUpdate]:
        """One stream message -> updates; raises ProviderDataError for a bad one."""
        if not isinstance(msg, dict):
            raise ProviderDataError("a message must be an object", provider=PROVIDER, raw=msg)
        op = msg.get("op")
        if op == "status":
            if msg.get("statusCode") == "FAILURE" or msg.get("status") == 503:
                log.info("provider lag reported", raw=str(msg)[:200])
            return []
        if op != "mcm":
            return []  # connection, heartbeat acks and others carry no odds
        if msg.get("status") == 503:
            log.info("provider lag: status 503", pt=msg.get("pt"))
        if "initialClk" in msg:
            self.initial_clk = str(msg["initialClk"])
        if "clk" in msg:
            self.clk = str(msg["clk"])
        if "heartbeatMs" in msg and isinstance(msg["heartbeatMs"], int):
            self.heartbeat_ms = msg["heartbeatMs"]
        if msg.get("ct") == "HEARTBEAT":
            return []
        pt = msg.get("pt")
        if not isinstance(pt, int):
            raise ProviderDataError("mcm needs pt (publish time, ms)", provider=PROVIDER, raw=msg)
        mcs = msg.get("mc") or []
        if not isinstance(mcs, list):
            raise ProviderDataError("mc must be a list", provider=PROVIDER, raw=msg)
        out = []
        for mc in mcs:
            try:
                out.append(self._market_change(mc, pt))
            except (KeyError, TypeError, ValueError, AttributeError, InvalidInput) as exc:
                raise ProviderDataError(f"bad market change: {exc}", provider=PROVIDER,
                                        raw=mc) from None
        return [u for u in out if u is not None]

    def _market_change(self, mc: dict[str, Any], pt: int) -> MarketUpdate | None:
        raw_id = str(mc["id"])
        state = self.markets.get(raw_id)
        if state is None or mc.get("img"):
            state = self.markets[raw_id] = _Market(definition=dict(
                state.definition if state and not mc.get("marketDefinition") else {}))
        if "marketDefinition" in mc:
            state.definition = dict(mc["marketDefinition"])
        for rc in mc.get("rc") or []:
            rid = str(rc["id"])
            if "batb" in rc:
                levels = state.batb.setdefault(rid, {})
                for level, price, size in rc["batb"]:
                    if size == 0:
                        levels.pop(int(level), None)
                    else:
                        levels[int(level)] = float(price)
            if "atb" in rc:
                ladder = state.atb.setdefault(rid, {})
                for price, size in rc["atb"]:
                    if size == 0:
                        ladder.pop(float(price), None)
                    else:
                        ladder[float(price)] = float(size)
        d = state.definition
        if not d:
            return None  # no definition yet: nothing we can create
        status = STATUS.get(str(d.get("status", "OPEN")), "suspended")
        runners = d.get("runners") or []
        if status == "closed" and (d.get("settledTime") or any(
                r.get("status") in ("WINNER", "LOSER") for r in runners)):
            status = "settled"
        sels: dict[str, dict[str, Any]] = {}
        for r in runners:
            rid = str(r["id"])
            sid = self.mapping.selection(rid, PROVIDER)
            if r.get("status") == "REMOVED":
                sels[sid] = {"status": "removed"}
                continue
            price = self._best_back(state, rid)
            if price is None:
                continue  # no price offered: leave the runner out until one arrives
            sel: dict[str, Any] = {"name": str(r.get("name") or f"runner {rid}"),
                                   "price": from_decimal(price), "status": "active"}
            if r.get("hc") is not None:
                sel["point"] = r["hc"]
            sels[sid] = sel
        fields = {"event": self.mapping.event(d.get("eventId", raw_id), PROVIDER),
                  "sport": safe_id(d.get("eventTypeId", "betfair")),
                  "name": str(d.get("name") or f"market {raw_id}"),
                  "status": status, "in_play": bool(d.get("inPlay", False)),
                  "bet_delay_ms": int(d.get("betDelay", 0)) * 1000}
        return MarketUpdate(market=self.mapping.market(raw_id, PROVIDER), fields=fields,
                            selections=sels, create=True, replace=bool(mc.get("img")), ts=pt,
                            seq=pt)

    @staticmethod
    def _best_back(state: _Market, rid: str) -> float | None:
        levels = state.batb.get(rid)
        if levels:
            return levels[min(levels)]
        ladder = state.atb.get(rid)
        if ladder:
            return max(ladder)
        return None

    def subscription(self, market_filter: dict[str, Any]) -> dict[str, Any]:
        """The marketSubscription to send (re)connecting: resumes from the last clocks."""
        msg: dict[str, Any] = {"op": "marketSubscription", "id": 1, "marketFilter": market_filter,
                               "heartbeatMs": self.heartbeat_ms}
        if self.initial_clk:
            msg["initialClk"] = self.initial_clk
        if self.clk:
            msg["clk"] = self.clk
        return msg


async def run_stream(host: str, port: int, state: StreamState,
                     on_updates: Callable[[list[MarketUpdate]], Awaitable[None]],
                     on_bad: Callable[[ProviderDataError], None], *,
                     market_filter: dict[str, Any] | None = None,
                     stop: asyncio.Event | None = None, max_backoff_s: float = 30.0,
                     on_connect: Callable[[int], None] | None = None) -> None:
    """Connect, subscribe (with clocks after a reconnect), and feed messages until ``stop``.

    A link silent for 3 heartbeats is dropped and reconnected with jittered backoff.
    """
    backoff = 0.1
    connects = 0
    while stop is None or not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, port, limit=2**22)
        except OSError as exc:
            log.warning("stream connect failed", error=str(exc))
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, max_backoff_s)
            continue
        connects += 1
        if on_connect:
            on_connect(connects)
        try:
            writer.write(json.dumps(state.subscription(market_filter or {})).encode() + b"\n")
            await writer.drain()
            backoff = 0.1
            while stop is None or not stop.is_set():
                silent_s = 3 * state.heartbeat_ms / 1000
                try:
                    line = await asyncio.wait_for(reader.readline(), silent_s)
                except TimeoutError:
                    log.warning("stream silent: reconnecting", silent_s=silent_s)
                    break
                if not line:
                    break  # closed by the provider
                try:
                    msg = json.loads(line)
                    updates = state.on_message(msg)
                except ValueError:
                    on_bad(ProviderDataError("malformed JSON line", provider=PROVIDER,
                                             raw=line[:300]))
                    continue
                except ProviderDataError as exc:
                    on_bad(exc)
                    continue
                if updates:
                    await on_updates(updates)
        except (OSError, asyncio.IncompleteReadError) as exc:
            log.warning("stream dropped", error=str(exc))
        finally:
            writer.close()
        await asyncio.sleep(backoff * (0.5 + random.random()))
        backoff = min(backoff * 2, max_backoff_s)
