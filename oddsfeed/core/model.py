"""The market model of protocol.md section 1: values validated on construction; no I/O.

Prices are canonical ticks (see :mod:`oddsfeed.core.prices`). ``point`` is a line such as -1.5,
kept as a float rounded to 2 places so equal lines compare equal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidInput
from .prices import MAX_PRICE, MIN_PRICE, parse_price, to_float

# \Z, not $: "$" also matches before a trailing newline, which is outside the charset
ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")
MARKET_STATUSES = ("open", "suspended", "closed", "settled")
SELECTION_STATUSES = ("active", "suspended")
SELECTION_UPDATE_STATUSES = ("active", "suspended", "removed")
MARKET_FIELDS = ("name", "kind", "status", "in_play", "bet_delay_ms")
MAX_BET_DELAY_MS = 60_000
MAX_NAME_CHARS = 256
MAX_POINT = 10_000.0
MARKET_EXTENSIONS = ("locks", "src")


def check_id(value: object, path: str) -> str:
    """Return ``value`` if it is a valid id (1-128 chars of ``A-Za-z0-9._:-``), else raise."""
    if not isinstance(value, str) or not ID_RE.match(value):
        shown = value[:40] if isinstance(value, str) else type(value).__name__
        raise InvalidInput(
            f"must be 1-128 characters of A-Z a-z 0-9 . _ : -, got {shown!r}", path=path
        )
    return value


def check_name(value: object, path: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"must be a string, got {type(value).__name__}", path=path)
    if (not value and not allow_empty) or len(value) > MAX_NAME_CHARS:
        raise InvalidInput(
            f"must be {0 if allow_empty else 1}-{MAX_NAME_CHARS} characters", path=path
        )
    return value


def check_choice(value: object, choices: tuple[str, ...], path: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InvalidInput(
            f"must be one of {', '.join(choices)}, got {str(value)[:40]!r}", path=path
        )
    return value


def check_bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"must be true or false, got {type(value).__name__}", path=path)
    return value


def check_int(value: object, path: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InvalidInput(f"must be an integer, got {type(value).__name__}", path=path)
    if not lo <= value <= hi:
        raise InvalidInput(f"must be in {lo}..{hi}, got {value}", path=path)
    return value


def check_point(value: object, path: str) -> float | None:
    """A line: a finite number rounded to 2 places, or None for no line."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"must be a number, got {type(value).__name__}", path=path)
    f = float(value)
    if f != f or abs(f) > MAX_POINT:
        raise InvalidInput(f"must be a finite number within +-{MAX_POINT:g}", path=path)
    return round(f, 2) + 0.0  # + 0.0 folds -0.0 into 0.0


