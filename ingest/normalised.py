"""Our own normalised JSON (the push endpoint's and the replay file's shape), mapping of
provider ids, and the replay / record file format.

A message is ``{"market", "event"?, "sport"?, "name"?, "kind"?, "status"?, "in_play"?,
"bet_delay_ms"?, "selections"?: {id: {"name"?, "price"?, "point"?, "status"?}}, "ts"?,
"seq"?, "replace"?}``; prices in any input shape. With event, sport and name present the
market is created on first sight.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from oddsfeed.errors import InvalidInput, ProviderDataError
from oddsfeed.model import MARKET_FIELDS, MarketUpdate, check_price_input

_TOP = {"market", "event", "sport", "name", "kind", "status", "in_play", "bet_delay_ms",
        "selections", "ts", "seq", "replace"}
_SEL = {"name", "price", "point", "status"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]+")


def safe_id(raw: object) -> str:
    """A provider id made safe for our charset (others replaced by '_', cut to 128)."""
    text = _UNSAFE.sub("_", str(raw)).strip("_")
    return text[:128] or "_"


@dataclass
class Mapping:
    """Provider id -> our id for events, markets and selections (config/mappings.toml).

    ``create_unknown`` allows markets never seen before to be created with their provider
    ids made safe; without it an unknown id is bad provider data.
    """

    events: dict[str, str] = field(default_factory=dict)
    markets: dict[str, str] = field(default_factory=dict)
    selections: dict[str, str] = field(default_factory=dict)
    create_unknown: bool = True

    @classmethod
    def from_toml(cls, text: str, provider: str) -> Mapping:
        data = tomllib.loads(text).get("providers", {}).get(provider, {})
        return cls(events=dict(data.get("events", {})), markets=dict(data.get("markets", {})),
                   selections=dict(data.get("selections", {})),
                   create_unknown=bool(data.get("create_unknown", True)))

    def _map(self, table: dict[str, str], raw: object, what: str, provider: str) -> str:
        key = str(raw)
        if key in table:
            return table[key]
        if not self.create_unknown:
            raise ProviderDataError(f"unknown {what} id {key[:60]!r} and no mapping",
                                    provider=provider, raw=raw)
        return safe_id(key)

    def event(self, raw: object, provider: str) -> str:
        return self._map(self.events, raw, "event", provider)

    def market(self, raw: object, provider: str) -> str:
        return self._map(self.markets, raw, "market", provider)

    def selection(self, raw: object, provider: str) -> str:
        return self.selections.get(str(raw), safe_id(raw))


def normalize_message(msg: object, *, provider: str = "push") -> MarketUpdate:
    """One normalised JSON message -> MarketUpdate; raises ProviderDataError when bad."""
    if not isinstance(msg, dict):
        raise ProviderDataError("a message must be an object", provider=provider, raw=msg)
    unknown = set(msg) - _TOP
    if unknown:
        raise ProviderDataError(f"unknown field {sorted(unknown)[0]!r}", provider=provider,
                                raw=msg)
    try:
        fields = {k: msg[k] for k in (*MARKET_FIELDS, "event", "sport") if k in msg}
        sels: dict[str, dict[str, Any]] = {}
        raw_sels = msg.get("selections", {})
        if not isinstance(raw_sels, dict):
            raise InvalidInput("must be an object", path="selections")
        for sid, sel in raw_sels.items():
            if not isinstance(sel, dict):
                raise InvalidInput("must be an object", path=f"selections.{sid}")
            bad = set(sel) - _SEL
            if bad:
                raise InvalidInput("unknown field", path=f"selections.{sid}.{sorted(bad)[0]}")
            patch = dict(sel)
            if "price" in patch:
                patch["price"] = check_price_input(patch["price"], f"selections.{sid}.price")
            sels[str(sid)] = patch
        create = all(k in fields for k in ("event", "sport", "name"))
        seq = msg.get("seq")
        return MarketUpdate(market=msg.get("market"),  # type: ignore[arg-type]
                            fields=fields, selections=sels, create=create,
                            replace=bool(msg.get("replace", False)) and create,
                            ts=msg.get("ts"), seq=seq if seq is not None else msg.get("ts"))
    except InvalidInput as exc:
        raise ProviderDataError(str(exc), provider=provider, raw=msg) from None
    except (TypeError, ValueError) as exc:
        raise ProviderDataError(f"bad message: {exc}", provider=provider, raw=msg) from None


def parse_line(line: str | bytes, *, provider: str = "replay") -> dict[str, Any]:
    """One JSON Lines record ``{"t": ms, "provider": name, "msg": ...}`` of a recording."""
    try:
        rec = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise ProviderDataError("malformed or truncated JSON line", provider=provider,
                                raw=line[:300]) from None
    if not isinstance(rec, dict) or "msg" not in rec or not isinstance(rec.get("t"), (int,
                                                                                      float)):
        raise ProviderDataError("a record needs t (ms) and msg", provider=provider, raw=rec)
    return rec
