"""A streaming feed in the shape of Betfair's Exchange Stream API, one JSON message per line
over TCP or WebSocket; must not write to the store itself (it hands updates to the runner).

Pure part: :class:`StreamState` keeps the clocks and each market's definition and ladders
and turns ``mcm`` messages into MarketUpdates: ``marketDefinition.status`` OPEN/SUSPENDED/
CLOSED -> open/suspended/closed (settled when the definition says so), ``inPlay`` ->
in_play, ``betDelay`` (s) -> bet_delay_ms, runner REMOVED -> removed selection, and the best
available-to-back price (``batb`` level 0, else the best of ``atb``) -> selection price; a
ladder entry of size 0 deletes that level; ``img`` replaces the market.

The thin I/O client (:func:`betfair_stream.run_stream`) connects, logs in
(``authentication`` with the application key and session token, sent before anything else),
subscribes (re-subscribing with the last ``initialClk``/``clk`` after a disconnect), reads
lines, treats a link silent for 3 heartbeat intervals as dead, and reconnects with jittered
exponential backoff. Only a connection that carried market data (an ``mcm``) resets the
backoff: a refused login or subscription is a failure like any other. What a ``status``
FAILURE's ``errorCode`` means for the next connection is decided here, by the pure
:func:`failure_action`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import structlog

from oddsfeed.core.errors import InvalidInput, ProviderDataError
from oddsfeed.core.model import MAX_BET_DELAY_MS, MarketUpdate
from oddsfeed.core.prices import from_decimal

from .errors import ProviderRefused
from .normalised import FeedMapping

PROVIDER = "betfair"
STATUS = {"OPEN": "open", "SUSPENDED": "suspended", "CLOSED": "closed", "INACTIVE": "suspended"}
KINDS = {"MATCH_ODDS": "1x2", "ASIAN_HANDICAP": "handicap", "HANDICAP": "handicap"}
log = structlog.get_logger("oddsfeed.ingest.betfair")

# The Exchange Stream API's status error codes, by what the next connection should do.
# Fatal: the same credentials or request can only be refused again.
FATAL_CODES = frozenset({"NO_APP_KEY", "INVALID_APP_KEY", "NO_SESSION",
                         "INVALID_SESSION_INFORMATION", "NOT_AUTHORIZED", "INVALID_INPUT",
                         "INVALID_REQUEST"})
# The provider counts our connections or subscriptions: wait the longest backoff.
LIMIT_CODES = frozenset({"SUBSCRIPTION_LIMIT_EXCEEDED", "MAX_CONNECTION_LIMIT_EXCEEDED",
                         "TOO_MANY_REQUESTS"})
# The clocks we resumed from are unknown to the provider: subscribe afresh for an image.
CLOCK_CODES = frozenset({"INVALID_CLOCK"})


def failure_action(error_code: str) -> str:
    """What a status FAILURE's ``errorCode`` asks of the client: ``fatal`` (stop: bad
    credentials or a request the provider will never accept), ``fresh_image`` (subscribe
    without clocks), ``limit`` (wait the longest backoff) or ``retry`` (TIMEOUT,
    UNEXPECTED_ERROR, CONNECTION_FAILED and codes we do not know: back off and reconnect)."""
    if error_code in FATAL_CODES:
        return "fatal"
    if error_code in CLOCK_CODES:
        return "fresh_image"
    if error_code in LIMIT_CODES:
        return "limit"
    return "retry"


class StreamRefused(ProviderRefused):
    """The provider refused the stream for good (bad app key, invalid session, ...):
    ``error_code`` is its status errorCode."""

    def __init__(self, error_code: str, message: str) -> None:
        self.error_code = error_code
        super().__init__(message)


@dataclass
class _Market:
    definition: dict[str, Any] = field(default_factory=dict)
    batb: dict[str, dict[int, int]] = field(default_factory=dict)  # runner -> level -> ticks
    atb: dict[str, dict[int, float]] = field(default_factory=dict)  # runner -> ticks -> size
    last_pt: int = 0
    same_pt: int = 0  # messages already seen at last_pt (orders several per millisecond)


@dataclass
class StreamOutput:
    """What one stream message produced: updates, bad market changes, and signals."""

    updates: list[MarketUpdate] = field(default_factory=list)
    errors: list[ProviderDataError] = field(default_factory=list)
    heartbeat: bool = False
    market_data: bool = False  # an mcm: the subscription is live
    lagging: bool = False  # an mcm with status 503: the provider says its data is behind
    error_code: str | None = None  # a status FAILURE's errorCode
    closed: bool = False  # the provider said it is closing the connection


def bad_data(message: str, raw: object) -> ProviderDataError:
    return ProviderDataError(message, provider=PROVIDER, raw=raw)


def _number(x: object, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or x != x or x < 0:
        raise ValueError(f"{what} must be a non-negative number, got {str(x)[:40]!r}")
    return float(x)


def _kind(market_type: object, mapping: FeedMapping) -> str:
    mt = str(market_type or "")
    if mt in mapping.kinds:
        return mapping.kinds[mt]
    if mt.startswith("OVER_UNDER"):
        return "totals"
    return KINDS.get(mt, "")


def _parse_change(mc: object) -> tuple[str, dict[str, Any] | None, list[tuple[str, str, Any]]]:
    """Validate one market change before any state is touched: (id, definition, ops)."""
    if not isinstance(mc, dict):
        raise ValueError("a market change must be an object")
    raw_id = mc.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or raw_id == "":
        raise ValueError("a market change needs an id")
    definition = mc.get("marketDefinition")
    if definition is not None:
        if not isinstance(definition, dict):
            raise ValueError("marketDefinition must be an object")
        runners = definition.get("runners", [])
        if not isinstance(runners, list) or not all(
                isinstance(r, dict) and isinstance(r.get("id"), (int, str))
                and not isinstance(r.get("id"), bool) for r in runners):
            raise ValueError("marketDefinition.runners must be a list of runners with ids")
        if definition.get("status", "OPEN") not in STATUS:
            raise ValueError(f"unknown market status {str(definition.get('status'))[:40]!r}")
        delay = definition.get("betDelay", 0)
        if (isinstance(delay, bool) or not isinstance(delay, int)
                or not 0 <= delay * 1000 <= MAX_BET_DELAY_MS):
            raise ValueError(f"betDelay must be 0..{MAX_BET_DELAY_MS // 1000} seconds")
        if not isinstance(definition.get("inPlay", False), bool):
            raise ValueError("inPlay must be true or false")
    ops: list[tuple[str, str, Any]] = []
    rcs = mc.get("rc") or []
    if not isinstance(rcs, list):
        raise ValueError("rc must be a list")
    for rc in rcs:
        if not isinstance(rc, dict) or isinstance(rc.get("id"), bool) or not isinstance(
                rc.get("id"), (int, str)):
            raise ValueError("a runner change needs an id")
        rid = str(rc["id"])
        for level, price, size in rc.get("batb") or []:
            lvl = int(_number(level, "batb level"))
            ticks = from_decimal(price) if _number(size, "batb size") > 0 else 0
            ops.append(("batb", rid, (lvl, ticks)))
        for price, size in rc.get("atb") or []:
            ticks = from_decimal(price)
            ops.append(("atb", rid, (ticks, _number(size, "atb size"))))
    return str(raw_id), definition, ops


@dataclass
class StreamState:
    """Per-subscription stream state: clocks and per-market ladders. Feed it every message
    with :meth:`on_message`; it keeps what a re-subscription needs (:meth:`subscription`)."""

    mapping: FeedMapping = field(default_factory=FeedMapping)
    clk: str | None = None
    initial_clk: str | None = None
    heartbeat_ms: int = 5000
    markets: dict[str, _Market] = field(default_factory=dict)
    ours: dict[str, str] = field(default_factory=dict)  # provider market id -> ours
    lag_reports: int = 0

    def on_message(self, msg: object) -> StreamOutput:
        """One stream message -> its updates and the market changes that were bad; raises
        ProviderDataError when the whole message is unusable."""
        if not isinstance(msg, dict):
            raise bad_data("a message must be an object", msg)
        op = msg.get("op")
        out = StreamOutput()
        if op == "status":
            if msg.get("statusCode") == "FAILURE":
                out.error_code = str(msg.get("errorCode") or "UNEXPECTED_ERROR")[:60]
                log.warning("stream status failure", error_code=out.error_code,
                            message=str(msg.get("errorMessage", ""))[:200],
                            connection_closed=msg.get("connectionClosed") is True)
            out.closed = msg.get("connectionClosed") is True
            return out
        if op != "mcm":
            if not isinstance(op, str):
                raise bad_data("a message needs op", msg)
            return out  # connection, authentication acks and others carry no odds
        out.market_data = True
        for key in ("initialClk", "clk"):
            if key in msg and not isinstance(msg[key], str):
                raise bad_data(f"{key} must be a string token", msg)
        if msg.get("status") == 503:
            # A documented lag notice, not bad data: it may come without pt or market
            # changes, and its clocks still count.
            out.lagging = True
            self.lag_reports += 1
            log.info("provider lag reported (status 503)", provider=PROVIDER, pt=msg.get("pt"))
            if not msg.get("mc"):
                self.clk = msg.get("clk", self.clk)
                self.initial_clk = msg.get("initialClk", self.initial_clk)
                out.heartbeat = True
                return out
        hb = msg.get("heartbeatMs")
        if hb is not None and (isinstance(hb, bool) or not isinstance(hb, int) or hb <= 0):
            raise bad_data("heartbeatMs must be a positive integer", msg)
        pt = msg.get("pt")
        if isinstance(pt, bool) or not isinstance(pt, int) or not 0 <= pt < 2**43:
            raise bad_data("mcm needs pt (publish time in ms)", msg)
        mcs = msg.get("mc") or []
        if not isinstance(mcs, list):
            raise bad_data("mc must be a list", msg)
        if "initialClk" in msg:
            self.initial_clk = msg["initialClk"]
        if "clk" in msg:
            self.clk = msg["clk"]
        if hb is not None:
            self.heartbeat_ms = hb
        if msg.get("ct") == "HEARTBEAT":
            out.heartbeat = True
            return out
        for mc in mcs:
            try:
                update = self._market_change(mc, pt)
            except (KeyError, TypeError, ValueError, InvalidInput, ProviderDataError) as exc:
                out.errors.append(exc if isinstance(exc, ProviderDataError) else bad_data(
                    f"bad market change: {exc}", mc))
                continue
            if update is not None:
                out.updates.append(update)
        return out

    def _market_change(self, mc: object, pt: int) -> MarketUpdate | None:
        raw_id, definition, ops = _parse_change(mc)
        assert isinstance(mc, dict)
        image = mc.get("img") is True
        state = self.markets.get(raw_id)
        if state is None or image:
            old = state.definition if state is not None else {}
            state = self.markets[raw_id] = _Market(definition=dict(old))
        if definition is not None:
            state.definition = dict(definition)
        for kind, rid, value in ops:
            if kind == "batb":
                level, ticks = value
                levels = state.batb.setdefault(rid, {})
                if ticks:
                    levels[level] = ticks
                else:
                    levels.pop(level, None)
            else:
                ticks, size = value
                ladder = state.atb.setdefault(rid, {})
                if size > 0:
                    ladder[ticks] = size
                else:
                    ladder.pop(ticks, None)
        # Several messages may share one pt: order them within the millisecond.
        if pt == state.last_pt:
            state.same_pt = min(state.same_pt + 1, 999)
        elif pt > state.last_pt:
            state.last_pt, state.same_pt = pt, 0
        seq = pt * 1000 + (state.same_pt if pt == state.last_pt else 0)
        d = state.definition
        if not d:
            return None  # no definition yet: nothing we can create or name
        market_id = self.ours.get(raw_id) or self.mapping.market(raw_id, PROVIDER)
        status = STATUS[str(d.get("status", "OPEN"))]
        runners = d.get("runners") or []
        if status == "closed" and (d.get("settledTime") or any(
                r.get("status") in ("WINNER", "LOSER", "PLACED") for r in runners)):
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
            sel: dict[str, Any] = {"name": str(r.get("name") or f"runner {rid}")[:256],
                                   "price": price, "status": "active"}
            if r.get("hc") is not None:
                sel["point"] = r["hc"]
            sels[sid] = sel
        event = d.get("eventId")
        if event is None:
            raise ValueError("marketDefinition needs eventId")
        fields = {"event": self.mapping.event(event, PROVIDER),
                  "sport": self.mapping.sport(d.get("eventTypeId", "betfair")),
                  "name": str(d.get("name") or d.get("marketType") or f"market {raw_id}")[:256],
                  "kind": _kind(d.get("marketType"), self.mapping),
                  "status": status, "in_play": d.get("inPlay", False),
                  "bet_delay_ms": int(d.get("betDelay", 0)) * 1000}
        update = MarketUpdate(market=market_id, fields=fields, selections=sels, create=True,
                              replace=image, ts=pt, seq=seq)
        self.ours[raw_id] = market_id
        return update

    @staticmethod
    def _best_back(state: _Market, rid: str) -> int | None:
        levels = state.batb.get(rid)
        if levels:
            return levels[min(levels)]
        ladder = state.atb.get(rid)
        if ladder:
            return max(ladder)
        return None

    def forget_clocks(self) -> None:
        """Drop the clocks, so the next :meth:`subscription` asks for a fresh image (after
        INVALID_CLOCK); the markets' ladders are replaced by that image."""
        self.clk = self.initial_clk = None

    def subscription(self, market_filter: dict[str, Any], *, request_id: int = 1
                     ) -> dict[str, Any]:
        """The marketSubscription to send on (re)connect: it resumes from the last clocks."""
        msg: dict[str, Any] = {"op": "marketSubscription", "id": request_id,
                               "marketFilter": market_filter, "heartbeatMs": self.heartbeat_ms}
        if self.initial_clk:
            msg["initialClk"] = self.initial_clk
        if self.clk:
            msg["clk"] = self.clk
        return msg
