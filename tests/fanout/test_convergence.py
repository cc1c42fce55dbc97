"""Many clients following the client rule end holding exactly the store's state while
random updates, deletions and late subscriptions race (protocol.md section 2, guarantee)."""

from __future__ import annotations

import asyncio
import random

from oddsfeed.core.model import Market
from oddsfeed.worker import Worker

from .builders import create, random_update
from .conftest import ws_url
from .mirror import Mirror, wait_until

N_CLIENTS = 200
N_MARKETS = 50
N_WRITERS = 5
UPDATES_PER_WRITER = 1000


def event_of(mid: str) -> str:
    return f"ev{int(mid[1:]) % 10}"


async def test_two_hundred_clients_converge(worker: Worker) -> None:
    """200 clients (mixed encodings, by market and by event, some joining mid-stream) on
    random subsets of 50 markets, while 5,000 random updates and some delete/re-create
    cycles go through the store: each ends equal to the store, never needing a resync."""
    store = worker.store
    rng = random.Random(20)
    mids = [f"m{i:02d}" for i in range(N_MARKETS)]
    for mid in mids:
        await store.apply(create(mid, event_of(mid)))
    plans: list[tuple[list[str], list[str]]] = []
    for _ in range(N_CLIENTS):
        markets = rng.sample(mids, rng.randint(1, 5))
        events = [f"ev{rng.randrange(10)}"] if rng.random() < 0.1 else []
        plans.append((markets, events))

    clients: list[Mirror] = []
    for start in range(0, N_CLIENTS, 50):
        clients += await asyncio.gather(*(
            Mirror.open(ws_url(worker), "json" if i % 2 else "msgpack")
            for i in range(start, min(start + 50, N_CLIENTS))))
    late = set(range(0, N_CLIENTS, 10))  # these subscribe while the writers run

    async def subscribe(i: int) -> None:
        markets, events = plans[i]
        await clients[i].request({"op": "subscribe", "markets": markets, "events": events},
                                 timeout=30)

    await asyncio.gather(*(subscribe(i) for i in range(N_CLIENTS) if i not in late))

    applied = 0

    async def writer(n: int) -> None:
        nonlocal applied
        r = random.Random(n)
        for _ in range(UPDATES_PER_WRITER):
            await store.apply(random_update(r, r.choice(mids)))
            applied += 1

    async def churn() -> None:
        r = random.Random(99)
        for _ in range(10):
            mid = r.choice(mids)
            await store.delete(mid)
            await asyncio.sleep(0)  # let a writer or two hit the missing market
            await store.apply(create(mid, event_of(mid)))

    async def late_joiners() -> None:
        await wait_until(lambda: applied >= 1000, 30, "writers under way")
        await asyncio.gather(*(subscribe(i) for i in late))
        assert applied < N_WRITERS * UPDATES_PER_WRITER, "the late joiners came too late"

    await asyncio.gather(*(writer(n) for n in range(N_WRITERS)), churn(), late_joiners())

    truth: dict[str, Market | None] = await store.get_many(mids)
    members = {ev: set(await store.event_market_ids(ev)) for ev in {event_of(m) for m in mids}}
    wanted = [set(markets).union(*(members[e] for e in events)) for markets, events in plans]

    def converged() -> bool:
        return all(c.markets.get(m) == truth[m] for c, want in zip(clients, wanted) for m in want)

    try:
        await wait_until(converged, 30, "every client equal to the store")
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    for c, want in zip(clients, wanted):
        c.check_clean()
        assert c.book.duplicates == 0
        assert set(c.markets) == want
