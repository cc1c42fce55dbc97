"""Request bodies of the HTTP API (protocol.md section 3) as pydantic models.

Unknown fields are refused; prices accept every input shape and become canonical ticks.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..core.errors import InvalidInput
from ..core.model import ID_RE
from ..core.prices import parse_price
from ..core.wire import MAX_LEGS, Leg

MarketStatus = Literal["open", "suspended", "closed", "settled"]
SelStatus = Literal["active", "suspended", "removed"]
PriceInput = float | int | str | dict[str, Any]
ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"  # model.ID_RE
MAX_INT = 2**53  # the largest integer every JSON reader holds exactly

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
    selections: dict[str, SelectionPut]  # required (protocol.md section 3), may be empty
    ts: int | None = Field(None, ge=0, le=MAX_INT)


class MarketPatch(_Body):
    name: str | None = None
    kind: str | None = None
    status: MarketStatus | None = None
    in_play: bool | None = None
    bet_delay_ms: int | None = Field(None, ge=0, le=60_000)
    selections: dict[str, SelectionPatch] | None = None
    ts: int | None = Field(None, ge=0, le=MAX_INT)


class OddsItem(MarketPatch):
    market: str


class OddsBatch(_Body):
    # Items are checked one by one (a bad item fails alone), so the envelope takes any
    # value; the OpenAPI document still shows each item's shape (OddsItem).
    updates: list[Any] = Field(max_length=1000)


class LegIn(_Body):
    market: str = Field(pattern=ID_PATTERN)
    selection: str = Field(pattern=ID_PATTERN)
    price: PriceInput = Field(description=_PRICE_DOC)
    version: int | None = Field(None, ge=0, le=MAX_INT)
    epoch: str | None = Field(None, min_length=1, max_length=64)

    @field_validator("price", mode="before")
    @classmethod
    def _canonical(cls, v: Any) -> int:
        return _price(v)

    def leg(self) -> Leg:
        """The core leg (price in ticks)."""
        assert isinstance(self.price, int)
        return Leg(market=self.market, selection=self.selection, price=self.price,
                   version=self.version, epoch=self.epoch)


class SlipIn(_Body):
    legs: list[LegIn] = Field(min_length=1, max_length=MAX_LEGS)
    accept: Literal["exact", "better", "any"] = "exact"


class BetStopIn(_Body):
    ts: int | None = Field(None, ge=0, le=MAX_INT, description="the change's time, ms "
                           "(default: now)")


class LockIn(_Body):
    selections: list[str] | None = Field(
        None, max_length=1000, description="the selections to lock or unlock; absent or null: "
        "the whole market (an unlock of the whole market releases every lock of it)")

    @field_validator("selections")
    @classmethod
    def _ids(cls, v: list[str] | None) -> list[str] | None:
        for i, sid in enumerate(v or ()):
            if not isinstance(sid, str) or not ID_RE.match(sid):
                raise ValueError(f"selection {i} is not an id of 1-128 chars of A-Za-z0-9._:-")
        return v


# ---- responses (documentation only: the server builds them from core values) -------------

class SelectionOut(BaseModel):
    name: str
    price: float = Field(description="canonical decimal odds (4 decimal places)")
    point: float | None = None
    status: Literal["active", "suspended"]


class MarketSummary(BaseModel):
    id: str
    event: str
    sport: str
    name: str
    kind: str
    status: MarketStatus
    in_play: bool
    bet_delay_ms: int
    epoch: str
    version: int
    ts: int


class MarketOut(MarketSummary):
    selections: dict[str, SelectionOut]


class MarketList(BaseModel):
    markets: list[MarketSummary]
    next_cursor: str | None = Field(None, description="present when more markets follow: "
                                    "send it as `cursor` for the next page")


class BatchItemResult(BaseModel):
    market: str | None
    ok: bool
    version: int | None = None
    error: dict[str, Any] | None = Field(None, description="a problem object")


class BatchResult(BaseModel):
    results: list[BatchItemResult]


class BetStopMarket(BaseModel):
    market: str
    version: int = Field(description="the market's version after the call")


class BetStopOut(BaseModel):
    event: str
    markets: list[BetStopMarket]
    status: Literal["stopped", "started"]


class HistoryEntryOut(BaseModel):
    market: str
    version: int
    ts: int = Field(description="the change's time (the update's ts), ms")
    op: Literal["created", "delta"]
    writer: str = Field(description="who made it: a feed's source, or desk:<token subject>")
    changes: dict[str, Any] = Field(description="created: the whole market; delta: the "
                                    "changed market fields and sel, as in a delta message")


class HistoryOut(BaseModel):
    market: str
    entries: list[HistoryEntryOut] = Field(description="newest first")
    next_before: int | None = Field(None, description="present when older versions may "
                                    "follow: send it as `before`")


class AuditOut(BaseModel):
    event: str
    entries: list[HistoryEntryOut] = Field(description="newest ts first, across the "
                                           "event's markets")


class LocksOut(BaseModel):
    market: bool = Field(description="the whole market is locked")
    selections: list[str] = Field(description="the locked selections, in id order")


class LockOut(BaseModel):
    market: str
    version: int = Field(description="the market's version after the call")
    locks: LocksOut


class FeedSourceOut(BaseModel):
    source: str
    priority: int = Field(description="0: a primary; a higher number yields to a lower one")
    last_seen_ms: int = Field(description="when the store last saw an update of it, ms")
    age_ms: int


class DeskMarketOut(BaseModel):
    market: str
    event: str
    epoch: str
    version: int
    status: MarketStatus
    locks: LocksOut
    refused: dict[str, int] = Field(description="feed updates a lock dropped, per selection "
                                    "(`*`: under a whole-market lock)")
    driver: str | None = Field(description="the feed whose update made the latest version")
    sources: list[FeedSourceOut] = Field(description="every feed that wrote the market, by "
                                         "priority")


class DeskMarketList(BaseModel):
    markets: list[DeskMarketOut]


class LegOut(BaseModel):
    market: str
    selection: str
    ok: bool
    reason: Literal["unknown_market", "unknown_selection", "market_suspended", "market_closed",
                    "selection_suspended", "market_changed", "price_changed"] | None = None
    price: float | None = Field(description="the current canonical price (null if unknown)")
    version: int | None = Field(description="the market's current version (null if unknown)")


class Validation(BaseModel):
    ok: bool
    legs: list[LegOut]


def given(model: BaseModel, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields the caller actually sent (explicit nulls included), minus ``exclude``."""
    return {k: getattr(model, k) for k in model.model_fields_set if k not in exclude}
