"""Canonical prices and odds-format conversion (oddsfeed.core.prices)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oddsfeed.core.errors import PriceError
from oddsfeed.core.prices import (
    MAX_PRICE,
    MIN_PRICE,
    convert,
    margin,
    overround,
    parse_price,
    to_american,
    to_fractional,
    to_hk,
    to_indo,
    to_malay,
)

KNOWN = [
    ("5/2", 35000), ("evens", 20000), ("+150", 25000), ("-200", 15000), ("2.5", 25000),
    (2.5, 25000), (3, 30000), ({"decimal": 2.5}, 25000), ({"fractional": "5/2"}, 35000),
    ({"american": -200}, 15000), ({"american": "+150"}, 25000), ({"hk": 1.5}, 25000),
    ({"malay": -0.5}, 30000), ({"malay": 0.8}, 18000), ({"indo": -2.0}, 15000),
    ({"indo": 1.5}, 25000), ("2.00005", 20000), ("2.00015", 20002), ("1.0001", MIN_PRICE),
    (10000, MAX_PRICE), ("100/1", 1010000), ("1/3", 13333),
]


@pytest.mark.parametrize(("given_", "ticks"), KNOWN)
def test_known_conversions(given_: object, ticks: int) -> None:
    """Every input shape of the table converts to the expected canonical price."""
    assert parse_price(given_) == ticks


BAD = [1, 1.0, "1", 0, -2, float("nan"), float("inf"), "0/0", "1/0", "abc", "", None, True,
       [], 1e300, "10000.0001", {"decimal": 2, "hk": 1}, {"bogus": 2}, "+50", {"malay": 0},
       {"malay": 1.5}, {"indo": 0.5}, {"hk": 0}, "2.5.1", "x" * 100]


@pytest.mark.parametrize("bad", BAD, ids=repr)
def test_nonsense_is_rejected(bad: object) -> None:
    """Nonsense prices raise PriceError with a lower-case message."""
    with pytest.raises(PriceError) as exc:
        parse_price(bad)
    assert str(exc.value)
    assert str(exc.value)[0].islower()


canonical = st.integers(MIN_PRICE, MAX_PRICE)


@settings(max_examples=300, deadline=None)
@given(canonical)
def test_formats_round_trip(ticks: int) -> None:
    """Each format's rendering parses back to the price (exact for fractional and HK)."""
    assert parse_price({"fractional": to_fractional(ticks)}) == ticks
    assert parse_price({"hk": str(to_hk(ticks))}) == ticks
    assert parse_price({"decimal": str(convert(ticks, "decimal"))}) == ticks
    reciprocal = [("american", to_american(ticks)), ("indo", to_indo(ticks))]
    if ticks <= 1_000_000:  # Malay renders long odds as tiny negatives: 8 dp stop at ~100.0
        reciprocal.append(("malay", to_malay(ticks)))
    for fmt, value in reciprocal:
        back = parse_price({fmt: str(value)})
        assert abs(back - ticks) <= 1, (fmt, value, back)


def test_overround_and_margin() -> None:
    """A fair 2.0/2.0 book has no margin; 1.9/1.9 has about 5.26%."""
    assert overround([20000, 20000]) == 1
    assert margin([20000, 20000]) == 0
    assert abs(float(margin([19000, 19000])) - 0.0526) < 0.0001
    assert margin([19000]) == Fraction(10000, 19000) - 1


@given(st.one_of(st.integers(-5, 2000), st.floats(allow_nan=True, allow_infinity=True),
                 st.text(max_size=12), st.sampled_from(["2/1", "+150", "-200", "evens", "1.5",
                                                         " 2.5 ", "2.50", "0"])),
       st.booleans())
def test_memoised_plain_prices_answer_as_parsed(value: object, warm: bool) -> None:
    """A plain price input (int, float, str) answers the same ticks, or raises the same
    PriceError, every time, whether or not it was parsed before (answers kept, errors not)."""
    from oddsfeed.core.prices import _parse_price

    try:
        expected: object = _parse_price(value)
    except PriceError as exc:
        expected = str(exc)
    for _ in range(2 if warm else 1):
        try:
            got: object = parse_price(value)
        except PriceError as exc:
            got = str(exc)
        assert got == expected


def test_memoised_prices_keep_types_apart() -> None:
    """Booleans never reach the memo (a boolean price is refused), and 2 and 2.0 parse
    apart to the same ticks."""
    assert parse_price(2) == parse_price(2.0) == parse_price("2") == 20000
    with pytest.raises(PriceError):
        parse_price(True)
    with pytest.raises(PriceError):
        parse_price(True)


_DECIMALISH = st.from_regex(r"\s{0,2}[+-]?[0-9]{0,14}(\.[0-9]{0,6})?\s{0,2}", fullmatch=True)


@settings(max_examples=600)
@given(st.one_of(_DECIMALISH, st.text(max_size=20), st.integers(-10**12, 10**12),
                 st.floats(allow_nan=True, allow_infinity=True),
                 st.floats(1.0, 10_001.0).map(lambda f: round(f, 4)),
                 st.decimals(1, 10_001, places=4).map(str),
                 st.sampled_from(["1.0001", "1.00009", "10000", "10000.0001", "0.5", "2.",
                                  ".5", "0002.5000", "2.5\n", "\uff11.5", "2.5e0", "1_0"])))
def test_plain_decimal_fast_path_matches_exact_path(value: object) -> None:
    """For any string or number the integer fast path gives the exact path's ticks, or the
    exact path's refusal word for word."""
    from oddsfeed.core.prices import _parse_price

    try:
        expected: object = _parse_price(value)
    except PriceError as exc:
        expected = str(exc)
    try:
        got: object = parse_price(value)
    except PriceError as exc:
        got = str(exc)
    assert got == expected
    assert type(got) is type(expected)


def test_plain_decimals_take_the_integer_path() -> None:
    """A feed's usual prices are read without the exact path; the rest are left to it."""
    from oddsfeed.core.prices import _plain_ticks

    assert _plain_ticks("2.3456") == 23456
    assert _plain_ticks(" 3.5 ") == 35000
    assert _plain_ticks(1.25) == 12500
    assert _plain_ticks(7) == 70000
    assert _plain_ticks("2.00005") == _plain_ticks("+150") == _plain_ticks(True) == 0
    assert _plain_ticks("1.0000") == _plain_ticks(10_001) == 0
