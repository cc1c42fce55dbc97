"""The wire codec: encode once, batches, and strict request decoding (oddsfeed.core.wire)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oddsfeed.core import wire
from oddsfeed.core.book import Delta
from oddsfeed.core.errors import ProtocolViolation
from oddsfeed.core.model import Market, Selection

MARKET = Market(id="m1", event="e1", sport="soccer", name="A v B", epoch="ep", version=2, ts=5,
                selections={"h": Selection("Home", 20000, point=-1.5)})


def test_messages_encode_once_to_equal_maps() -> None:
    """Each builder's JSON and msgpack bytes decode to the same map; bytes are cached."""
    d = Delta("m1", "ep", 3, 2, 9, {"status": "suspended"}, {"h": {"price": 21000}})
    for out in (wire.snapshot(MARKET), wire.delta(d), wire.gone("m1"), wire.heartbeat(1),
                wire.error("bad_request", "x", 7), wire.reply("pong", "a", ts=1)):
        j, m = out.payload("json"), out.payload("msgpack")
        assert out.payload("json") is j
        assert out.payload("msgpack") is m
        assert json.loads(j) == msgpack.unpackb(m)
    snap = msgpack.unpackb(wire.snapshot(MARKET).payload("msgpack"))
    assert isinstance(snap["market"]["selections"]["h"]["price"], float)
    assert wire.delta(d).urgent
    assert not wire.heartbeat(1).urgent


@pytest.mark.parametrize("n", [0, 1, 15, 16, 300, 70000])
@pytest.mark.parametrize("enc", ["json", "msgpack"])
def test_batch_payload(n: int, enc: str) -> None:
    """A batch of already-encoded items decodes to {op: batch, items} in order."""
    items = [wire.encode({"op": "heartbeat", "ts": i}, enc) for i in range(n)]
    decoded = wire.decode_message(wire.batch_payload(items, enc), enc)
    assert decoded["op"] == "batch"
    assert [x["ts"] for x in decoded["items"]] == list(range(n))


GOOD: list[tuple[dict[str, Any], type]] = [
    ({"op": "ping", "id": 1}, wire.Ping),
    ({"op": "subscribe", "markets": ["m1"], "events": ["e1"],
      "from": {"m1": {"epoch": "x", "version": 3}}, "id": "a"}, wire.Subscribe),
    ({"op": "unsubscribe", "markets": ["m1"]}, wire.Unsubscribe),
    ({"op": "validate", "legs": [{"market": "m1", "selection": "h", "price": "5/2",
                                  "version": 2, "epoch": "x"}], "accept": "better"},
     wire.Validate),
]


@pytest.mark.parametrize(("msg", "kind"), GOOD)
@pytest.mark.parametrize("enc", ["json", "msgpack"])
def test_valid_requests_decode(msg: dict[str, Any], kind: type, enc: str) -> None:
    """Every request shape of the protocol decodes to its typed request."""
    assert isinstance(wire.decode_request(wire.encode(msg, enc), enc), kind)
    assert isinstance(wire.decode_request(json.dumps(msg), enc), kind)


BAD: list[Any] = [
    b"\xff\x00garbage", "not json", "[1,2]", {"op": "nope"}, {"op": "ping", "x": 1},
    {"op": "subscribe", "markets": "m1"}, {"op": "subscribe", "markets": [""]},
    {"op": "subscribe", "markets": ["a" * 129]}, {"op": "subscribe", "markets": ["bad id"]},
    {"op": "subscribe", "from": {"m1": {"epoch": 1, "version": 2}}},
    {"op": "validate", "legs": []}, {"op": "validate", "legs": [{"market": "m1"}]},
    {"op": "validate", "legs": [{"market": "m1", "selection": "h", "price": 0.5}]},
    {"op": "validate", "legs": [{"market": "m1", "selection": "h", "price": 2}],
     "accept": "maybe"},
    {"op": "ping", "id": [1]},
]


@pytest.mark.parametrize("msg", BAD, ids=lambda m: repr(m)[:40])
def test_bad_requests_are_bad_request(msg: Any) -> None:
    """Malformed or invalid requests raise ProtocolViolation with code bad_request."""
    data = msg if isinstance(msg, (bytes, str)) else json.dumps(msg)
    with pytest.raises(ProtocolViolation) as exc:
        wire.decode_request(data, "json")
    assert exc.value.code == "bad_request"


def test_bad_request_keeps_the_id() -> None:
    """An error for a readable request carries its id."""
    with pytest.raises(ProtocolViolation) as exc:
        wire.decode_request(json.dumps({"op": "subscribe", "id": 42, "markets": [""]}), "json")
    assert exc.value.request_id == 42


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64) | st.builds(lambda v: msgpack.packb(v), json_values))
def test_any_bytes_decode_or_raise_the_documented_error(data: bytes) -> None:
    """Arbitrary bytes either decode to a request or raise ProtocolViolation, nothing else."""
    for enc in ("json", "msgpack"):
        with contextlib.suppress(ProtocolViolation):
            wire.decode_request(data, enc)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["op", "id", "markets", "events", "from", "legs",
                                        "accept"]),
                       json_values | st.sampled_from(["subscribe", "validate", "ping"])))
def test_any_map_decodes_or_raises(msg: dict[str, Any]) -> None:
    """Arbitrary maps either decode or raise ProtocolViolation."""
    with contextlib.suppress(ProtocolViolation):
        wire.decode_request(json.dumps(msg), "json")
