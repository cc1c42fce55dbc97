"""The versioned market book: update -> (state, delta), delta -> state, conflation. No I/O.

These are the semantics every other part copies: the store's apply script
(oddsfeed/store/apply.lua) does exactly what :func:`apply_update` does, and client mirrors
apply deltas with :func:`apply_delta`. A delta's ``sel`` entry is one of
``{"status": "removed"}`` (gone), a full selection with all of ``name``, ``price``,
``status`` and ``point`` (``None`` when it has no line: added or replaced), or only the
changed fields (``"point": None`` clears a line).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import InvalidInput
from .model import MARKET_FIELDS, Market, MarketUpdate, Selection
from .prices import to_float

REMOVED: Mapping[str, Any] = {"status": "removed"}
DELTA_EXTENSIONS = ("locks", "src")
_MARKET_DEFAULTS: Mapping[str, Any] = {
    "kind": "",
    "status": "open",
    "in_play": False,
    "bet_delay_ms": 0,
}


@dataclass(frozen=True, slots=True)
class Delta:
    """The change from version ``base`` to ``version`` of one market (prices in ticks)."""

    market: str
    epoch: str
    version: int
    base: int
    ts: int
    fields: Mapping[str, Any] = field(default_factory=dict)
    sel: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Extension members (protocol.md section 6: ``locks``, ``src``) carried as they are;
    # a client that does not know them ignores them.
    ext: Mapping[str, Any] = field(default_factory=dict)

    def to_store(self) -> dict[str, Any]:
        """The internal map (prices in ticks), as the store publishes and keeps it."""
        d: dict[str, Any] = {
            "op": "delta",
            "m": self.market,
            "e": self.epoch,
            "v": self.version,
            "base": self.base,
            "ts": self.ts,
        }
        d.update(self.fields)
        d.update(self.ext)
        if self.sel:
            d["sel"] = {k: dict(v) for k, v in self.sel.items()}
        return d

    def to_wire(self) -> dict[str, Any]:
        """The ``delta`` message of protocol.md section 2 (prices as decimal odds)."""
        d = self.to_store()
        for change in d.get("sel", {}).values():
            if "price" in change:
                change["price"] = to_float(change["price"])
        return d

    @classmethod
    def from_store(cls, d: Mapping[str, Any]) -> Delta:
        """Rebuild a delta from its internal map; raises InvalidInput when malformed."""
        try:
            sel = d.get("sel") or {}
            if isinstance(sel, list):  # Lua's cmsgpack encodes an empty table as an array
                sel = {}
            return cls(
                market=str(d["m"]),
                epoch=str(d["e"]),
                version=int(d["v"]),
                base=int(d["base"]),
                ts=int(d["ts"]),
                fields={k: d[k] for k in MARKET_FIELDS if k in d},
                ext={k: d[k] for k in DELTA_EXTENSIONS if k in d},
                sel={
                    str(k): {f: (None if f == "point" and x is False else x) for f, x in v.items()}
                    for k, v in sel.items()
                },
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidInput(f"bad delta: {exc}") from None


@dataclass(frozen=True, slots=True)
class Created:
    """The update created the market at version 1."""

    market: Market


@dataclass(frozen=True, slots=True)
class Changed:
    """The update produced a new version; ``delta`` goes out to subscribers."""

    market: Market
    delta: Delta


@dataclass(frozen=True, slots=True)
class NoOp:
    """The update changed nothing: no new version, nothing published."""

    market: Market


@dataclass(frozen=True, slots=True)
class Rejected:
    """The update cannot apply; ``reason`` is one of ``unknown_market``, ``settled``,
    ``conflict`` (event or sport differs), ``invalid`` (``path`` names the field)."""

    reason: str
    message: str
    path: str = ""


Outcome = Created | Changed | NoOp | Rejected
# How logs, metrics and push answers name each outcome.
OUTCOME_NAMES: Mapping[type, str] = {Created: "created", Changed: "changed", NoOp: "noop",
                                     Rejected: "rejected"}


def _full(sel: Selection) -> dict[str, Any]:
    return {"name": sel.name, "price": sel.price, "status": sel.status, "point": sel.point}


def _new_selection(sid: str, patch: Mapping[str, Any]) -> Selection | Rejected:
    if "name" not in patch or "price" not in patch:
        return Rejected("invalid", "a new selection needs name and price", f"selections.{sid}")
    return Selection(
        name=patch["name"],
        price=patch["price"],
        status=patch.get("status", "active"),
        point=patch.get("point"),
    )


def _given_or_default(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The market fields of a market built from scratch: given, else the default."""
    return {k: fields.get(k, _MARKET_DEFAULTS.get(k)) for k in MARKET_FIELDS}


def _fresh_selections(
    patches: Mapping[str, Mapping[str, Any]],
) -> dict[str, Selection] | Rejected:
    """The selections of a market built from scratch (create or replace): a ``removed``
    patch names nothing to keep, every other patch must be a whole new selection."""
    sels: dict[str, Selection] = {}
    for sid, patch in patches.items():
        if patch.get("status") == "removed":
            continue
        made = _new_selection(sid, patch)
        if isinstance(made, Rejected):
            return made
        sels[sid] = made
    return sels


