"""The store process is SIGKILLed during a burst of subscribes from many clients while a
writer runs, and restarted with its data: every client is told ``status`` ``interrupted``
then ``restored``, and ends holding exactly the store's state of every market it asked
for, with nothing held or owed in the hub and no ERROR logged (docs/protocol.md, feed
status)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from oddsfeed.core.errors import StoreError
from tests.fanout.builders import create, price

from .ws_support import Mirror, errors_logged, restartable, wait_until, worker_on, ws_url

EVENTS = {f"ev{e}": [f"ev{e}m{i}" for i in range(4)] for e in range(3)}
LONE = [f"lone{i}" for i in range(4)]
ALL = [m for ms in EVENTS.values() for m in ms] + LONE


def burst(rng: random.Random) -> tuple[list[dict[str, Any]], set[str]]:
    """One client's subscribe requests (plain, by event, with a stale position, a missing
    id) and the markets they ask for."""
    named = rng.sample(ALL, 3)
    event = rng.choice(sorted(EVENTS))
    stale = rng.choice(ALL)
    requests = [
        {"op": "subscribe", "markets": named},
        {"op": "subscribe", "events": [event]},
        {"op": "subscribe", "markets": [stale],
         "from": {stale: {"epoch": "not-the-epoch", "version": 3}}},
        {"op": "subscribe", "markets": ["ghost"]},
    ]
    return requests, {*named, *EVENTS[event], stale}


async def test_store_killed_during_subscribe_burst(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """SIGKILL of the store in the middle of 16 clients' subscribe bursts (with live
    updates), then a restart: each client gets interrupted then restored, and converges to
    the store for every market it asked for; a client connecting during the outage is told
    at once."""
    rng = random.Random(17)
    with restartable(tmp_path / "valkey") as store:
        async with worker_on(store.url) as w:
            await w.store.apply_many([create(m, e) for e, ms in EVENTS.items() for m in ms])
            await w.store.apply_many([create(m, m) for m in LONE])
            clients = [await Mirror.open(ws_url(w), "json" if i % 2 else "msgpack")
                       for i in range(16)]
            wanted: list[set[str]] = []
            plans = []
            for _ in clients:
                requests, markets = burst(rng)
                plans.append(requests)
                wanted.append(markets)

            stop = asyncio.Event()
            applied = [0]

            async def writer() -> None:
                i = 0
                while not stop.is_set():
                    i += 1
                    try:
                        await w.store.apply(price(ALL[i % len(ALL)], 20_000 + i % 5000))
                        applied[0] += 1
                    except StoreError:
                        await asyncio.sleep(0.01)  # pacing while the store is away
                    await asyncio.sleep(0)

            task = asyncio.get_running_loop().create_task(writer())
            for step in range(4):
                if step == 2:
                    store.kill()
                for c, requests in zip(clients, plans, strict=True):
                    await c.send(requests[step])
            await wait_until(lambda: all(c.ops("status") for c in clients),
                             what="every client told the feed is interrupted")
            late = await Mirror.open(ws_url(w))
            await wait_until(lambda: [m["op"] for m in late.messages[:2]] == ["hello", "status"],
                             what="a client connecting during the outage is told")
            store.start()
            await wait_until(lambda: all(len(c.ops("status")) == 2 for c in clients), 20,
                             "every client told the feed is restored")
            since = applied[0]
            await wait_until(lambda: applied[0] > since + 50, what="live updates after recovery")
            stop.set()
            await task
            truth = await w.store.get_many(ALL)

            def converged() -> bool:
                return all(c.markets == {m: truth[m] for m in want}
                           for c, want in zip(clients, wanted, strict=True))

            await wait_until(converged, 20, "every client equal to the store")
            for c in [*clients, late]:
                assert [m["feed"] for m in c.ops("status")] == ["interrupted", "restored"]
                assert c.error is None
                assert not c.book.anomalies
                assert c.close_code is None
            assert not w.hub.owed
            assert all(not c.pending and not c.held_bytes for c in w.hub.clients)
            for c in [*clients, late]:
                await c.close()
    assert not errors_logged(caplog)
