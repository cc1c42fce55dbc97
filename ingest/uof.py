"""A feed in the shape of Sportradar's Unified Odds Feed (UOF): XML messages on an AMQP topic
exchange; must not write to the store itself (it hands updates to the runner).

Pure part: :class:`UofState` (with the mapping file of ``uof_mapping``, config/uof.toml),
which turns ``odds_change``, ``bet_stop``, ``bet_settlement``, ``bet_cancel`` and ``alive``
messages into MarketUpdates and keeps each producer's liveness:

- ``odds_change``: market ``status`` 1 -> open, -1 / -2 (handed over) -> suspended,
  0 (deactivated) / -4 (cancelled) -> closed, -3 -> settled; outcome ``odds`` (decimal) ->
  selection price, ``active="0"`` -> selection suspended;
- ``bet_stop``: the event's markets (all, or those in one of ``groups``) -> suspended (or
  the ``market_status`` given);
- ``bet_settlement``: certainty 2 (confirmed) -> settled, certainty 1 (live data, may be
  rolled back) -> closed; ``bet_cancel`` without a time window -> closed;
- ``alive``: a producer whose alive is missing past the timeout, or says ``subscribed="0"``,
  is down: its markets are suspended, and its odds_change messages keep them suspended
  until an alive says it is up again; then each market reopens on its next odds_change.

A message's ``timestamp`` (ms) orders it per market (``seq``); suspensions made here for a
down producer carry no seq, so no later provider message is ever judged older than them.

The AMQP I/O is in ingest/uof_amqp.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element, ParseError

import structlog
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from prometheus_client import Counter

from oddsfeed.core.errors import InvalidInput, PriceError, ProviderDataError
from oddsfeed.core.model import MarketUpdate
from oddsfeed.core.prices import from_decimal

from .uof_mapping import (
    Target,
    UofEvent,
    UofMapping,
    UofMarketMapping,
    derived_id,
    fill_template,
    parse_specifiers,
)

PROVIDER = "uof"
MAX_XML_BYTES = 8 << 20
MAX_MARKETS = 5000  # per message; a real odds_change of a big event has a few hundred
STATUS = {"1": "open", "-1": "suspended", "-2": "suspended", "0": "closed", "-3": "settled",
          "-4": "closed"}
SEQ_PER_MS = 1000  # messages at one provider millisecond still order within a market
log = structlog.get_logger("oddsfeed.ingest.uof")
SKIPPED = Counter("oddsfeed_ingest_uof_skipped_markets_total",
                  "UOF markets skipped because the mapping file does not map them", ["source"])


# ------------------------------------------------------------------ parsing and state


def _bad(message: str, raw: object) -> ProviderDataError:
    return ProviderDataError(message, provider=PROVIDER, raw=raw)


def parse_xml(body: bytes) -> Element:
    """One message's XML root; raises ProviderDataError for oversized, malformed XML or XML
    with a DTD or entities (never expanded)."""
    if len(body) > MAX_XML_BYTES:
        raise _bad(f"message of {len(body)} bytes is over {MAX_XML_BYTES}", body[:300])
    try:
        return fromstring(body, forbid_dtd=True)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        raise _bad(f"bad xml: {type(exc).__name__}: {exc}", body[:300]) from None


def _timestamp(root: Element) -> int:
    raw = root.get("timestamp", "")
    if not raw.isdigit() or not 0 < int(raw) < 2**43:
        raise _bad(f"{root.tag} needs timestamp (ms), got {raw[:40]!r}", root.attrib)
    return int(raw)


@dataclass
class UofOutput:
    """What one message (or a liveness check) produced: updates, bad markets, and the
    producers that showed life or went down."""

    updates: list[MarketUpdate] = field(default_factory=list)
    errors: list[ProviderDataError] = field(default_factory=list)
    alive: str | None = None  # a producer that is up and said so
    down: list[str] = field(default_factory=list)
    up: list[str] = field(default_factory=list)


@dataclass
class _Producer:
    last_alive_s: float
    up: bool = True


@dataclass
class UofState:
    """The adapter's state: which of our markets each event and producer has, each
    producer's liveness, and the per-market message order. Feed it every message with
    :meth:`on_message` and call :meth:`check_producers` every second or so."""

    mapping: UofMapping = field(default_factory=UofMapping)
    producer_timeout_s: float = 20.0
    producers: dict[str, _Producer] = field(default_factory=dict)
    owner: dict[str, str] = field(default_factory=dict)  # our market -> producer of its odds
    event_markets: dict[str, dict[str, frozenset[str]]] = field(default_factory=dict)
    selections: dict[str, set[str]] = field(default_factory=dict)  # priced ones per market
    status: dict[str, str] = field(default_factory=dict)  # our market -> status last sent
    last_seq: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def _count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    def markets_of(self, producer: str) -> list[str]:
        """Our markets whose odds last came from ``producer`` (settled ones excepted)."""
        return [m for m, p in self.owner.items() if p == producer]

    def _set_status(self, market: str, status: str) -> None:
        if status == "settled":  # final: the store accepts nothing more for it
            self.owner.pop(market, None)
            self.status.pop(market, None)
            self.selections.pop(market, None)
            for markets in self.event_markets.values():
                markets.pop(market, None)
        else:
            self.status[market] = status

    def is_up(self, producer: str) -> bool:
        p = self.producers.get(producer)
        return p is None or p.up

    def on_message(self, body: bytes, now_s: float) -> UofOutput:
        """One AMQP message body -> its updates and bad markets; raises ProviderDataError
        when the whole message is unusable. ``now_s`` is the receive time."""
        root = parse_xml(body)
        out = UofOutput()
        tag = root.tag
        if tag == "alive":
            self._alive(root, now_s, out)
        elif tag == "odds_change":
            self._seen(root, now_s)
            self._odds_change(root, out)
        elif tag == "bet_stop":
            self._seen(root, now_s)
            self._bet_stop(root, out)
        elif tag in ("bet_settlement", "bet_cancel"):
            self._closing(root, out)
        else:
            self._count(f"ignored_{tag[:40]}")  # fixture_change, snapshot_complete, ...
        return out

    def check_producers(self, now_s: float) -> UofOutput:
        """Take down every producer whose last alive is older than the timeout; the
        output suspends their markets."""
        out = UofOutput()
        for pid, p in self.producers.items():
            if p.up and now_s - p.last_alive_s > self.producer_timeout_s:
                log.warning("uof producer down: alive missing", producer=pid,
                            silent_s=round(now_s - p.last_alive_s, 1))
                self._down(pid, out)
        return out

    def _seen(self, root: Element, now_s: float) -> None:
        # A producer is watched from its first message, so one whose alives never come (a
        # wrong binding, a dead producer) is taken down too.
        pid = root.get("product", "")
        if pid.isdigit() and pid not in self.producers:
            self.producers[pid] = _Producer(last_alive_s=now_s)

    def _down(self, pid: str, out: UofOutput) -> None:
        self.producers[pid].up = False
        self._count("producer_down")
        out.down.append(pid)
        for m in self.markets_of(pid):
            if self.status.get(m) == "open":  # closed ones stay closed
                out.updates.append(MarketUpdate(market=m, fields={"status": "suspended"}))
                self.status[m] = "suspended"

    def _alive(self, root: Element, now_s: float, out: UofOutput) -> None:
        pid = root.get("product", "")
        if not pid.isdigit():
            raise _bad("alive needs product", root.attrib)
        _timestamp(root)
        p = self.producers.setdefault(pid, _Producer(last_alive_s=now_s))
        p.last_alive_s = now_s
        if root.get("subscribed", "1") == "0":
            if p.up:
                log.warning("uof producer down: subscribed=0", producer=pid)
                self._down(pid, out)
            return
        if not p.up:
            p.up = True
            out.up.append(pid)
            log.info("uof producer up: its markets reopen on their next odds_change",
                     producer=pid)
        out.alive = pid

    def _seq(self, market: str, ts: int) -> int:
        seq = max(ts * SEQ_PER_MS, self.last_seq.get(market, 0) + 1)
        if seq >= (ts + 1) * SEQ_PER_MS:  # an older message: keep its own slot, let the
            seq = ts * SEQ_PER_MS         # store judge it out of order
        self.last_seq[market] = max(seq, self.last_seq.get(market, 0))
        return seq

    def _target(self, event_urn: str, market_id: str, specifiers: str) -> Target | None:
        m = self.mapping
        spec = parse_specifiers(specifiers)
        mm = m.markets.get(market_id)
        if mm is None:
            if m.unmapped == "skip":
                return None
            mm = UofMarketMapping()
        ev = m.events.get(event_urn, UofEvent())
        event = ev.id or derived_id(event_urn)
        values = {**spec, "event": event, "market": market_id,
                  "specifiers": f":{specifiers}" if specifiers else ""}
        exact = (m.ids.get(f"{event_urn}/{market_id}/{specifiers}") if specifiers
                 else m.ids.get(f"{event_urn}/{market_id}"))
        point = None
        if mm.point:
            if mm.point not in spec:
                raise ValueError(f"market {market_id} needs specifier {mm.point!r}")
            point = float(spec[mm.point])
        return Target(market=exact or derived_id(fill_template(mm.id, values)), event=event,
                       sport=ev.sport or m.default_sport, name=fill_template(mm.name, values)[:256],
                       kind=mm.kind, groups=frozenset(mm.groups), point=point,
                       outcomes=mm.outcomes)

    def _odds_change(self, root: Element, out: UofOutput) -> None:
        pid = root.get("product", "")
        event_urn = root.get("event_id", "")
        if not pid or not event_urn:
            raise _bad("odds_change needs product and event_id", root.attrib)
        ts = _timestamp(root)
        odds = root.find("odds")
        markets = [] if odds is None else odds.findall("market")
        if len(markets) > MAX_MARKETS:
            raise _bad(f"odds_change with {len(markets)} markets", root.attrib)
        up = self.is_up(pid)
        for el in markets:
            try:
                update = self._market(el, pid, event_urn, ts, up)
            except (ValueError, InvalidInput, PriceError) as exc:
                out.errors.append(_bad(f"bad market: {exc}", el.attrib))
                continue
            if update is not None:
                out.updates.append(update)

    def _market(self, el: Element, pid: str, event_urn: str, ts: int,
                up: bool) -> MarketUpdate | None:
        market_id = el.get("id", "")
        if not market_id.isdigit():
            raise ValueError(f"market id must be a number, got {market_id[:40]!r}")
        specifiers = el.get("specifiers", "")
        target = self._target(event_urn, market_id, specifiers)
        if target is None:
            self._count("skipped_unmapped")
            SKIPPED.labels(PROVIDER).inc()
            return None
        status_code = el.get("status", "1")
        if status_code not in STATUS:
            raise ValueError(f"unknown market status {status_code[:10]!r}")
        # A down producer's odds are kept but not offered: see the module docstring.
        status = STATUS[status_code] if up or STATUS[status_code] != "open" else "suspended"
        known = self.selections.setdefault(target.market, set())
        sels: dict[str, dict[str, Any]] = {}
        for oc in el.findall("outcome"):
            sid, name, negate = self._outcome(target, oc.get("id", ""))
            if sid is None:
                continue
            patch: dict[str, Any] = {"status": "active" if oc.get("active", "1") == "1"
                                     else "suspended"}
            raw_odds = oc.get("odds")
            if raw_odds is not None:
                patch["price"] = from_decimal(raw_odds)
            elif sid not in known:
                continue  # never priced: nothing to show yet
            if sid not in known:
                patch["name"] = name
                if target.point is not None:
                    patch["point"] = -target.point if negate else target.point
            sels[sid] = patch
        update = MarketUpdate(
            market=target.market, create=True, ts=ts, seq=self._seq(target.market, ts),
            fields={"event": target.event, "sport": target.sport, "name": target.name,
                    "kind": target.kind, "status": status,
                    "in_play": pid in self.mapping.live_producers},
            selections=sels)
        known.update(sels)
        self.owner[target.market] = pid
        self.event_markets.setdefault(event_urn, {})[target.market] = target.groups
        self._set_status(target.market, status)
        return update

    def _outcome(self, target: Target, raw: str) -> tuple[str | None, str, bool]:
        if not raw:
            raise ValueError("an outcome needs an id")
        mapped = target.outcomes.get(raw)
        if mapped is None:
            if target.outcomes and self.mapping.unmapped == "skip":
                self._count("skipped_unmapped_outcome")
                return None, "", False
            sid = derived_id(raw)
            return sid, raw[:256], False
        if isinstance(mapped, str):
            return mapped, mapped, False
        return mapped.id, mapped.name or mapped.id, mapped.negate_point

    def _bet_stop(self, root: Element, out: UofOutput) -> None:
        event_urn = root.get("event_id", "")
        if not event_urn:
            raise _bad("bet_stop needs event_id", root.attrib)
        ts = _timestamp(root)
        status = STATUS.get(root.get("market_status", "-1"))
        if status is None or status == "open":
            raise _bad("bet_stop market_status must stop betting", root.attrib)
        wanted = set(filter(None, root.get("groups", "all").split("|")))
        for market, groups in list(self.event_markets.get(event_urn, {}).items()):
            if ("all" in wanted or wanted & groups) and self.status.get(market) in (
                    "open", "suspended"):
                out.updates.append(MarketUpdate(market=market, fields={"status": status},
                                                ts=ts, seq=self._seq(market, ts)))
                self._set_status(market, status)

    def _closing(self, root: Element, out: UofOutput) -> None:
        event_urn = root.get("event_id", "")
        if not event_urn:
            raise _bad(f"{root.tag} needs event_id", root.attrib)
        ts = _timestamp(root)
        if root.tag == "bet_settlement":
            status = "closed" if root.get("certainty") == "1" else "settled"
            holder = root.find("outcomes")
            markets = [] if holder is None else holder.findall("market")
        else:
            if root.get("start_time") or root.get("end_time"):
                # Only bets placed in a time window are void; the market itself goes on.
                self._count("bet_cancel_window")
                return
            status = "closed"
            markets = root.findall("market")
        for el in markets[:MAX_MARKETS]:
            market_id = el.get("id", "")
            try:
                target = self._target(event_urn, market_id, el.get("specifiers", ""))
            except ValueError as exc:
                out.errors.append(_bad(f"bad market: {exc}", el.attrib))
                continue
            if target is None:
                self._count("skipped_unmapped")
                SKIPPED.labels(PROVIDER).inc()
                continue
            out.updates.append(MarketUpdate(market=target.market, fields={"status": status},
                                            ts=ts, seq=self._seq(target.market, ts)))
            self._set_status(target.market, status)
