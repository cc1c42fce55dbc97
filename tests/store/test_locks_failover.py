"""Price locks and feed failover decided by the apply script, on a single server and on the
3-node cluster: random interleavings of feed updates, desk writes, locks and silences are
checked step by step against a plain model of what each must do."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from oddsfeed.core import wire
from oddsfeed.core.book import Changed, Created, Delta, NoOp
from oddsfeed.core.model import FeedRank, Market, MarketUpdate
from oddsfeed.store import OutOfOrder, Standby, Store, decode_payload, desk_markets, set_locks
from oddsfeed.store.codec import state_key

MID = "lk1"
SELS = ("h", "d", "a")
STALE_MS = 60


def creation(source: str = "desk:t", feed: FeedRank | None = None) -> MarketUpdate:
    """The market with three selections, created by a desk (or by ``feed``)."""
    return MarketUpdate(market=MID, create=True, replace=True, source=source, feed=feed,
                        fields={"event": "ev", "sport": "soccer", "name": MID},
                        selections={s: {"name": s.upper(), "price": 20000 + i * 1000}
                                    for i, s in enumerate(SELS)})


def random_patch(rng: random.Random) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Random market fields and selection patches (prices, statuses) of one update."""
    fields: dict[str, Any] = {}
    if rng.random() < 0.2:
        fields["status"] = rng.choice(("open", "suspended"))
    sels: dict[str, dict[str, Any]] = {}
    for sid in rng.sample(SELS, rng.randint(0, 3)):
        patch: dict[str, Any] = {"price": rng.randrange(15000, 60000, 100)}
        if rng.random() < 0.2:
            patch["status"] = rng.choice(("active", "suspended"))
        sels[sid] = patch
    return fields, sels


def expected_after(m: Market, fields: dict[str, Any], sels: dict[str, dict[str, Any]]
                   ) -> dict[str, Any]:
    """The market's status and selections once ``fields``/``sels`` applied to ``m``."""
    out = {"status": fields.get("status", m.status)}
    for sid, s in m.selections.items():
        patch = sels.get(sid, {})
        out[sid] = (patch.get("price", s.price), patch.get("status", s.status))
    return out


def shape(m: Market) -> dict[str, Any]:
    """The part of a market the properties compare."""
    out: dict[str, Any] = {"status": m.status}
    for sid, s in m.selections.items():
        out[sid] = (s.price, s.status)
    return out


@pytest.mark.parametrize("seed", range(4))
async def test_a_locked_field_is_never_changed_by_a_feed(store: Store, seed: int) -> None:
    """Random feed updates (some whole-market replaces), desk writes, locks and unlocks: a
    feed never changes what a lock holds (and each drop is counted), the rest of its
    update applies, desk writes always apply, and after an unlock the next feed update
    applies."""
    rng = random.Random(seed)
    feed = FeedRank("feed:a", 0, 10_000_000)
    await store.apply(creation())
    locked_market, locked = False, set[str]()
    refused: dict[str, int] = {}
    seq = 0
    for _ in range(60):
        before = await store.get(MID)
        assert before is not None
        op = rng.random()
        replace = op < 0.1  # a feed's whole market (as a creation or a snapshot sends it)
        if op < 0.5:
            seq += 1
            fields, sels = random_patch(rng)
            if replace:
                fields = {"event": "ev", "sport": "soccer", "name": MID,
                          "status": rng.choice(("open", "suspended"))}
                sels = {sid: {"name": sid.upper(), "price": rng.randrange(15000, 60000, 100),
                              "status": "active"} for sid in SELS}
            out = await store.apply(MarketUpdate(market=MID, fields=fields, selections=sels,
                                                 source="feed:a", seq=seq, feed=feed,
                                                 replace=replace, create=replace))
            assert isinstance(out, Changed | NoOp)
            if locked_market:
                want = shape(before)
                if fields or sels:
                    refused["*"] = refused.get("*", 0) + 1
            else:
                kept = {s: p for s, p in sels.items() if s not in locked}
                for sid in set(sels) - set(kept):
                    refused[sid] = refused.get(sid, 0) + 1
                want = expected_after(before, fields, kept)
                if replace:  # a replace's left-out fields take their defaults
                    want["status"] = fields["status"]
        elif op < 0.7:
            fields, sels = random_patch(rng)
            out = await store.apply(MarketUpdate(market=MID, fields=fields, selections=sels,
                                                 source="desk:t"))
            assert isinstance(out, Changed | NoOp)
            want = expected_after(before, fields, sels)
        else:
            on = rng.random() < 0.6
            whole = rng.random() < 0.3
            chosen = None if whole else rng.sample(SELS, rng.randint(1, 2))
            out = await set_locks(store, MID, on=on, selections=chosen, source="desk:t", ts=1)
            assert isinstance(out, Changed | NoOp)
            if chosen is None:
                locked_market = on
                if not on:
                    locked.clear()
            elif on:
                locked.update(chosen)
            else:
                locked.difference_update(chosen)
            want = shape(before)
            if isinstance(out, Changed):
                assert out.delta.ext["locks"] == {"market": locked_market,
                                                  "selections": sorted(locked)}
                assert out.delta.version == before.version + 1
        now = await store.get(MID)
        assert now is not None
        assert shape(now) == want
        view = (await desk_markets(store, [MID]))[MID]
        assert view is not None
        assert (view.locked_market, set(view.locked)) == (locked_market, locked)
        assert view.refused == refused


