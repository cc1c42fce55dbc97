"""A suspension reaches a subscriber before anything else queued for it: a client that
does not read has deltas of other markets queued, and a market's suspension overtakes them
while that market's own queued deltas stay in version order before it."""

from __future__ import annotations

import asyncio
from typing import Any

from oddsfeed.core.model import MarketUpdate

from .conftest import WorkerFactory
from .raw import RawClient
from .test_slow import big_change, big_market, only_client, read_snapshots


def suspend(mid: str) -> MarketUpdate:
    return MarketUpdate(market=mid, fields={"status": "suspended"})


def check_continuity(messages: list[dict[str, Any]]) -> None:
    """Every delta applies on top of the version the client holds (base == held)."""
    held: dict[str, int] = {}
    for m in messages:
        if m.get("op") == "snapshot":
            held[m["market"]["id"]] = m["market"]["version"]
        elif m.get("op") == "delta":
            assert m["base"] == held[m["m"]], f"delta of {m['m']} over a gap: {m}"
            held[m["m"]] = m["v"]


async def test_suspension_overtakes_queued_deltas_of_other_markets(
        start_worker: WorkerFactory) -> None:
    """With deltas of market a queued for a client that stopped reading, b's suspension is
    received before a's queued deltas, after b's own earlier deltas, with no gap anywhere."""
    async with start_worker(**{"fanout.high_water_bytes": 1 << 20,
                               "fanout.max_outbox_bytes": 8 << 20,
                               "fanout.max_lag_s": 60.0}) as w:
        for mid in ("a", "b"):
            await w.store.apply(big_market(mid))
        conn = await RawClient.open(w.ws_port, "json")
        await conn.send({"op": "subscribe", "id": 1, "markets": ["a", "b"]})
        client: Any = await only_client(w, 1)
        await read_snapshots(conn, 2)  # then it stops reading
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        i = 0
        # back the connection up until deltas of both markets wait in its outbox
        while loop.time() < deadline:
            mid = "b" if i % 10 == 5 else "a"
            await w.store.apply(big_change(mid, i))
            i += 1
            if client.outbox.queued_bytes > 64 * 1024 and i % 10 == 9:
                break
        assert client.outbox.queued_bytes > 64 * 1024, "the connection never backed up"
        a_before = (await w.store.get("a")).version  # type: ignore[union-attr]
        await w.store.apply(suspend("b"))
        b_suspended = (await w.store.get("b")).version  # type: ignore[union-attr]
        await w.store.apply(big_change("a", i))
        a_last = (await w.store.get("a")).version  # type: ignore[union-attr]

        def received(mid: str, version: int) -> bool:
            return any(m.get("op") == "delta" and m["m"] == mid and m["v"] >= version
                       for m in conn.messages)

        while not (received("b", b_suspended) and received("a", a_last)):
            assert loop.time() < deadline + 20, "not every version arrived"
            assert await conn.read_some(0.2), "the connection ended"
        conn.close()

        msgs = conn.messages
        check_continuity(msgs)
        at = next(k for k, m in enumerate(msgs)
                  if m.get("op") == "delta" and m["m"] == "b" and m.get("status") == "suspended")
        # a's deltas applied before the suspension that were still queued come after it
        overtaken = [m for m in msgs[at + 1:] if m.get("op") == "delta" and m["m"] == "a"
                     and m["base"] < a_before]
        assert overtaken, "the suspension waited behind a's queued deltas"
        # b's earlier deltas all came before its suspension (continuity checked above)
        assert msgs[at]["v"] == b_suspended
