"""Our own normalised JSON (the push endpoint's and the simulator recording's shape), the
provider id mapping (config/mappings.toml), and the replay/record line format. Pure: no I/O.

A message is ``{"market", "event"?, "sport"?, "name"?, "kind"?, "status"?, "in_play"?,
"bet_delay_ms"?, "selections"?: {id: {"name"?, "price"?, "point"?, "status"?}}, "ts"?,
"seq"?, "replace"?}``; prices in any input shape of protocol.md section 1 (decimal number,
"5/2", "+150", {"hk": 1.5}, ...). With event, sport and name present the market is created
on first sight.
"""

from __future__ import annotations

import json
import re
import tomllib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from oddsfeed.core.errors import InvalidInput, ProviderDataError
from oddsfeed.core.model import MARKET_FIELDS, MarketUpdate, check_price_input

_TOP = frozenset({"market", "event", "sport", "name", "kind", "status", "in_play",
                  "bet_delay_ms", "selections", "ts", "seq", "replace"})
_SEL = frozenset({"name", "price", "point", "status"})
_GIVEN = (*MARKET_FIELDS, "event", "sport")
_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]+")
MAX_LINE_BYTES = 1 << 20


def safe_id(raw: object) -> str:
    """A provider id made safe for our charset (others replaced by '_', cut to 128)."""
    text = _UNSAFE.sub("_", str(raw)).strip("_")
    return text[:128] or "_"


