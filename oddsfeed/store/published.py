"""The published form of a delta (written by published.lua in the apply script): a small
header with what the fan-out's continuity check and routing need, then the ``delta``
message already encoded for JSON and for msgpack (docs/internals.md, "The published
payload"). The fan-out forwards the bodies; the delta's members are decoded only where
someone reads them (conflation, a held item's release, tests)."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import msgpack

from ..core.book import Delta
from ..core.errors import InvalidInput
from ..core.prices import SCALE
from ..core.wire import Outgoing

MARK = 0xC1  # the payload's first byte: never the first byte of a msgpack value
_HEADER = struct.Struct(">BBQQQHI")  # mark, flags, version, base, t_us, epoch and JSON lengths
_URGENT = 1
_LAZY = frozenset(("ts", "fields", "sel", "ext"))
_ERRORS = (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, TypeError)


class Encoded(Outgoing):
    """A ``delta`` message whose payloads came encoded from the store; its ``message`` map is
    decoded from the msgpack body on first use."""

    __slots__ = ()

    def __init__(self, json_body: bytes, msgpack_body: bytes, urgent: bool, t_us: int) -> None:
        self._json = json_body
        self._msgpack = msgpack_body
        self.urgent = urgent
        self.t_us = t_us
        self._frames = {}

    def __getattr__(self, name: str) -> Any:
        if name == "message":  # the slot is filled on first use
            message = _unpack(self._msgpack or b"")
            self.message = message
            return message
        raise AttributeError(name)


class LiveDelta(Delta):
    """A published delta: market, epoch, version and base from the header, its shared
    message in ``out``; the other members are decoded from the message on first use."""

    __slots__ = ("out",)
    out: Encoded

    def __getattr__(self, name: str) -> Any:
        if name in _LAZY:  # an unset slot: decode them all once
            d = from_wire(self.out.message)
            for k in _LAZY:
                object.__setattr__(self, k, getattr(d, k))
            return getattr(d, name)
        raise AttributeError(name)


def _unpack(data: bytes) -> dict[str, Any]:
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except _ERRORS as exc:
        raise InvalidInput(f"bad published delta: {type(exc).__name__}") from None
    if not isinstance(obj, dict):
        raise InvalidInput("bad published delta: its body is not a map")
    return obj


def from_wire(message: Mapping[str, Any]) -> Delta:
    """The delta (prices in ticks) of a ``delta`` message (prices as decimal odds: each one
    is ticks / SCALE, so rounding its product with SCALE gives the ticks back exactly)."""
    sel = message.get("sel")
    if isinstance(sel, dict):
        try:
            message = {**message, "sel": {
                sid: ({**c, "price": round(c["price"] * SCALE)} if "price" in c else c)
                for sid, c in sel.items()}}
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidInput(f"bad published delta: {exc}") from None
    return Delta.from_store(message)


def live_delta(market: str, data: bytes) -> LiveDelta:
    """The published delta ``data`` of ``market``'s channel; raises InvalidInput when it is
    not one."""
    try:
        mark, flags, version, base, t_us, n_epoch, n_json = _HEADER.unpack_from(data)
    except struct.error:
        raise InvalidInput("bad published delta: short header") from None
    start = _HEADER.size
    body = start + n_epoch + n_json
    if mark != MARK or body >= len(data):
        raise InvalidInput("bad published delta: bad header")
    d = object.__new__(LiveDelta)
    setattr_ = object.__setattr__
    setattr_(d, "market", market)
    setattr_(d, "epoch", data[start:start + n_epoch].decode())
    setattr_(d, "version", version)
    setattr_(d, "base", base)
    setattr_(d, "out", Encoded(data[start + n_epoch:body], data[body:], bool(flags & _URGENT),
                               t_us))
    return d


def decode_published(data: bytes) -> tuple[Delta, int]:
    """A published delta decoded in full (a plain :class:`Delta`) and its apply time in µs."""
    out = live_delta("", data).out
    return from_wire(out.message), out.t_us
