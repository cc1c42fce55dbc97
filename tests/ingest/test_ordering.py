"""Ordering by source and seq: duplicated, replayed and shuffled feed traffic never changes
a market twice, and sources are ordered independently."""

from __future__ import annotations

import random

from oddsfeed.core.model import MarketUpdate
from oddsfeed.store import OutOfOrder, Store, outcome_name
from oddsfeed_ingest.normalised import normalize_message
from oddsfeed_ingest.runner import FeedRunner


def update(seq: int, market: str = "o1") -> MarketUpdate:
    return normalize_message({"market": market, "event": "e", "sport": "s", "name": "n",
                              "selections": {"h": {"name": "H", "price": 2 + seq / 100}},
                              "seq": seq})


async def test_duplicates_and_shuffles_apply_each_seq_at_most_once(store: Store) -> None:
    """Each update delivered twice in a shuffled order: exactly the ones newer than all
    before them apply, every other delivery is out of order, and the version counts them."""
    deliveries = [s for s in range(1, 41) for _ in range(2)]
    random.Random(6).shuffle(deliveries)
    runner = FeedRunner(store, "push:shuffle")
    applied: list[int] = []
    newest = 0
    for seq in deliveries:
        out = await runner.submit(update(seq))
        if seq > newest:
            assert outcome_name(out) in ("created", "changed"), (seq, out)
            applied.append(seq)
            newest = seq
        else:
            assert isinstance(out, OutOfOrder), (seq, out)
    m = await store.get("o1")
    assert m is not None
    assert m.version == len(applied)
    assert len(set(applied)) == len(applied)
    assert m.selections["h"].price == 24000  # seq 40 won


async def test_sources_are_ordered_independently(store: Store) -> None:
    """A low seq from a second source is not dropped because another source is ahead."""
    a, b = FeedRunner(store, "push:a"), FeedRunner(store, "push:b")
    assert outcome_name(await a.submit(update(50))) == "created"
    assert outcome_name(await b.submit(update(1))) == "changed"
    assert isinstance(await b.submit(update(1)), OutOfOrder)
    assert isinstance(await a.submit(update(49)), OutOfOrder)
