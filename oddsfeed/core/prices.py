"""Canonical prices and odds-format conversion; exact arithmetic only, no I/O.

A price inside oddsfeed is an ``int`` of ten-thousandths of decimal odds (2.5 -> 25000),
rounded half-even from the exact input value (protocol.md section 1). Conversions go
through :class:`decimal.Decimal` / :class:`fractions.Fraction`, never through floats.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from decimal import ROUND_HALF_EVEN, Context, Decimal
from fractions import Fraction

from .errors import PriceError

SCALE = 10_000
MIN_PRICE = 10_001  # 1.0001
MAX_PRICE = 100_000_000  # 10000.0
_MAX_INPUT_CHARS = 40

_CTX = Context(prec=40)
_DECIMAL_RE = re.compile(r"^[0-9]{1,12}(\.[0-9]{1,20})?$")
_SIGNED_RE = re.compile(r"^[+-][0-9]{1,12}(\.[0-9]{1,20})?$")
_FRACTION_RE = re.compile(r"^([0-9]{1,9})\s*/\s*([0-9]{1,9})$")
_EVENS = frozenset({"evens", "evs", "even", "ev"})

FORMATS = ("decimal", "fractional", "american", "hk", "malay", "indo")


def _exact(value: object, what: str) -> Fraction:
    """Turn a JSON-ish number (int, float, Decimal, numeric string) into an exact Fraction."""
    if isinstance(value, bool):
        raise PriceError(f"{what} must be a number, not a boolean")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise PriceError(f"{what} must be a finite number, got {value!r}")
        # The float is what the peer meant in decimal: go through its shortest repr.
        return Fraction(Decimal(repr(value)))
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise PriceError(f"{what} must be a finite number, got {value}")
        return Fraction(value)
    if isinstance(value, str):
        text = value.strip()
        if len(text) > _MAX_INPUT_CHARS or not re.fullmatch(
            r"[+-]?[0-9]{1,12}(\.[0-9]{1,20})?", text
        ):
            raise PriceError(f"{what} must be a number, got {value[:_MAX_INPUT_CHARS]!r}")
        return Fraction(Decimal(text))
    raise PriceError(f"{what} must be a number, got {type(value).__name__}")


def _check_range(ticks: int, shown: object) -> int:
    if ticks < MIN_PRICE or ticks > MAX_PRICE:
        raise PriceError(f"price {shown!s:.40} is outside 1.0001-10000 in decimal odds")
    return ticks


def from_exact_decimal(odds: Fraction, shown: object = None) -> int:
    """Canonical ticks for exact decimal odds; raises PriceError when out of range."""
    if abs(odds) > 10 * MAX_PRICE:  # absurd (either sign): do not even round it
        raise PriceError(
            f"price {shown if shown is not None else float(odds)!s:.40} is absurdly large"
        )
    scaled = _CTX.divide(Decimal(odds.numerator), Decimal(odds.denominator))
    ticks = int((scaled * SCALE).quantize(Decimal(1), rounding=ROUND_HALF_EVEN, context=_CTX))
    return _check_range(ticks, shown if shown is not None else scaled)


def from_decimal(value: object) -> int:
    """Canonical ticks for decimal odds given as a number or numeric string."""
    return from_exact_decimal(_exact(value, "decimal odds"), value)


def from_fractional(value: object) -> int:
    """Canonical ticks for fractional odds: ``"5/2"``, ``"evens"``, or ``"4-1"``."""
    if not isinstance(value, str) or len(value) > _MAX_INPUT_CHARS:
        raise PriceError("fractional odds must be a string such as '5/2'")
    text = value.strip().lower()
    if text in _EVENS:
        return from_exact_decimal(Fraction(2), value)
    m = _FRACTION_RE.match(text.replace("-", "/", 1) if "/" not in text else text)
    if not m:
        raise PriceError(f"fractional odds must look like '5/2', got {value!r}")
    num, den = int(m.group(1)), int(m.group(2))
    if den == 0 or num == 0:
        raise PriceError(f"fractional odds {value!r} are not a valid price")
    return from_exact_decimal(1 + Fraction(num, den), value)


def from_american(value: object) -> int:
    """Canonical ticks for American (moneyline) odds: +150 -> 2.5, -200 -> 1.5."""
    if (
        isinstance(value, str)
        and not _SIGNED_RE.match(value.strip())
        and not _DECIMAL_RE.match(value.strip())
    ):
        raise PriceError(
            f"american odds must look like '+150' or '-200', got {value[:_MAX_INPUT_CHARS]!r}"
        )
    a = _exact(value, "american odds")
    if abs(a) < 100:
        raise PriceError(f"american odds must be at least 100 in size, got {value!s:.40}")
    odds = 1 + a / 100 if a > 0 else 1 + 100 / -a
    return from_exact_decimal(odds, value)


def from_hk(value: object) -> int:
    """Canonical ticks for Hong Kong odds (the net win per unit): 1.5 -> 2.5."""
    h = _exact(value, "hk odds")
    if h <= 0:
        raise PriceError(f"hk odds must be positive, got {value!s:.40}")
    return from_exact_decimal(1 + h, value)


def from_malay(value: object) -> int:
    """Canonical ticks for Malay odds in [-1, 0) or (0, 1]: -0.5 -> 3.0, 0.8 -> 1.8."""
    m = _exact(value, "malay odds")
    if m == 0 or abs(m) > 1:
        raise PriceError(f"malay odds must be in -1..1 and not 0, got {value!s:.40}")
    return from_exact_decimal(1 + m if m > 0 else 1 + 1 / -m, value)


def from_indo(value: object) -> int:
    """Canonical ticks for Indonesian odds (<= -1 or >= 1): -2.0 -> 1.5, 1.5 -> 2.5."""
    i = _exact(value, "indo odds")
    if abs(i) < 1:
        raise PriceError(f"indo odds must be <= -1 or >= 1, got {value!s:.40}")
    return from_exact_decimal(1 + i if i > 0 else 1 + 1 / -i, value)


_PARSERS = {
    "decimal": from_decimal,
    "fractional": from_fractional,
    "american": from_american,
    "hk": from_hk,
    "malay": from_malay,
    "indo": from_indo,
}


def parse_price(value: object) -> int:
    """Canonical ticks for any price input shape of protocol.md section 1.

    A number is decimal odds; a string is decimal, fractional or signed American; a
    one-key object names the format. Raises :class:`PriceError` for anything else.
    """
    ticks = _plain_ticks(value)
    if ticks:
        return ticks
    if type(value) in _PLAIN:  # exact types: bool and other subclasses take the full path
        return _plain_price(value)
    return _parse_price(value)


# The decimal strings the exact path reads (up to 12 integer digits) with <= 4 places.
_PLAIN_DECIMAL = re.compile(r"([0-9]{1,12})(?:\.([0-9]{1,4}))?")


def _plain_ticks(value: object) -> int:
    """The ticks of an int, or of a float or string that is a plain decimal of at most 4
    places, in integer arithmetic; 0 for anything else, or out of range, so that the exact
    path decides (and refuses) it as before."""
    if type(value) is int:
        ticks = value * SCALE
    else:
        if type(value) is str:
            m = _PLAIN_DECIMAL.fullmatch(value.strip())
        elif type(value) is float:
            m = _PLAIN_DECIMAL.fullmatch(repr(value))
        else:
            return 0
        if m is None:
            return 0
        units, frac = m.groups()
        ticks = int(units) * SCALE + (int(frac.ljust(4, "0")) if frac else 0)
    return ticks if MIN_PRICE <= ticks <= MAX_PRICE else 0


_PLAIN = frozenset((int, float, str))


# Bettors and feeds send the same few prices again and again, and parsing is pure: the
# answers for plain inputs are kept (by value and type, so 2 and 2.0 apart); errors are not.
@functools.lru_cache(maxsize=4096, typed=True)
def _plain_price(value: int | float | str) -> int:
    return _parse_price(value)


def _parse_price(value: object) -> int:
    if isinstance(value, Mapping):
        if len(value) != 1:
            raise PriceError(f"a price object must have exactly one key among {', '.join(FORMATS)}")
        ((fmt, inner),) = value.items()
        parser = _PARSERS.get(fmt) if isinstance(fmt, str) else None
        if parser is None:
            raise PriceError(
                f"unknown odds format {str(fmt)[:40]!r}; use one of {', '.join(FORMATS)}"
            )
        return parser(inner)
    if isinstance(value, str):
        text = value.strip()
        if len(text) > _MAX_INPUT_CHARS:
            raise PriceError("price string is too long")
        if text[:1] in "+-":
            return from_american(text)
        if "/" in text or text.lower() in _EVENS:
            return from_fractional(text)
        return from_decimal(text)
    return from_decimal(value)


def to_decimal(ticks: int) -> Decimal:
    """Exact decimal odds of a canonical price."""
    return Decimal(ticks) / SCALE


def to_float(ticks: int) -> float:
    """The wire number of a canonical price (shortest float repr of the 4-dp value)."""
    return ticks / SCALE


def _net(ticks: int) -> Fraction:
    return Fraction(ticks - SCALE, SCALE)


def _dec(f: Fraction, places: int = 4) -> Decimal:
    q = _CTX.divide(Decimal(f.numerator), Decimal(f.denominator))
    return q.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN, context=_CTX)


def to_fractional(ticks: int) -> str:
    """Exact reduced fractional odds: 35000 -> '5/2', 20000 -> '1/1'."""
    f = _net(ticks)
    return f"{f.numerator}/{f.denominator}"


def to_american(ticks: int) -> Decimal:
    """American odds (2 dp): 25000 -> +150, 15000 -> -200."""
    net = _net(ticks)
    return _dec(net * 100, 2) if net >= 1 else _dec(-100 / net, 6)


def to_hk(ticks: int) -> Decimal:
    """Hong Kong odds (the net win per unit staked)."""
    return _dec(_net(ticks))


def to_malay(ticks: int) -> Decimal:
    """Malay odds: net when net <= 1, else -1/net."""
    net = _net(ticks)
    return _dec(net) if net <= 1 else _dec(-1 / net, 8)


def to_indo(ticks: int) -> Decimal:
    """Indonesian odds: net when net >= 1, else -1/net."""
    net = _net(ticks)
    return _dec(net) if net >= 1 else _dec(-1 / net, 8)


def convert(ticks: int, fmt: str) -> str | Decimal:
    """The price in the named format (one of :data:`FORMATS`)."""
    if fmt == "decimal":
        return to_decimal(ticks)
    converters: dict[str, Callable[[int], str | Decimal]] = {
        "fractional": to_fractional,
        "american": to_american,
        "hk": to_hk,
        "malay": to_malay,
        "indo": to_indo,
    }
    conv = converters.get(fmt)
    if conv is None:
        raise PriceError(f"unknown odds format {fmt!r}")
    return conv(ticks)


def implied_probability(ticks: int) -> Fraction:
    """Implied probability 1/odds, exact."""
    return Fraction(SCALE, ticks)


def overround(prices: Iterable[int]) -> Fraction:
    """A market's book: the sum of implied probabilities (1.05 = a 5% margin)."""
    return sum((implied_probability(p) for p in prices), Fraction(0))


def margin(prices: Iterable[int]) -> Fraction:
    """The bookmaker's margin: overround minus one."""
    return overround(prices) - 1


def with_margin(probabilities: Iterable[Fraction | float], margin_: float) -> list[int]:
    """Canonical prices for true probabilities scaled up to the given overround margin.

    Used by the simulator; clamps each price into the valid range.
    """
    out = []
    for p in probabilities:
        q = Fraction(p) * Fraction(1 + margin_).limit_denominator(10_000)
        ticks = int(_dec(1 / q) * SCALE) if q > 0 else MAX_PRICE
        out.append(min(max(ticks, MIN_PRICE), MAX_PRICE))
    return out