class FeedMapping(BaseModel):
    """Provider ids -> our ids for one provider (one ``[providers.<name>]`` table).

    ``events``, ``markets`` and ``selections`` map provider ids to ours; ``sports`` and
    ``kinds`` map provider sport and market-type codes to our names. ``create_unknown``
    lets a market never seen in the mapping be created on first sight with its provider
    ids made safe; without it an unknown event or market id is bad provider data.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    events: dict[str, str] = Field(default_factory=dict)
    markets: dict[str, str] = Field(default_factory=dict)
    selections: dict[str, str] = Field(default_factory=dict)
    sports: dict[str, str] = Field(default_factory=dict)
    kinds: dict[str, str] = Field(default_factory=dict)
    create_unknown: bool = True

    @classmethod
    def from_toml(cls, text: str, provider: str) -> FeedMapping:
        """The mapping of ``provider`` in a mappings file's text (an empty one when the file
        has no table for it); raises ValueError naming the bad key."""
        try:
            data = tomllib.loads(text).get("providers", {}).get(provider, {})
            return cls.model_validate(data)
        except (tomllib.TOMLDecodeError, ValidationError) as exc:
            raise ValueError(f"bad mapping for provider {provider!r}: {exc}") from None

    def _map(self, table: dict[str, str], raw: object, what: str, provider: str) -> str:
        key = str(raw)
        if key in table:
            return table[key]
        if not self.create_unknown:
            raise ProviderDataError(f"unknown {what} id {key[:60]!r} and no mapping for it",
                                    provider=provider, raw=raw)
        return safe_id(key)

    def event(self, raw: object, provider: str) -> str:
        """Our event id for a provider event id; raises ProviderDataError when unmapped
        and unknown ids are not allowed."""
        return self._map(self.events, raw, "event", provider)

    def market(self, raw: object, provider: str) -> str:
        """Our market id for a provider market id (same rule as :meth:`event`)."""
        return self._map(self.markets, raw, "market", provider)

    def selection(self, raw: object, provider: str) -> str:
        """Our selection id (selection ids are per market, so unknown ones are kept)."""
        return self.selections.get(str(raw)) or safe_id(raw)

    def sport(self, raw: object) -> str:
        return self.sports.get(str(raw)) or safe_id(raw)

    def kind(self, raw: object, default: str = "") -> str:
        return self.kinds.get(str(raw), default)


def normalize_message(msg: object, *, provider: str = "push",
                      mapping: FeedMapping | None = None) -> MarketUpdate:
    """One normalised JSON message -> MarketUpdate; raises ProviderDataError when bad.

    ``seq`` orders the source's messages (``ts`` when there is no ``seq``); ``mapping``
    maps provider market/event ids when given.
    """
    if not isinstance(msg, dict):
        raise ProviderDataError("a message must be an object", provider=provider, raw=msg)
    if not _TOP.issuperset(msg):
        unknown = set(msg) - _TOP
        raise ProviderDataError(f"unknown field {sorted(unknown)[0]!r}", provider=provider,
                                raw=msg)
    if "market" not in msg:
        raise ProviderDataError("market is required", provider=provider, raw=msg)
    try:
        fields = {k: msg[k] for k in _GIVEN if k in msg}
        market = msg["market"]
        if mapping is not None:
            market = mapping.market(market, provider)
            if "event" in fields:
                fields["event"] = mapping.event(fields["event"], provider)
        sels: dict[str, dict[str, Any]] = {}
        raw_sels = msg.get("selections", {})
        if not isinstance(raw_sels, dict):
            raise InvalidInput("must be an object", path="selections")
        for sid, sel in raw_sels.items():
            if not isinstance(sel, dict):
                raise InvalidInput("must be an object", path=f"selections.{sid}")
            if not _SEL.issuperset(sel):
                bad = set(sel) - _SEL
                raise InvalidInput("unknown field", path=f"selections.{sid}.{sorted(bad)[0]}")
            patch = dict(sel)
            if "price" in patch:
                patch["price"] = check_price_input(patch["price"], f"selections.{sid}.price")
            key = mapping.selection(sid, provider) if mapping is not None else str(sid)
            sels[key] = patch
        create = all(k in fields for k in ("event", "sport", "name"))
        replace = msg.get("replace", False)
        if not isinstance(replace, bool):
            raise InvalidInput("must be true or false", path="replace")
        seq = msg.get("seq")
        return MarketUpdate(market=market, fields=fields, selections=sels, create=create,
                            replace=replace and create, ts=msg.get("ts"),
                            seq=seq if seq is not None else msg.get("ts"))
    except ProviderDataError:
        raise
    except InvalidInput as exc:
        raise ProviderDataError(str(exc), provider=provider, raw=msg) from None
    except (TypeError, ValueError) as exc:
        raise ProviderDataError(f"bad message: {exc}", provider=provider, raw=msg) from None


def to_message(u: MarketUpdate) -> dict[str, Any]:
    """The normalised JSON of an update (prices as exact decimal strings): what the
    simulator records and a push provider sends."""
    msg: dict[str, Any] = {"market": u.market, **u.fields}
    if u.selections:
        msg["selections"] = {k: dict(v) for k, v in u.selections.items()}
        for sel in msg["selections"].values():
            if "price" in sel:
                ticks = sel["price"]
                sel["price"] = f"{ticks // 10_000}.{ticks % 10_000:04d}"
    if u.ts is not None:
        msg["ts"] = u.ts
    if u.seq is not None:
        msg["seq"] = u.seq
    if u.replace:
        msg["replace"] = True
    return msg


def parse_line(line: str | bytes, *, provider: str = "replay") -> dict[str, Any]:
    """One JSON Lines record ``{"t": ms, "provider": name, "msg": ...}`` of a recording;
    raises ProviderDataError for a malformed, truncated or incomplete line."""
    if len(line) > MAX_LINE_BYTES:
        raise ProviderDataError("line too long", provider=provider, raw=line[:300])
    try:
        rec = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise ProviderDataError("malformed or truncated JSON line", provider=provider,
                                raw=line[:300]) from None
    if not isinstance(rec, dict) or "msg" not in rec:
        raise ProviderDataError("a record needs t (ms) and msg", provider=provider, raw=rec)
    t = rec.get("t")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t < 2**53:
        raise ProviderDataError("a record's t must be milliseconds since the epoch",
                                provider=provider, raw=rec)
    if not isinstance(rec.get("provider", "push"), str):
        raise ProviderDataError("a record's provider must be a string", provider=provider,
                                raw=rec)
    return rec