def check_ticks(value: object, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_PRICE <= value <= MAX_PRICE:
        raise InvalidInput("must be a canonical price in 1.0001-10000", path=path)
    return value


def check_price_input(value: object, path: str) -> int:
    """Parse any price input shape into canonical ticks, naming ``path`` on error."""
    try:
        return parse_price(value)
    except InvalidInput as exc:
        raise exc.at(path) from None


@dataclass(frozen=True, slots=True)
class Selection:
    """One outcome of a market; ``price`` in canonical ticks."""

    name: str
    price: int
    status: str = "active"
    point: float | None = None

    def __post_init__(self) -> None:
        check_name(self.name, "name")
        check_ticks(self.price, "price")
        check_choice(self.status, SELECTION_STATUSES, "status")
        object.__setattr__(self, "point", check_point(self.point, "point"))

    def to_store(self) -> dict[str, Any]:
        """Store/internal map (price in ticks); ``point`` only when set."""
        d: dict[str, Any] = {"name": self.name, "price": self.price, "status": self.status}
        if self.point is not None:
            d["point"] = self.point
        return d

    def to_wire(self) -> dict[str, Any]:
        """Wire map (price as decimal odds)."""
        d: dict[str, Any] = {
            "name": self.name,
            "price": to_float(self.price),
            "status": self.status,
        }
        if self.point is not None:
            d["point"] = self.point
        return d


@dataclass(frozen=True, slots=True)
class Market:
    """A market's full state at one (epoch, version)."""

    id: str
    event: str
    sport: str
    name: str
    epoch: str
    version: int
    ts: int
    kind: str = ""
    status: str = "open"
    in_play: bool = False
    bet_delay_ms: int = 0
    selections: Mapping[str, Selection] = field(default_factory=dict)
    # Extension members a snapshot carries when set (protocol.md section 6: ``locks``,
    # ``src``); the market of the HTTP API and of the contract leaves them out, and two
    # markets equal but for them are the same market.
    ext: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        check_id(self.id, "id")
        check_id(self.event, "event")
        check_name(self.sport, "sport")
        check_name(self.name, "name")
        check_name(self.kind, "kind", allow_empty=True)
        check_choice(self.status, MARKET_STATUSES, "status")
        check_bool(self.in_play, "in_play")
        check_int(self.bet_delay_ms, "bet_delay_ms", 0, MAX_BET_DELAY_MS)
        check_int(self.version, "version", 1, 2**53)
        check_int(self.ts, "ts", 0, 2**53)
        if not isinstance(self.epoch, str) or not self.epoch:
            raise InvalidInput("must be a non-empty string", path="epoch")
        for sid, sel in self.selections.items():
            check_id(sid, f"selections.{str(sid)[:40]}")
            if not isinstance(sel, Selection):
                raise InvalidInput("must be a Selection", path=f"selections.{sid}")

    def _fields(self) -> dict[str, Any]:
        """Every field but the selections, in the order the store and the wire both use."""
        return {
            "id": self.id,
            "event": self.event,
            "sport": self.sport,
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "in_play": self.in_play,
            "bet_delay_ms": self.bet_delay_ms,
            "epoch": self.epoch,
            "version": self.version,
            "ts": self.ts,
        }

    def to_store(self) -> dict[str, Any]:
        """The store's map of this market (prices in ticks)."""
        d = self._fields()
        d["selections"] = {k: s.to_store() for k, s in self.selections.items()}
        d.update(self.ext)
        return d

    def to_wire(self, *, with_selections: bool = True) -> dict[str, Any]:
        """The market of protocol.md section 1 as sent on the wire and over HTTP."""
        d = self._fields()
        if with_selections:
            d["selections"] = {k: s.to_wire() for k, s in self.selections.items()}
        return d

    @classmethod
    def from_store(cls, d: Mapping[str, Any]) -> Market:
        """Rebuild a market from its store map; raises InvalidInput on a bad map."""
        sels = d.get("selections") or {}
        if isinstance(sels, list):  # Lua's cmsgpack encodes an empty table as an array
            sels = {}
        try:
            selections = {
                str(k): Selection(
                    name=v["name"],
                    price=v["price"],
                    status=v.get("status", "active"),
                    point=v.get("point"),
                )
                for k, v in sels.items()
            }
            return cls(
                id=d["id"],
                event=d["event"],
                sport=d["sport"],
                name=d["name"],
                kind=d.get("kind", ""),
                status=d.get("status", "open"),
                in_play=bool(d.get("in_play", False)),
                bet_delay_ms=int(d.get("bet_delay_ms", 0)),
                epoch=d["epoch"],
                version=int(d["version"]),
                ts=int(d.get("ts", 0)),
                selections=selections,
                ext={k: d[k] for k in MARKET_EXTENSIONS if k in d},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"bad stored market: {exc}") from None

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Market:
        """Rebuild a market from its wire map (prices as decimal odds numbers)."""
        sels = d.get("selections") or {}
        store = dict(d)
        store["selections"] = {
            k: {**v, "price": check_price_input(v.get("price"), f"selections.{k}.price")}
            for k, v in sels.items()
        }
        return cls.from_store(store)


MAX_PRIORITY = 1000


@dataclass(frozen=True, slots=True)
class FeedRank:
    """How the store weighs a feed's write against the other feeds of a market.

    ``name`` is the feed (one ingest runner's source); ``priority`` 0 is a primary, and a
    feed yields to any feed of a lower number seen on the market within ``stale_ms``.
    ``sweep`` marks a silence sweep's write (a suspension or reopening for staleness),
    which is no sign of life and yields while any other feed is live.
    """

    name: str
    priority: int = 0
    stale_ms: int = 30_000
    sweep: bool = False

    def __post_init__(self) -> None:
        check_name(self.name, "feed")
        check_int(self.priority, "priority", 0, MAX_PRIORITY)
        check_int(self.stale_ms, "stale_ms", 1, 2**40)

    def to_store(self) -> dict[str, Any]:
        return {"n": self.name, "p": self.priority, "s": self.stale_ms, "h": self.sweep}


# A selection patch maps given field names to values; "status": "removed" deletes it and
# "point": None clears the line. Only the keys given are changed.
SelectionPatch = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class MarketUpdate:
    """One normalised change to one market, from a feed or a desk; validated on construction.

    ``fields`` holds the given market fields among :data:`MARKET_FIELDS` (plus ``event`` and
    ``sport``, needed to create). ``selections`` maps selection id -> patch. ``replace``
    means PUT semantics: the update is the whole new market (left-out selections are removed,
    left-out optional fields take their defaults). ``create`` allows creating the market when
    it does not exist. ``source``/``seq`` order feed traffic: an update whose ``seq`` is not
    above the last accepted ``seq`` of the same ``source`` for this market is dropped.
    ``feed`` marks a feed's write (failover and price locks apply to it); None: a desk's.
    """

    market: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    selections: Mapping[str, SelectionPatch] = field(default_factory=dict)
    replace: bool = False
    create: bool = False
    ts: int | None = None
    source: str = ""
    seq: int | None = None
    feed: FeedRank | None = None

    def __post_init__(self) -> None:
        check_id(self.market, "market")
        f = dict(self.fields)
        for key, value in f.items():
            if key == "name":
                check_name(value, key)
            elif key == "kind":
                check_name(value, key, allow_empty=True)
            elif key == "status":
                check_choice(value, MARKET_STATUSES, key)
            elif key == "in_play":
                check_bool(value, key)
            elif key == "bet_delay_ms":
                check_int(value, key, 0, MAX_BET_DELAY_MS)
            elif key == "event":
                check_id(value, key)
            elif key == "sport":
                check_name(value, key)
            else:
                raise InvalidInput("unknown field", path=key)
        sels: dict[str, dict[str, Any]] = {}
        for sid, patch in self.selections.items():
            path = f"selections.{str(sid)[:40]}"
            check_id(sid, path)
            if not isinstance(patch, Mapping):
                raise InvalidInput("must be an object", path=path)
            p = dict(patch)
            for key, value in p.items():
                if key == "name":
                    check_name(value, f"{path}.name")
                elif key == "price":
                    check_ticks(value, f"{path}.price")
                elif key == "point":
                    p[key] = check_point(value, f"{path}.point")
                elif key == "status":
                    check_choice(value, SELECTION_UPDATE_STATUSES, f"{path}.status")
                else:
                    raise InvalidInput("unknown field", path=f"{path}.{str(key)[:40]}")
            if (
                self.replace
                and p.get("status") != "removed"
                and ("name" not in p or "price" not in p)
            ):
                raise InvalidInput("needs name and price", path=path)
            sels[sid] = p
        object.__setattr__(self, "fields", f)
        object.__setattr__(self, "selections", sels)
        if self.replace or self.create:
            for key in ("event", "sport", "name"):
                if self.replace and key not in f:
                    raise InvalidInput("is required", path=key)
        if self.ts is not None:
            check_int(self.ts, "ts", 0, 2**53)
        if self.seq is not None:
            check_int(self.seq, "seq", 0, 2**62)
        if not isinstance(self.source, str) or len(self.source) > 200:
            raise InvalidInput("must be a string of at most 200 characters", path="source")

    def under(self, source: str, feed: FeedRank | None, *, reopen: bool = False
              ) -> MarketUpdate:
        """This update under ``source`` and ``feed`` (with ``status: open`` added when
        ``reopen`` and it sets no status); raises InvalidInput for a bad source.

        Every MarketUpdate that exists was validated once: this copy keeps the checked
        fields and maps of ``self`` (never changed after construction, so they are shared)
        and checks only what it changes, so it is not validated again.
        """
        if not isinstance(source, str) or len(source) > 200:
            raise InvalidInput("must be a string of at most 200 characters", path="source")
        if feed is not None and not isinstance(feed, FeedRank):
            raise InvalidInput("must be a feed rank", path="feed")
        copy = object.__new__(MarketUpdate)
        for name in MarketUpdate.__slots__:
            object.__setattr__(copy, name, getattr(self, name))
        object.__setattr__(copy, "source", source)
        object.__setattr__(copy, "feed", feed)
        if reopen and "status" not in self.fields:
            object.__setattr__(copy, "fields", {**self.fields, "status": "open"})
        return copy

    def to_store(self) -> dict[str, Any]:
        """The map handed to the store's apply script."""
        d: dict[str, Any] = {
            "market": self.market,
            "fields": dict(self.fields),
            # false, not nil, clears a line: Lua tables cannot hold nil
            "selections": {
                k: {f: (False if f == "point" and v is None else v) for f, v in p.items()}
                for k, p in self.selections.items()
            },
            "replace": self.replace,
            "create": self.create,
        }
        if self.ts is not None:
            d["ts"] = self.ts
        if self.source:
            d["source"] = self.source
        if self.seq is not None:
            d["seq"] = self.seq
        if self.feed is not None:
            d["feed"] = self.feed.to_store()
        return d