def diff(old: Market, new: Market) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The changed market fields and selection entries from ``old`` to ``new``."""
    fields = {k: getattr(new, k) for k in MARKET_FIELDS if getattr(old, k) != getattr(new, k)}
    sel: dict[str, dict[str, Any]] = {}
    for sid in old.selections:
        if sid not in new.selections:
            sel[sid] = dict(REMOVED)
    for sid, after in new.selections.items():
        before = old.selections.get(sid)
        if before is None:
            sel[sid] = _full(after)
        elif before != after:
            sel[sid] = {
                k: getattr(after, k)
                for k in ("name", "price", "status", "point")
                if getattr(before, k) != getattr(after, k)
            }
    return fields, sel


def apply_update(state: Market | None, update: MarketUpdate, *, epoch: str, now_ms: int) -> Outcome:
    """Apply one normalised update to a market's current state (None: not in the store).

    ``epoch`` is used only when the market is created; ``now_ms`` stamps ``ts`` when the
    update carries none. Returns the outcome as a value; never raises for business cases.
    """
    ts = update.ts if update.ts is not None else now_ms
    f = update.fields
    if state is None:
        if not (update.create or update.replace):
            return Rejected("unknown_market", f"market {update.market!r} does not exist")
        for key in ("event", "sport", "name"):
            if key not in f:
                return Rejected("invalid", "is required to create a market", key)
        sels = _fresh_selections(update.selections)
        if isinstance(sels, Rejected):
            return sels
        return Created(Market(
            id=update.market,
            event=f["event"],
            sport=f["sport"],
            epoch=epoch,
            version=1,
            ts=ts,
            selections=sels,
            **_given_or_default(f),
        ))
    for key in ("event", "sport"):
        if key in f and f[key] != getattr(state, key):
            return Rejected("conflict", f"{key} cannot change (is {getattr(state, key)!r})", key)
    if update.replace:
        new_fields = _given_or_default(f)
        fresh = _fresh_selections(update.selections)
        if isinstance(fresh, Rejected):
            return fresh
        new_sels = fresh
    else:
        new_fields = {k: f.get(k, getattr(state, k)) for k in MARKET_FIELDS}
        new_sels = dict(state.selections)
        for sid, patch in update.selections.items():
            current = new_sels.get(sid)
            if patch.get("status") == "removed":
                new_sels.pop(sid, None)
            elif current is None:
                made = _new_selection(sid, patch)
                if isinstance(made, Rejected):
                    return made
                new_sels[sid] = made
            else:
                new_sels[sid] = replace(current, **dict(patch))
    candidate = replace(state, selections=new_sels, **new_fields)
    fields, sel = diff(state, candidate)
    if not fields and not sel:
        return NoOp(state)
    if state.status == "settled":
        return Rejected("settled", "a settled market accepts no further change", "status")
    version = state.version + 1
    market = replace(candidate, version=version, ts=ts)
    return Changed(
        market,
        Delta(
            market=state.id,
            epoch=state.epoch,
            version=version,
            base=state.version,
            ts=ts,
            fields=fields,
            sel=sel,
        ),
    )


@dataclass(frozen=True, slots=True)
class Applied:
    """The delta applied; ``market`` is the new local state."""

    market: Market


@dataclass(frozen=True, slots=True)
class Duplicate:
    """The delta is at or below the local version: ignore it."""


@dataclass(frozen=True, slots=True)
class Resync:
    """A gap or another epoch: re-subscribe the market with ``from`` = local position."""


ApplyResult = Applied | Duplicate | Resync


def apply_delta(state: Market, delta: Delta) -> ApplyResult:
    """Apply a delta to a local market by the client rule of protocol.md section 2."""
    if delta.epoch != state.epoch:
        return Resync()
    if delta.version <= state.version:
        return Duplicate()
    if delta.base != state.version:
        return Resync()
    sels = dict(state.selections)
    for sid, change in delta.sel.items():
        if change.get("status") == "removed":
            sels.pop(sid, None)
            continue
        current = sels.get(sid)
        if current is None:
            sels[sid] = Selection(
                name=change["name"],
                price=change["price"],
                status=change.get("status", "active"),
                point=change.get("point"),
            )
        else:
            sels[sid] = replace(current, **dict(change))
    return Applied(
        replace(state, version=delta.version, ts=delta.ts, selections=sels,
                ext={**state.ext, **delta.ext} if delta.ext else state.ext,
                **dict(delta.fields))
    )


def _merge_sel(prev: Mapping[str, Any], nxt: Mapping[str, Any]) -> dict[str, Any]:
    if nxt.get("status") == "removed" or prev.get("status") == "removed":
        # removed wins if it is last; a full selection after a removal replaces it
        return dict(nxt)
    return {**prev, **nxt}


def conflate(deltas: Sequence[Delta]) -> Delta:
    """Merge a run of consecutive deltas of one market into one (base of the first,
    version of the last). Raises InvalidInput if the run is empty or not consecutive."""
    if not deltas:
        raise InvalidInput("nothing to conflate")
    first = deltas[0]
    fields: dict[str, Any] = dict(first.fields)
    ext: dict[str, Any] = dict(first.ext)
    sel: dict[str, dict[str, Any]] = {k: dict(v) for k, v in first.sel.items()}
    prev = first
    for d in deltas[1:]:
        if d.epoch != prev.epoch or d.base != prev.version or d.market != prev.market:
            raise InvalidInput(f"deltas are not consecutive at version {d.base}")
        fields.update(d.fields)
        ext.update(d.ext)
        for sid, change in d.sel.items():
            sel[sid] = _merge_sel(sel[sid], change) if sid in sel else dict(change)
        prev = d
    return Delta(
        market=first.market,
        epoch=first.epoch,
        version=prev.version,
        base=first.base,
        ts=prev.ts,
        fields=fields,
        sel=sel,
        ext=ext,
    )
