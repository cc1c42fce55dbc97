"""Request bodies of the HTTP API (protocol.md section 3) as pydantic models.

Unknown fields are refused; prices accept every input shape and become canonical ticks.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import InvalidInput
from ..prices import parse_price

MarketStatus = Literal["open", "suspended", "closed", "settled"]
SelStatus = Literal["active", "suspended", "removed"]
PriceInput = float | int | str | dict[str, Any]

_PRICE_DOC = (
    "decimal odds as a number, or a string (decimal '2.5', fractional '5/2' or 'evens', "
    "American '+150'), or a one-key object {decimal|fractional|american|hk|malay|indo: value}"
)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _price(value: Any) -> int:
    try:
        return parse_price(value)
    except InvalidInput as exc:
        raise ValueError(exc.message) from None


class SelectionPut(_Body):
    name: str = Field(min_length=1, max_length=256)
    price: PriceInput = Field(description=_PRICE_DOC)
    point: float | None = None
    status: SelStatus | None = None

    @field_validator("price", mode="before")
    @classmethod
    def _canonical(cls, v: Any) -> int:
        return _price(v)


class SelectionPatch(_Body):
    name: str | None = Field(None, min_length=1, max_length=256)
    price: PriceInput | None = Field(None, description=_PRICE_DOC)
    point: float | None = None
    status: SelStatus | None = None

    @field_validator("price", mode="before")
    @classmethod
    def _canonical(cls, v: Any) -> int | None:
        return None if v is None else _price(v)


class MarketPut(_Body):
    event: str
    sport: str
    name: str
    kind: str | None = None
    status: MarketStatus | None = None
    in_play: bool | None = None
    bet_delay_ms: int | None = Field(None, ge=0, le=60_000)
    selections: dict[str, SelectionPut] = Field(default_factory=dict)
    ts: int | None = Field(None, ge=0)


class MarketPatch(_Body):
    name: str | None = None
    kind: str | None = None
    status: MarketStatus | None = None
    in_play: bool | None = None
    bet_delay_ms: int | None = Field(None, ge=0, le=60_000)
    selections: dict[str, SelectionPatch] | None = None
    ts: int | None = Field(None, ge=0)


class OddsItem(MarketPatch):
    market: str


class OddsBatch(_Body):
    updates: list[dict[str, Any]] = Field(max_length=1000)


class LegIn(_Body):
    market: str
    selection: str
    price: PriceInput = Field(description=_PRICE_DOC)
    version: int | None = Field(None, ge=0)
    epoch: str | None = None


class SlipIn(_Body):
    legs: list[LegIn] = Field(min_length=1, max_length=50)
    accept: Literal["exact", "better", "any"] = "exact"


def given(model: BaseModel, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields the caller actually sent (explicit nulls included), minus ``exclude``."""
    return {k: getattr(model, k) for k in model.model_fields_set if k not in exclude}
