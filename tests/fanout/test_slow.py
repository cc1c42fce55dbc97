"""Slow consumers (protocol.md section 2): a client that stops reading is conflated, then
cut off (4008 or dropped) with the server's buffering for it bounded, while a fast client
on the same worker gets every version; a client that only lags gets conflated deltas that
still apply by the client rule."""

from __future__ import annotations

import asyncio
import os
import random

import psutil

from oddsfeed.core.model import MarketUpdate
from oddsfeed.worker import Worker

from .conftest import WorkerFactory, ws_url
from .mirror import ClientBook, Mirror, wait_until
from .raw import RawClient

HIGH_WATER = 64 * 1024
MAX_OUTBOX = 256 * 1024
TRANSPORT_HIGH_WATER = 64 * 1024  # oddsfeed.fanout.server: past it, frames wait for drain


def big_market(mid: str) -> MarketUpdate:
    return MarketUpdate(market=mid, fields={"event": "big", "sport": "soccer", "name": mid},
                        selections={f"s{k}": {"name": f"Selection {k}", "price": 20_000 + k}
                                    for k in range(20)}, create=True)


def big_change(mid: str, i: int) -> MarketUpdate:
    """A change of every price and name: a delta of about 2 KB, conflated or not."""
    return MarketUpdate(market=mid, fields={"name": f"{mid} {'n' * 90} {i}"},
                        selections={f"s{k}": {"price": 20_001 + (i * 7 + k) % 90_000,
                                              "name": f"Selection {k} {'x' * 50} {i}"}
                                    for k in range(20)})


