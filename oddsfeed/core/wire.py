"""The wire codec of protocol.md section 2: server messages encoded once per encoding,
client requests decoded into typed values or rejected with ProtocolViolation. No I/O."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import msgpack

from .book import Delta
from .errors import InvalidInput, ProtocolViolation
from .model import ID_RE, Market, check_price_input

JSON = "json"
MSGPACK = "msgpack"
SUBPROTOCOLS = {"oddsfeed.v1.msgpack": MSGPACK, "oddsfeed.v1.json": JSON}
ACCEPT_POLICIES = ("exact", "better", "any")
MAX_IDS_PER_REQUEST = 10_000
MAX_LEGS = 50
# The largest integer a client may send (a request id, a version): every JSON parser holds
# it exactly, and msgpack and the store's stream ids take it.
MAX_INT = 2**53
# The longest epoch a client may name; a longer one is another epoch than any store epoch.
MAX_EPOCH_CHARS = 64

_json_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_packer_opts: dict[str, Any] = {"use_bin_type": True}


def encode(message: Mapping[str, Any], encoding: str) -> bytes:
    """Encode one message map; JSON as UTF-8 bytes, msgpack as a map."""
    if encoding == MSGPACK:
        return cast(bytes, msgpack.packb(message, **_packer_opts))
    return _json_encoder.encode(message).encode()


class Outgoing:
    """A server message encoded at most once per encoding and shared by every subscriber.

    Call :meth:`payload` for the bytes of one encoding; the first call encodes, later calls
    return the same object.
    """

    __slots__ = ("message", "_json", "_msgpack", "urgent", "t_us", "_frames")

    def __init__(self, message: Mapping[str, Any], *, urgent: bool = False) -> None:
        self.message = message
        self._json: bytes | None = None
        self._msgpack: bytes | None = None
        # urgent messages (a suspension) bypass batching windows and conflation
        self.urgent = urgent
        # the store's apply time (µs since the epoch) of a delta, for latency metrics
        self.t_us = 0
        self._frames: dict[str, bytes] = {}

    def payload(self, encoding: str) -> bytes:
        if encoding == MSGPACK:
            if self._msgpack is None:
                self._msgpack = encode(self.message, MSGPACK)
            return self._msgpack
        if self._json is None:
            self._json = encode(self.message, JSON)
        return self._json

    @property
    def op(self) -> str:
        return str(self.message.get("op", ""))


_MSGPACK_BATCH_PREFIX: bytes = encode({"op": "batch"}, MSGPACK)[1:]  # the map body minus its header


def batch_payload(items: Sequence[bytes], encoding: str) -> bytes:
    """One ``batch`` frame from already-encoded messages, without re-encoding them."""
    if encoding == MSGPACK:
        n = len(items)
        if n < 16:
            arr = bytes([0x90 | n])
        elif n < 65536:
            arr = b"\xdc" + n.to_bytes(2, "big")
        else:
            arr = b"\xdd" + n.to_bytes(4, "big")
        return b"\x82" + _MSGPACK_BATCH_PREFIX + b"\xa5items" + arr + b"".join(items)
    return b'{"op":"batch","items":[' + b",".join(items) + b"]}"


# ---- server -> client builders -------------------------------------------------------------


def hello(*, server: str, session: str, heartbeat_ms: int, encoding: str) -> Outgoing:
    return Outgoing(
        {
            "op": "hello",
            "server": server,
            "session": session,
            "heartbeat_ms": heartbeat_ms,
            "encoding": encoding,
        }
    )


def snapshot(market: Market) -> Outgoing:
    return Outgoing({"op": "snapshot", "market": {**market.to_wire(), **market.ext}},
                    urgent=market.status != "open")


def delta(d: Delta) -> Outgoing:
    # A suspension (or close) must never wait behind a batching window: a client showing
    # a price that is no longer offered invites bets the server will refuse.
    urgent = d.fields.get("status", "open") != "open"
    return Outgoing(d.to_wire(), urgent=urgent)


def gone(market_id: str) -> Outgoing:
    return Outgoing({"op": "gone", "m": market_id}, urgent=True)


FEED_INTERRUPTED = "interrupted"
FEED_RESTORED = "restored"


def status(feed: str) -> Outgoing:
    """``status``: ``interrupted`` when the node lost the store (what a client holds may be
    stale), ``restored`` once it is back and every subscribed market was re-read
    (docs/protocol.md, an extension of the contract). Never batched behind a window."""
    return Outgoing({"op": "status", "feed": feed}, urgent=True)


def heartbeat(ts_ms: int) -> Outgoing:
    return Outgoing({"op": "heartbeat", "ts": ts_ms})


def error(code: str, message: str, request_id: int | str | None = None) -> Outgoing:
    msg: dict[str, Any] = {"op": "error", "code": code, "message": message}
    if request_id is not None:
        msg["id"] = request_id
    return Outgoing(msg)


def reply(op: str, request_id: int | str | None, **fields: Any) -> Outgoing:
    """A direct reply (``subscribed``, ``unsubscribed``, ``pong``, ``validation``)."""
    msg: dict[str, Any] = {"op": op}
    if request_id is not None:
        msg["id"] = request_id
    msg.update(fields)
    return Outgoing(msg)


# ---- client -> server requests ---------------------------------------------------------------

RequestId = int | str | None


@dataclass(frozen=True, slots=True)
class Position:
    epoch: str
    version: int


@dataclass(frozen=True, slots=True)
class Subscribe:
    id: RequestId
    markets: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    from_: Mapping[str, Position] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    id: RequestId
    markets: tuple[str, ...] = ()
    events: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Leg:
    market: str
    selection: str
    price: int
    version: int | None = None
    epoch: str | None = None


@dataclass(frozen=True, slots=True)
class Validate:
    id: RequestId
    legs: tuple[Leg, ...]
    accept: str = "exact"


@dataclass(frozen=True, slots=True)
class Ping:
    id: RequestId


Request = Subscribe | Unsubscribe | Validate | Ping

_ALLOWED = {
    "subscribe": {"op", "id", "markets", "events", "from"},
    "unsubscribe": {"op", "id", "markets", "events"},
    "validate": {"op", "id", "legs", "accept"},
    "ping": {"op", "id"},
}


def _bad(message: str, request_id: RequestId = None) -> ProtocolViolation:
    return ProtocolViolation(message, code="bad_request", request_id=request_id)


def _ids(msg: Mapping[str, Any], key: str, rid: RequestId) -> tuple[str, ...]:
    value = msg.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_IDS_PER_REQUEST:
        raise _bad(f"{key} must be a list of at most {MAX_IDS_PER_REQUEST} ids", rid)
    for i, v in enumerate(value):
        if not isinstance(v, str) or not ID_RE.match(v):
            raise _bad(f"{key}[{i}] is not a valid id (1-128 chars of A-Za-z0-9._:-)", rid)
    return tuple(dict.fromkeys(value))


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: Any, max_chars: int) -> bool:
    """Whether ``value`` is a string of at most ``max_chars`` that encodes as UTF-8 (a JSON
    ``\\ud800`` escape decodes to a lone surrogate, which no reply could echo)."""
    if not isinstance(value, str) or len(value) > max_chars:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _request_id(value: Any) -> RequestId:
    """A valid request id, or raises bad_request without echoing it (it may not encode)."""
    if value is None or (_int(value) and -MAX_INT <= value <= MAX_INT) or _text(value, 128):
        return cast(RequestId, value)
    raise _bad("id must be an integer of at most 2^53 in magnitude or a string of at most "
               "128 characters")


def parse_legs(raw: Any, rid: RequestId = None) -> tuple[Leg, ...]:
    """Validate the ``legs`` of a bet slip (WebSocket or HTTP shape); prices in any input shape."""
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_LEGS:
        raise _bad(f"legs must be a list of 1-{MAX_LEGS} legs", rid)
    legs = []
    for i, leg in enumerate(raw):
        if not isinstance(leg, dict):
            raise _bad(f"legs[{i}] must be an object", rid)
        unknown = set(leg) - {"market", "selection", "price", "version", "epoch"}
        if unknown:
            # repr: the name is the client's (a lone surrogate in it must not break the reply)
            raise _bad(f"legs[{i}]: unknown field {sorted(map(str, unknown))[0][:40]!r}", rid)
        for key in ("market", "selection"):
            if not isinstance(leg.get(key), str) or not ID_RE.match(leg[key]):
                raise _bad(f"legs[{i}].{key} is not a valid id", rid)
        if "price" not in leg:
            raise _bad(f"legs[{i}].price is required", rid)
        try:
            price = check_price_input(leg["price"], f"legs[{i}].price")
        except InvalidInput as exc:
            raise _bad(str(exc), rid) from None
        version = leg.get("version")
        if version is not None and (not _int(version) or not 0 <= version <= MAX_INT):
            raise _bad(f"legs[{i}].version must be an integer from 0 to 2^53", rid)
        epoch = leg.get("epoch")
        if epoch is not None and (not _text(epoch, MAX_EPOCH_CHARS) or not epoch):
            raise _bad(f"legs[{i}].epoch must be a string of 1-{MAX_EPOCH_CHARS} characters",
                       rid)
        legs.append(
            Leg(
                market=leg["market"],
                selection=leg["selection"],
                price=price,
                version=version,
                epoch=epoch,
            )
        )
    return tuple(legs)


def decode_request(data: bytes | str, encoding: str) -> Request:
    """Decode one client frame; raises :class:`ProtocolViolation` (``bad_request``).

    Text frames are JSON; binary frames are msgpack on a msgpack connection and JSON
    (UTF-8) on a JSON one. Every field is checked; unknown fields are refused.
    """
    try:
        if isinstance(data, str):
            msg = json.loads(data)
        elif encoding == MSGPACK:
            msg = msgpack.unpackb(data, raw=False, strict_map_key=False)
        else:
            msg = json.loads(data.decode("utf-8"))
    except (
        ValueError,
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
        UnicodeDecodeError,
        RecursionError,
        TypeError,
    ) as exc:
        raise _bad(
            f"cannot decode frame as {encoding if isinstance(data, bytes) else 'json'}: "
            f"{type(exc).__name__}"
        ) from None
    if not isinstance(msg, dict):
        raise _bad("a message must be a map with an op field")
    rid = _request_id(msg.get("id"))
    op = msg.get("op")
    if not isinstance(op, str) or op not in _ALLOWED:
        raise _bad(f"unknown op {str(op)[:40]!r}", rid)
    unknown = set(msg) - _ALLOWED[op]
    if unknown:
        raise _bad(f"unknown field {sorted(map(str, unknown))[0][:40]!r} for op {op}", rid)
    if op == "ping":
        return Ping(rid)
    if op == "validate":
        accept = msg.get("accept", "exact")
        if accept not in ACCEPT_POLICIES:
            raise _bad(f"accept must be one of {', '.join(ACCEPT_POLICIES)}", rid)
        return Validate(rid, parse_legs(msg.get("legs"), rid), accept)
    markets = _ids(msg, "markets", rid)
    events = _ids(msg, "events", rid)
    if op == "unsubscribe":
        return Unsubscribe(rid, markets, events)
    raw_from = msg.get("from")
    if raw_from is None:
        raw_from = {}
    if not isinstance(raw_from, dict) or len(raw_from) > MAX_IDS_PER_REQUEST:
        raise _bad("from must be a map of market id -> {epoch, version}", rid)
    positions: dict[str, Position] = {}
    for mid, pos in raw_from.items():
        if not isinstance(mid, str) or not ID_RE.match(mid):
            raise _bad("from has a key that is not a valid market id", rid)
        if (
            not isinstance(pos, dict)
            or set(pos) - {"epoch", "version"}
            or not isinstance(pos.get("epoch"), str)
            or not _int(pos.get("version"))
            or pos["version"] < 0
        ):
            raise _bad(f"from.{mid} must be {{epoch: string, version: integer}}", rid)
        # A version past MAX_INT or an epoch no store makes is a position ahead of the store
        # or in another epoch: the market gets a snapshot (protocol.md section 2, catch-up),
        # and the position never reaches the store as a stream id.
        if pos["version"] <= MAX_INT and _text(pos["epoch"], MAX_EPOCH_CHARS):
            positions[mid] = Position(pos["epoch"], pos["version"])
    return Subscribe(rid, markets, events, positions)


def decode_message(data: bytes | str, encoding: str) -> dict[str, Any]:
    """Decode a server message (for clients and tests); raises ValueError on bad bytes."""
    if isinstance(data, str):
        msg = json.loads(data)
    elif encoding == MSGPACK:
        msg = msgpack.unpackb(data, raw=False, strict_map_key=False)
    else:
        msg = json.loads(data)
    if not isinstance(msg, dict):
        raise ValueError("not a map")
    return msg


def parse_subprotocols(offered: Sequence[str]) -> tuple[str | None, str]:
    """Pick the subprotocol to answer and the encoding: the first one offered that we know
    wins; a client that offers neither gets JSON (and no subprotocol in the answer)."""
    for name in offered:
        if name in SUBPROTOCOLS:
            return name, SUBPROTOCOLS[name]
    return None, JSON
