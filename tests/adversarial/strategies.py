"""Hypothesis strategies of hostile HTTP bodies: valid-looking bodies of each write and
validate route with one hole filled by deep nesting, lone surrogates, huge integers,
wrong types or unknown fields, as raw JSON text."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from tests.api.conftest import BODY

HOLE = "\x00hole\x00"
_HOLE_JSON = json.dumps(HOLE)

SURROGATES = st.sampled_from(["\ud800", "a\udfff", "\udc00\ud800", "x\udbffy", "\ud83d"])
HUGE_INTS = (st.integers(min_value=2**53 + 1, max_value=10**300)
             | st.integers(max_value=-(2**53) - 1, min_value=-(10**300)))


def _json(value: Any) -> str:
    return json.dumps(value)  # ensure_ascii: a lone surrogate travels as a \\udXXX escape


def _deep(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


SCALAR_TEXT = st.one_of(
    SURROGATES.map(_json),
    HUGE_INTS.map(str),
    st.just("1" + "0" * 5000),  # past Python's int() digit limit
    st.just("-" + "9" * 4400),
    st.builds(_deep, st.integers(min_value=30, max_value=3000), st.sampled_from(["list", "obj"])),
    st.sampled_from(["null", "true", "false", "[]", "{}", '""', "0", "-1", "1e400", "-0.0",
                     '"5/2"', '"+150"', '"évens"', '"\\u0000"', "1.0000000000000002"]),
    st.floats(allow_nan=False, allow_infinity=False).map(_json),
    st.text(max_size=8).map(_json),
)
VALUE_TEXT = st.recursive(
    SCALAR_TEXT,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda xs: "[" + ",".join(xs) + "]"),
        st.lists(st.tuples(st.one_of(st.sampled_from(["name", "price", "x", "selections",
                                                      "decimal", "legs"]),
                                     SURROGATES), inner), max_size=3).map(
            lambda kv: "{" + ",".join(f"{_json(k)}:{v}" for k, v in kv) + "}")),
    max_leaves=6)

_LEG = {"market": "m1", "selection": "h", "price": 3.5, "version": 1}
TEMPLATES: dict[str, list[dict[str, Any]]] = {
    "PUT /v1/markets/m1": [
        {**BODY, "name": HOLE}, {**BODY, "ts": HOLE}, {**BODY, "selections": HOLE},
        {**BODY, "selections": {"h": {"name": "H", "price": HOLE}}},
        {**BODY, "selections": {"h": {"name": HOLE, "price": 2}}},
        {**BODY, "bet_delay_ms": HOLE}, {**BODY, "extra": HOLE}, {**BODY, "in_play": HOLE}],
    "PATCH /v1/markets/m1": [
        {"name": HOLE}, {"status": HOLE}, {"selections": {"h": {"price": HOLE}}},
        {"selections": {"h": HOLE}}, {"selections": HOLE}, {"point": HOLE}],
    "POST /v1/odds": [
        {"updates": HOLE}, {"updates": [HOLE]},
        {"updates": [{"market": "m1", "selections": {"h": {"price": HOLE}}}]},
        {"updates": [{"market": HOLE, "name": "x"}]}],
    "POST /v1/bets/validate": [
        {"legs": HOLE}, {"legs": [HOLE]}, {"legs": [{**_LEG, "price": HOLE}]},
        {"legs": [{**_LEG, "version": HOLE}]}, {"legs": [{**_LEG, "market": HOLE}]},
        {"legs": [_LEG], "accept": HOLE}, {"legs": [{**_LEG, "epoch": HOLE}]}],
}


@st.composite
def hostile_requests(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """(method, path, raw body): a route's valid body with one value made hostile."""
    route = draw(st.sampled_from(sorted(TEMPLATES)))
    template = draw(st.sampled_from(TEMPLATES[route]))
    text = _json(template).replace(_HOLE_JSON, draw(VALUE_TEXT), 1)
    method, path = route.split(" ")
    return method, path, text.encode()
