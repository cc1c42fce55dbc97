"""Reads decode an unchanged market's bytes once: equal bytes give the one decoded value,
changed bytes a new one, a bad payload raises every time, and the memo stays bounded."""

from __future__ import annotations

import pytest

from oddsfeed.core.errors import InvalidInput
from oddsfeed.core.model import MarketUpdate
from oddsfeed.store import Store
from oddsfeed.store.codec import DecodeMemo, unpack


def test_equal_bytes_share_one_value_and_errors_are_not_kept() -> None:
    """Equal payloads (distinct bytes objects) decode once; a payload that fails raises on
    every read; past its size the memo empties and decodes again."""
    calls: list[bytes] = []

    def decode(raw: bytes) -> dict[str, object]:
        calls.append(raw)
        return unpack(raw)

    memo = DecodeMemo(decode, size=2)
    a = b"\x81\xa1a\x01"
    assert memo(a) is memo(bytes(bytearray(a)))
    assert calls == [a]
    for _ in range(2):
        with pytest.raises(InvalidInput):
            memo(b"\x01")  # msgpack 1: not a map
    assert memo(b"\x81\xa1b\x02") == {"b": 2}
    assert memo(b"\x81\xa1c\x03") == {"c": 3}  # the third payload: emptied first
    memo(a)
    assert calls.count(a) == 2


async def test_reads_follow_every_change(store: Store) -> None:
    """A market read twice unchanged is the same decoded value; after each change every
    read kind (get, get_many, get_for_validation) shows the new version at once."""
    await store.apply(MarketUpdate(market="dm", fields={"event": "e", "sport": "s",
                                                         "name": "n"},
                                   selections={"h": {"name": "H", "price": 20000}},
                                   create=True))
    first = await store.get("dm")
    assert first is not None
    assert await store.get("dm") is first
    for price in (21000, 22000, 21000):
        await store.apply(MarketUpdate(market="dm", selections={"h": {"price": price}}))
        market = await store.get("dm")
        many = (await store.get_many(["dm"]))["dm"]
        record = (await store.get_for_validation(["dm"]))["dm"]
        assert market is not None
        assert many is not None
        assert record is not None
        assert market.selections["h"].price == many.selections["h"].price == price
        assert record[0].selections["h"].price == price
        assert market.version == many.version == record[0].version
