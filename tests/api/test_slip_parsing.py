"""The direct paths of request parsing agree with the full ones: a slip body the direct
check accepts is one pydantic's SlipIn accepts with the same legs, and a body whose JSON
check is skipped is one the full check passes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from oddsfeed.api import schemas, slip
from oddsfeed.api.body import check_json, parse_json
from oddsfeed.api.slip import _plain_slip
from oddsfeed.core.errors import InvalidInput

_ids = st.one_of(st.sampled_from(["m1", "h", "a.b:c-d_9", "", "x" * 128, "x" * 129, "m 1",
                                  "m1\n", "é", "1"]), st.text(max_size=6))
_prices = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-5, 10**6),
                    st.sampled_from(["2.5", " 2.5 ", "5/2", "evens", "+150", "-200", "abc",
                                     "1.00001", "0", ""]),
                    st.just({"decimal": 2.5}), st.booleans(), st.none())
_versions = st.one_of(st.none(), st.integers(-2, 2**53 + 2), st.booleans(), st.just(2.0),
                      st.just("3"))
_epochs = st.one_of(st.none(), st.text(max_size=70), st.integers(0, 3))
_keys = ["market", "selection", "price", "version", "epoch"]


@st.composite
def _leg(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 20)) == 0:
        return draw(st.one_of(st.none(), st.integers(), st.lists(st.integers(), max_size=2)))
    values = {"market": draw(_ids), "selection": draw(_ids), "price": draw(_prices),
              "version": draw(_versions), "epoch": draw(_epochs)}
    keep = draw(st.sets(st.sampled_from(_keys)))
    leg = {k: values[k] for k in _keys if k in keep or (k in ("market", "selection", "price")
           and draw(st.integers(0, 9)) > 0)}
    if draw(st.integers(0, 20)) == 0:
        leg["extra"] = 1
    return leg


@st.composite
def _body(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 30)) == 0:
        return draw(st.one_of(st.none(), st.lists(st.integers(), max_size=2), st.text()))
    body: dict[str, Any] = {"legs": draw(st.lists(_leg(), max_size=52))}
    if draw(st.booleans()):
        body["accept"] = draw(st.sampled_from(["exact", "better", "any", "EXACT", 1, None]))
    if draw(st.integers(0, 20)) == 0:
        body.pop("legs")
    if draw(st.integers(0, 20)) == 0:
        body["other"] = True
    return body


@settings(max_examples=600, deadline=None)
@given(_body())
def test_a_slip_taken_directly_is_the_models_slip(body: Any) -> None:
    """Whatever the body, the direct path either leaves it to the model or gives exactly
    the legs and accept mode SlipIn gives."""
    fast = _plain_slip(body)
    if fast is None:
        return
    try:
        slip = schemas.SlipIn.model_validate(body)
    except ValidationError as exc:
        pytest.fail(f"the direct path took a body the model refuses: {exc}")
    assert fast == (tuple(leg.leg() for leg in slip.legs), slip.accept)


def test_the_everyday_slip_takes_the_direct_path() -> None:
    """A plain slip (numbers and ids, version and epoch given) does not need the model."""
    body = {"legs": [{"market": "m1", "selection": "h", "price": 2.5, "version": 3,
                      "epoch": "e"}] * 5, "accept": "better"}
    assert _plain_slip(body) is not None


_json_texts = st.one_of(
    st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text()),
                 lambda inner: st.lists(inner, max_size=3)
                 | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                 max_leaves=40).map(lambda v: json.dumps(v, ensure_ascii=False)),
    st.sampled_from(['"\\ud800"', '{"a": "\\udfff"}', "[" * 33 + "]" * 33,
                     "[" * 32 + "]" * 32, '{"k\\u00e9": 1}']))


@settings(max_examples=400, deadline=None)
@given(_json_texts, st.sampled_from(["utf-8", "utf-16", "surrogate"]))
def test_the_skipped_json_check_would_have_passed(text: str, encoding: str) -> None:
    """parse_json answers as json.loads followed by the full check_json, whether it
    skipped the check or not."""
    if encoding == "surrogate":  # a UTF-8-encoded lone surrogate beside the value
        raw = b"[" + text.encode("utf-8", "surrogatepass") + b', "\xed\xa0\x80"]'
    else:
        raw = text.encode(encoding, "surrogatepass")
    try:
        expected: Any = json.loads(raw)
        check_json(expected)
    except (InvalidInput, RecursionError, ValueError, UnicodeDecodeError):
        expected = InvalidInput
    try:
        got: Any = parse_json(raw)
    except InvalidInput:
        got = InvalidInput
    assert got == expected


_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-2**64 - 2, 2**64 + 2),
              st.floats(), st.text()),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                max_size=3),
    max_leaves=30)


@st.composite
def _json_bytes(draw: st.DrawFn) -> bytes:
    text = json.dumps(draw(_json_values), ensure_ascii=draw(st.booleans()),
                      indent=draw(st.sampled_from([None, 1])))
    raw = text.encode("utf-8", "surrogatepass")
    for _ in range(draw(st.integers(0, 2))):  # a byte changed, dropped or added
        at = draw(st.integers(0, len(raw)))
        byte = bytes([draw(st.integers(0, 255))])
        raw = draw(st.sampled_from([raw[:at] + byte + raw[at + 1:], raw[:at] + raw[at + 1:],
                                    raw[:at] + byte + raw[at:]]))
    return raw


@settings(max_examples=1000, deadline=None)
@given(st.one_of(_json_bytes(), st.binary(max_size=40),
                 st.sampled_from([b"1e400", b"-1e400", b"Infinity", b"NaN", b"\xef\xbb\xbf{}",
                                  b"18446744073709551616", b"-9223372036854775809",
                                  b"99999999999999999999", b"[1.00000000000000000001]",
                                  b'"\\ud800"', b"-0", b"-0.0", b"5e-324",
                                  b'{"a":[1,18446744073709551616]}', b'["\\\\ud800"]',
                                  b'{"p":"1234567890123456789"}', b'[1,"\xed\xa0\x80"]'])))
def test_parse_json_is_json_loads(raw: bytes) -> None:
    """parse_json gives exactly json.loads's value (same types: ints past 64 bits stay
    ints) or refuses what json.loads (with the checks) refuses, whichever parser ran."""
    try:
        expected: Any = json.loads(raw, parse_constant=lambda c: 1 / 0)
        check_json(expected)
    except (InvalidInput, RecursionError, ValueError, UnicodeDecodeError, ZeroDivisionError):
        expected = InvalidInput
    try:
        got: Any = parse_json(raw)
    except InvalidInput:
        got = InvalidInput
    assert repr(got) == repr(expected)


@settings(max_examples=300, deadline=None)
@given(st.lists(_body(), min_size=1, max_size=4))
def test_a_remembered_leg_is_the_models_leg(bodies: list[Any]) -> None:
    """Bodies taken directly again (their legs now remembered) give the same answer as the
    first time, and that answer is the model's."""
    first = [_plain_slip(b) for b in bodies]
    again = [_plain_slip(b) for b in bodies]
    assert first == again
    for body, fast in zip(bodies, again):
        if fast is not None:
            slip = schemas.SlipIn.model_validate(body)
            assert fast == (tuple(leg.leg() for leg in slip.legs), slip.accept)


def test_a_remembered_leg_does_not_take_a_value_of_another_type() -> None:
    """After a leg with version 1 and price 2 was remembered, version True and price "2"
    or 2.0 are decided anew: a bool version goes to the model (which refuses it)."""
    leg = {"market": "m1", "selection": "h", "price": 2, "version": 1}
    assert _plain_slip({"legs": [leg]}) is not None
    assert _plain_slip({"legs": [{**leg, "version": True}]}) is None
    with pytest.raises(ValidationError):
        schemas.SlipIn.model_validate({"legs": [{**leg, "version": True}]})
    for price in (2.0, "2"):
        got = _plain_slip({"legs": [{**leg, "price": price}]})
        assert got is not None
        assert got[0][0].price == _plain_slip({"legs": [leg]})[0][0].price  # type: ignore[index]


def test_the_leg_memo_is_bounded() -> None:
    """The memo never holds more than MEMO_LEGS legs."""
    for i in range(slip.MEMO_LEGS + 10):
        _plain_slip({"legs": [{"market": f"m{i}", "selection": "h", "price": 2.5}]})
    assert len(slip._legs_seen) <= slip.MEMO_LEGS