async def read_snapshots(conn: RawClient, n: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while sum(m["op"] == "snapshot" for m in conn.messages) < n:
        assert loop.time() < deadline, "snapshots not read in time"
        assert await conn.read_some(0.2)


async def only_client(w: Worker, count: int) -> object:
    await wait_until(lambda: len(w.hub.clients) == count, what=f"{count} connections")
    return max(w.hub.clients, key=lambda c: c.id)


async def test_stopped_reader_is_cut_off_and_fast_client_gets_every_version(
        start_worker: WorkerFactory) -> None:
    """A client that stops reading is conflated then closed (4008, or dropped) while what the
    server holds for it stays bounded; a fast client on the same worker receives every
    version of every market as its own delta."""
    async with start_worker(**{"fanout.high_water_bytes": HIGH_WATER,
                               "fanout.max_outbox_bytes": MAX_OUTBOX,
                               "fanout.max_lag_s": 30.0}) as w:
        mids = [f"b{i:03d}" for i in range(200)]  # x ~2 KB conflated: past MAX_OUTBOX
        for mid in mids:
            await w.store.apply(big_market(mid))
        slow_conn = await RawClient.open(w.ws_port, "json")
        await slow_conn.send({"op": "subscribe", "id": 1, "markets": mids})
        slow = await only_client(w, 1)
        await read_snapshots(slow_conn, len(mids))  # it reads its catch-up, then stops
        fast = await Mirror.open(ws_url(w), "msgpack")
        await fast.request({"op": "subscribe", "markets": mids})
        await wait_until(lambda: len(fast.markets) == len(mids), what="fast snapshots")
        conns = getattr(w.fanout, "_conns", {})
        rss_before = psutil.Process(os.getpid()).memory_info().rss

        rng = random.Random(5)
        peak_outbox = peak_held = conflations = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        i = 0
        while not slow.closed and loop.time() < deadline:  # type: ignore[attr-defined]
            await w.store.apply(big_change(rng.choice(mids), i))
            i += 1
            queued = slow.outbox.queued_bytes  # type: ignore[attr-defined]
            conflations = max(conflations, slow.outbox.conflations)  # type: ignore[attr-defined]
            ws = conns.get(slow)
            buffered = ws.transport.get_write_buffer_size() if ws is not None else 0
            peak_outbox = max(peak_outbox, queued)
            peak_held = max(peak_held, queued + buffered)
        assert slow.closed, f"not cut off after {i} updates"  # type: ignore[attr-defined]
        assert conflations > 0, "cut off without ever conflating"
        one_message = 4096
        assert peak_outbox <= MAX_OUTBOX + one_message
        # outbox + what sits in the transport (at most its high water plus one frame)
        assert peak_held <= TRANSPORT_HIGH_WATER + 2 * MAX_OUTBOX + one_message
        # what the whole process grew by while the slow client backed up: a stated bound
        rss_growth = psutil.Process(os.getpid()).memory_info().rss - rss_before
        assert rss_growth < 64 * 2**20, rss_growth

        while await slow_conn.read_some(2.0):
            pass
        assert slow_conn.close_code in (4008, None), slow_conn.close_code
        await wait_until(lambda: slow not in w.hub.clients, what="slow client released")
        slow_conn.close()

        truth = await w.store.get_many(mids)
        await wait_until(lambda: all(fast.markets[m] == truth[m] for m in mids), 20,
                         "fast client converged")
        for m in mids:
            assert fast.book.delta_versions(m) == list(range(2, truth[m].version + 1))  # type: ignore[union-attr]
        fast.check_clean()
        await fast.close()


async def test_lagging_reader_gets_conflated_deltas_that_apply(
        start_worker: WorkerFactory) -> None:
    """A client that pauses reading past the high-water mark (but under the hard limit) later
    receives conflated deltas (base < v - 1) that apply by the client rule and leave it equal
    to the store."""
    async with start_worker(**{"fanout.high_water_bytes": HIGH_WATER,
                               "fanout.max_lag_s": 60.0}) as w:
        mids = [f"b{i:02d}" for i in range(20)]
        for mid in mids:
            await w.store.apply(big_market(mid))
        conn = await RawClient.open(w.ws_port, "msgpack")
        await conn.send({"op": "subscribe", "id": 1, "markets": mids})
        client = await only_client(w, 1)
        await read_snapshots(conn, len(mids))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        i = 0
        while client.outbox.conflations < 20 and loop.time() < deadline:  # type: ignore[attr-defined]
            await w.store.apply(big_change(mids[i % len(mids)], i))
            i += 1
        assert client.outbox.conflations >= 20  # type: ignore[attr-defined]
        assert not client.closed  # type: ignore[attr-defined]
        truth = await w.store.get_many(mids)
        book = ClientBook()
        seen = 0

        async def caught_up() -> bool:
            nonlocal seen
            await conn.read_some(0.2)
            for msg in conn.messages[seen:]:
                assert book.apply(msg) is None, msg
            seen = len(conn.messages)
            return all(book.markets.get(m) == truth[m] for m in mids)

        while not await caught_up():
            assert loop.time() < deadline + 20, "the lagging client never caught up"
        deltas = [m for m in conn.messages if m["op"] == "delta"]
        assert any(d["base"] < d["v"] - 1 for d in deltas), "no conflated delta on the wire"
        assert not book.resyncs
        assert not book.anomalies
        conn.close()


async def test_stopped_reader_of_one_market_is_cut_by_lag(start_worker: WorkerFactory) -> None:
    """A stopped reader of one busy market stays small through conflation but is closed once
    its oldest pending change is older than max_lag_s."""
    async with start_worker(**{"fanout.high_water_bytes": HIGH_WATER,
                               "fanout.max_lag_s": 1.0}) as w:
        await w.store.apply(big_market("b0"))
        conn = await RawClient.open(w.ws_port, "json")
        await conn.send({"op": "subscribe", "id": 1, "markets": ["b0"]})
        client = await only_client(w, 1)
        await read_snapshots(conn, 1)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        i = peak = 0
        while not client.closed and loop.time() < deadline:  # type: ignore[attr-defined]
            await w.store.apply(big_change("b0", i))
            i += 1
            peak = max(peak, client.outbox.queued_bytes)  # type: ignore[attr-defined]
        assert client.closed  # type: ignore[attr-defined]
        assert client.outbox.conflations > 0  # type: ignore[attr-defined]
        assert peak <= HIGH_WATER + 8192  # one market conflates to about one delta
        while await conn.read_some(2.0):
            pass
        assert conn.close_code in (4008, None)
        conn.close()
