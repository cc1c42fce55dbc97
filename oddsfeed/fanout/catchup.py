"""The race-free catch-up of a client's markets (protocol.md section 2): the market's
channel is subscribed first, the catch-up (history from a position, or a snapshot) is read
after, and live items arriving meanwhile are held and released by version, so there is
never a hole between catch-up and live, and never a step back to an older version.
No socket I/O; the hub owns the state."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from ..core import wire
from ..core.book import Delta
from ..core.errors import StoreError
from ..core.model import Market
from .client import Client
from .delivery import newer, settle_held
from .hubview import HubView
from .runs import settle

log = logging.getLogger("oddsfeed.fanout")

KEPT = ("the store is unavailable: the subscription is kept and its markets follow when the "
        "store answers")


async def catch_up(hub: HubView, client: Client, markets: list[str],
               from_: dict[str, wire.Position] | Any, *, reply_id: Any = None,
               events: Iterable[str] = (), named: Iterable[str] = (),
               reply: bool = True) -> None:
    """Subscribe the channels, read catch-up, reply, send catch-up, release held items.

    If a read fails the markets stay subscribed and owed (see :class:`.owed.Owed`),
    their held items are dropped (the snapshot that repays them supersedes them), and a
    request gets ``error`` ``internal``: nothing waits on a read that will not come."""
    settle(client)  # held items of a market its run's cohort holds would be skipped
    for m in markets:
        client.pending.setdefault(m, [])
        if hub.index.add_market(client, m):
            hub.markets.pop(m, None)  # a (re)subscribed channel starts a new sequence
        # Awaited even when another client already asked for the channel: it returns once
        # the server confirmed the subscription, so the read below cannot overtake it.
        await hub.bus.subscribe_market(m)
    hub.sync_count(client)
    histories: dict[str, tuple[Market, list[Delta]] | None] = {}
    try:
        for m in markets:
            p = from_.get(m) if from_ else None
            if p is not None:
                histories[m] = await hub.store.history(m, p.epoch, p.version)
        need = [m for m in markets if histories.get(m) is None]
        current = await hub.store.get_many(need) if need else {}
    except StoreError as exc:
        log.warning("catch-up read failed for %d market(s), owed: %s", len(markets), exc)
        mine = hub.index.markets_of(client)
        kept = [m for m in markets if m in mine]
        for m in markets:
            client.pending.pop(m, None)
        for m in kept:
            # the client keeps what it holds; None: it holds nothing the node knows of
            client.pos.setdefault(m, None)
        settle_held(client)
        hub.owed.add(client, kept, ())
        if reply:
            client.push(wire.error("internal", KEPT, reply_id))
        return
    found = [m for m in markets if histories.get(m) is not None or current.get(m) is not None]
    missing = [m for m in named if m not in found]
    if reply:
        client.push(wire.reply("subscribed", reply_id, markets=found,
                               events=list(events), missing=missing))
    for m in markets:
        if client.outbox.queued_bytes > client.outbox.high_water_bytes:
            await client.drained()
        if client.closed:
            return
        if m not in client.pending:
            continue  # unsubscribed meanwhile
        hist = histories.get(m)
        pos = client.pos.get(m)
        if hist is not None:
            market, deltas = hist
            for d in deltas:
                client.push(wire.delta(d), market=m, delta=d)
            if not newer(pos, market):
                client.pos[m] = (market.epoch, market.version)
        else:
            snap = current.get(m)
            if snap is not None:
                # another catch-up of this market (its read later than this one) may
                # have gone out meanwhile: never send the client back to an older version
                if not newer(pos, snap):
                    client.push(wire.snapshot(snap), market=m)
                    client.pos[m] = (snap.epoch, snap.version)
            else:
                if m in client.pos and client.pos[m] is not None:
                    client.push(wire.gone(m), market=m)
                client.pos[m] = None
        hub.release(client, m)