@dataclass
class Seen:
    """When the store may have seen a feed last: between ``lo`` and ``hi`` (server ms)."""

    lo: int = -(10**15)
    hi: int = -(10**15)
    seq: int = 0  # the last seq the store recorded for it
    sent: list[int] = field(default_factory=list)


async def server_ms(store: Store) -> int:
    """The server's clock (TIME) on the market's node, in ms."""
    if store.cluster:
        node = store.client.get_node_from_key(state_key(MID))  # type: ignore[union-attr]
        sec, us = await store.client.time(target_nodes=node)  # type: ignore[call-arg]
    else:
        sec, us = await store.client.time()  # type: ignore[misc]
    return int(sec) * 1000 + int(us) // 1000


@pytest.mark.parametrize("seed", range(3))
async def test_a_backup_never_overrides_a_live_primary(store: Store, seed: int) -> None:
    """Random primary and backup updates (some with stale seqs) and primary silences: the
    backup is answered standby whenever the primary was seen within the staleness period
    and applies once it is silent past it; the primary always wins again at once; a stale
    seq of either source is refused and a standby leaves the backup's seq record as it
    was; the desk view names the driver, and a delta whose driver changed carries src."""
    rng = random.Random(seed)
    primary = FeedRank("prov:p", 0, STALE_MS)
    backup = FeedRank("prov:b", 1, STALE_MS)
    feeds = {"prov:p": (primary, Seen()), "prov:b": (backup, Seen())}
    await store.apply(creation())
    driver: str | None = None
    kinds: set[tuple[str, str]] = set()
    for _ in range(40):
        op = rng.random()
        if op < 0.15:  # the primary falls silent past the staleness period
            last = feeds["prov:p"][1].hi
            deadline = asyncio.get_running_loop().time() + 5
            while await server_ms(store) <= last + STALE_MS + 1:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.005)
            continue
        name = "prov:p" if op < 0.55 else "prov:b"
        rank, seen = feeds[name]
        stale_seq = seen.sent and rng.random() < 0.2
        seq = rng.choice(seen.sent) if stale_seq else (max(seen.sent, default=0)
                                                       + rng.randint(1, 3))
        seen.sent.append(seq)
        price = rng.randrange(15000, 60000, 100)
        lo = await server_ms(store)
        out = await store.apply(MarketUpdate(market=MID, source=name, seq=seq, feed=rank,
                                             selections={"h": {"price": price}}))
        hi = await server_ms(store)
        kinds.add((name, type(out).__name__))
        p = feeds["prov:p"][1]
        if name == "prov:b" and hi - p.lo <= STALE_MS:
            assert isinstance(out, Standby), out  # primary certainly live
        elif name == "prov:b" and lo - p.hi > STALE_MS:
            assert not isinstance(out, Standby), out  # primary certainly silent
        if isinstance(out, Standby):
            assert name == "prov:b"
            assert out.driver == "prov:p"
        elif seq <= seen.seq:
            assert isinstance(out, OutOfOrder), (name, seq, seen.seq, out)
        else:
            assert isinstance(out, Changed | NoOp), out
            seen.seq = seq
            assert (await store.get(MID)).selections["h"].price == price  # type: ignore[union-attr]
            if isinstance(out, Changed):
                assert out.delta.ext.get("src") == (name if driver != name else None)
                driver = name
        seen.lo, seen.hi = lo, hi
        view = (await desk_markets(store, [MID]))[MID]
        assert view is not None
        assert view.driver == (driver if driver else None)
        assert {f.source: f.priority for f in view.feeds} == {
            n: r.priority for n, (r, s) in feeds.items() if s.sent}
    # every case came up: standby, a backup applying, out of order
    assert {("prov:b", "Standby"), ("prov:b", "Changed")} <= kinds, kinds
    assert any(k == "OutOfOrder" for _, k in kinds), kinds


