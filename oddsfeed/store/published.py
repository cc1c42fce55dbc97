"""The published form of a delta (written by published.lua in the apply script): a small
header with what the fan-out's continuity check and routing need, then the ``delta``
message already encoded for JSON and for msgpack (docs/internals.md, "The published
payload"). The fan-out forwards the bodies; the delta's members are decoded only where
someone reads them (conflating a slow connection's queue, tests)."""

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
_ERRORS = (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, TypeError)


class Encoded(Outgoing):
    """A ``delta`` message whose payloads came encoded from the store; its ``message`` map is
    decoded from the msgpack body on first use."""

    __slots__ = ("_message",)

    def __init__(self, json_body: bytes, msgpack_body: bytes, urgent: bool, t_us: int) -> None:
        self._json = json_body
        self._msgpack = msgpack_body
        self.urgent = urgent
        self.t_us = t_us
        self._frames = {}
        self._message: dict[str, Any] | None = None

    def _decode(self) -> Mapping[str, Any]:
        if self._message is None:
            self._message = _unpack(self._msgpack or b"")
        return self._message

    message = property(_decode)  # the Outgoing slot, decoded on first use


# The members a LiveDelta is made with, set through their slots (the frozen dataclass's
# __setattr__ refuses them, and object.__setattr__ costs a lookup per member).
_SET_MARKET = Delta.__dict__["market"].__set__
_SET_EPOCH = Delta.__dict__["epoch"].__set__
_SET_VERSION = Delta.__dict__["version"].__set__
_SET_BASE = Delta.__dict__["base"].__set__


class LiveDelta(Delta):
    """A published delta: market, epoch, version and base from the header, its shared
    message in ``out``; the other members are decoded from the message on first use."""

    __slots__ = ("out", "_full")
    out: Encoded
    _full: Delta | None

    def __init__(self, market: str, epoch: str, version: int, base: int,
                 out: Encoded) -> None:
        _SET_MARKET(self, market)
        _SET_EPOCH(self, epoch)
        _SET_VERSION(self, version)
        _SET_BASE(self, base)
        _SET_OUT(self, out)
        _SET_FULL(self, None)

    def _decoded(self) -> Delta:
        full: Delta | None = self._full
        if full is None:
            full = from_wire(self.out.message)
            _SET_FULL(self, full)
        return full

    @property
    def ts(self) -> int:
        return self._decoded().ts

    @property
    def fields(self) -> Mapping[str, Any]:
        return self._decoded().fields

    @property
    def sel(self) -> Mapping[str, Mapping[str, Any]]:
        return self._decoded().sel

    @property
    def ext(self) -> Mapping[str, Any]:
        return self._decoded().ext


_SET_OUT = LiveDelta.__dict__["out"].__set__
_SET_FULL = LiveDelta.__dict__["_full"].__set__


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
        raise InvalidInput(f"bad published delta: {len(data)} bytes, shorter than its "
                           "header") from None
    start = _HEADER.size
    end = start + n_epoch
    body = end + n_json
    if mark != MARK or body >= len(data):
        raise InvalidInput(f"bad published delta: header {data[:start].hex()} does not fit "
                           f"its {len(data)} bytes")
    try:
        epoch = data[start:end].decode()
    except UnicodeDecodeError:
        raise InvalidInput(f"bad published delta: epoch {data[start:end]!r} is not "
                           "UTF-8") from None
    return LiveDelta(market, epoch, version, base,
                     Encoded(data[end:body], data[body:], bool(flags & _URGENT), t_us))


def decode_published(data: bytes) -> tuple[Delta, int]:
    """A published delta decoded in full (a plain :class:`Delta`) and its apply time in µs."""
    out = live_delta("", data).out
    return from_wire(out.message), out.t_us
