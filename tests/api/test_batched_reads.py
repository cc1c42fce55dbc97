"""Batched store reads seen through HTTP: a write acknowledged by one node is seen by every
validation and market read sent afterwards to another node, while many run at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .conftest import BODY, Api


async def test_acknowledged_writes_are_seen_by_concurrent_validations(
        make_api: Callable[..., Any]) -> None:
    """Forty clients each change their market's price on one node, then validate at that
    price and read the market on another node: every slip is accepted at the acknowledged
    version and every read shows it, over three rounds run concurrently."""
    writer: Api = await make_api()
    reader: Api = await make_api()
    for i in range(40):
        status, _, _ = await writer.call("PUT", f"/v1/markets/r{i}", BODY)
        assert status == 201

    async def client(i: int) -> None:
        for round_ in range(3):
            price = round(3.0 + i / 100 + round_ / 1000, 3)
            status, market, _ = await writer.call(
                "PATCH", f"/v1/markets/r{i}", {"selections": {"h": {"price": price}}})
            assert status == 200
            leg = {"market": f"r{i}", "selection": "h", "price": price}
            (vs, slip, _), (gs, read, _) = await asyncio.gather(
                reader.call("POST", "/v1/bets/validate", {"legs": [leg], "accept": "exact"}),
                reader.call("GET", f"/v1/markets/r{i}"))
            assert (vs, gs) == (200, 200)
            assert slip["ok"], slip
            assert slip["legs"][0]["version"] == market["version"]
            assert read["version"] == market["version"]

    await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(40))), timeout=30)