async def test_every_feed_silent_then_the_sweep_suspends(store: Store) -> None:
    """A silence sweep yields while another feed is live on the market and applies once
    every feed is silent; the delta of a new driver carries src, the created market's feed
    is its driver, and a snapshot names the driver."""
    primary = FeedRank("prov:p", 0, STALE_MS)
    backup = FeedRank("prov:b", 1, STALE_MS)
    sweep = FeedRank("prov:p", 0, STALE_MS, sweep=True)
    assert isinstance(await store.apply(creation("prov:p", primary)), Created)
    assert (await desk_markets(store, [MID]))[MID].driver == "prov:p"  # type: ignore[union-attr]
    t0 = await server_ms(store)
    while await server_ms(store) <= t0 + STALE_MS + 1:
        await asyncio.sleep(0.005)
    out = await store.apply(MarketUpdate(market=MID, source="prov:b", seq=1, feed=backup,
                                         selections={"h": {"price": 30000}}))
    assert isinstance(out, Changed)
    assert out.delta.ext.get("src") == "prov:b"
    out = await store.apply(MarketUpdate(market=MID, source="prov:p:health", feed=sweep,
                                         fields={"status": "suspended"}))
    assert isinstance(out, Standby)
    assert out.driver == "prov:b"
    t1 = await server_ms(store)
    while await server_ms(store) <= t1 + STALE_MS + 1:
        await asyncio.sleep(0.005)
    out = await store.apply(MarketUpdate(market=MID, source="prov:p:health", feed=sweep,
                                         fields={"status": "suspended"}))
    assert isinstance(out, Changed)
    assert "src" not in out.delta.ext  # a sweep is nobody's driving
    out = await store.apply(MarketUpdate(market=MID, source="prov:p", seq=2, feed=primary,
                                         fields={"status": "open"}))
    assert isinstance(out, Changed)
    assert out.delta.ext.get("src") == "prov:p"
    market = await store.get(MID)
    assert market is not None
    assert market.status == "open"
    assert wire.snapshot(market).message["market"]["src"] == "prov:p"


async def test_lock_delta_is_published_with_locks(store: Store) -> None:
    """A lock's delta reaches the market's subscribers with the locks extension member, and
    a snapshot carries the locks while any is set."""
    await store.apply(creation())
    got: list[Any] = []
    bus = store.bus(lambda kind, ident, data: got.append(decode_payload(data)[0]))
    await bus.start()
    try:
        await bus.subscribe_market(MID)
        await set_locks(store, MID, on=True, selections=["d", "h"], source="desk:t", ts=3)
        async with asyncio.timeout(5):
            while not got:
                await asyncio.sleep(0.01)
    finally:
        await bus.stop()
    assert isinstance(got[0], Delta)
    assert got[0].ext == {"locks": {"market": False, "selections": ["d", "h"]}}
    market = await store.get(MID)
    assert market is not None
    snap = wire.snapshot(market).message["market"]
    assert snap["locks"] == {"market": False, "selections": ["d", "h"]}
    assert "locks" not in market.to_wire()  # the HTTP API's market is the contract's
    await set_locks(store, MID, on=False, selections=None, source="desk:t", ts=4)
    assert "locks" not in wire.snapshot(await store.get(MID)).message["market"]  # type: ignore[arg-type]
