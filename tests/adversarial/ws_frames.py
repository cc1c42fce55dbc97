"""Hypothesis strategies for hostile WebSocket frames: lone surrogates, integers past any
codec, deep nesting, wrong types in every field of every op, and random bytes, as JSON
text frames and as msgpack binary frames (or, where msgpack cannot carry the value, as a
JSON text frame on the msgpack connection, which the server also reads)."""

from __future__ import annotations

import json
from typing import Any

import msgpack
from hypothesis import strategies as st

SURROGATES = st.sampled_from(["\ud800", "\udfff", "a\udc80b", "m1\ud83d"])
HUGE_INTS = st.sampled_from([2**53, 2**53 + 1, -(2**53) - 1, 2**63, 2**64 - 1, 2**64,
                             10**30, -(10**30)])
WORDS = st.sampled_from(["m1", "m2", "e1", "h", "a", "exact", "better", "any", "ping",
                         "subscribe", "unsubscribe", "validate", "epoch", "version",
                         "1e999999", "5/2", "+150", "evens", "NaN", "x" * 129, "", " ",
                         "m1\n", "\u0661\u0662"])
TEXT = st.text(max_size=12) | SURROGATES | WORDS
INTS = st.integers() | HUGE_INTS
SCALARS = (st.none() | st.booleans() | INTS | st.floats(allow_nan=True, allow_infinity=True)
           | TEXT)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12)

LEGS = st.lists(st.fixed_dictionaries(
    {"market": VALUES | st.just("m1"), "selection": VALUES | st.just("h"), "price": VALUES},
    optional={"version": VALUES, "epoch": VALUES}), max_size=3)
POSITIONS = st.dictionaries(st.sampled_from(["m1", "m2"]) | TEXT, st.fixed_dictionaries(
    {"epoch": VALUES, "version": VALUES}) | VALUES, max_size=3)

#: a request map with a known op and hostile fields (ids, lists, positions, legs)
REQUESTS = st.fixed_dictionaries(
    {"op": st.sampled_from(["ping", "subscribe", "unsubscribe", "validate"]) | VALUES},
    optional={"id": VALUES, "markets": st.lists(TEXT, max_size=4) | VALUES,
              "events": st.lists(TEXT, max_size=4) | VALUES, "from": POSITIONS | VALUES,
              "legs": LEGS | VALUES, "accept": VALUES, "extra": VALUES})


def nested(depth: int) -> str:
    """A JSON request whose ``id`` is ``depth`` nested lists (under 64 KiB)."""
    return '{"op":"ping","id":' + "[" * depth + "]" * depth + "}"


JSON_FRAMES: st.SearchStrategy[str | bytes] = st.one_of(
    REQUESTS.map(json.dumps),
    VALUES.map(json.dumps),
    st.integers(50, 30_000).map(nested),
    st.binary(max_size=64),
    st.text(max_size=64),
)


def as_msgpack(value: Any) -> str | bytes:
    """``value`` as a msgpack frame, or as a JSON text frame where msgpack cannot hold it
    (an integer past 64 bits, a lone surrogate)."""
    try:
        return bytes(msgpack.packb(value, use_bin_type=True))
    except (OverflowError, UnicodeEncodeError, ValueError):
        return json.dumps(value)


MSGPACK_FRAMES: st.SearchStrategy[str | bytes] = st.one_of(
    REQUESTS.map(as_msgpack),
    VALUES.map(as_msgpack),
    st.integers(50, 5_000).map(lambda d: b"\x81\xa2id" + b"\x91" * d + b"\xc0"),
    st.binary(max_size=64),
    st.binary(max_size=16).map(lambda b: b"\x83\xa2op\xa4ping\xa2id" + b),
)

#: codes a hostile frame may get back: everything else (internal above all) is a failure
ERROR_CODES = {"bad_request", "limit_exceeded", "forbidden", "not_found"}
#: ops a hostile frame may get back (a frame may happen to be a valid request)
REPLY_OPS = {"error", "pong", "subscribed", "unsubscribed", "validation", "snapshot",
             "gone", "delta", "heartbeat"}
