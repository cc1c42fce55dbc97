"""What one client gets of one live item, given the position it holds: the rules that keep
every client's copy of a market gap-free (protocol.md section 2). No I/O: messages go to
``client.push``; the hub resends the market where these rules refuse an item."""

from __future__ import annotations

from ..core import wire
from ..core.book import Delta
from ..core.model import Market
from ..store import LiveDelta
from .client import Client, Held
from .runs import settle


def newer(pos: tuple[str, int] | None, market: Market) -> bool:
    """Whether a client at ``pos`` holds a later version of ``market``'s epoch."""
    return pos is not None and pos[0] == market.epoch and pos[1] > market.version


def deliver(client: Client, market: str, item: Held, out: wire.Outgoing | None = None) -> bool:
    """Hand ``item`` to ``client`` if it applies on top of what the client holds, skip it if
    the client holds it already; False when the client must get the market again (a delta
    over a gap, or of another epoch). ``out`` is the item's shared message, if built."""
    settle(client)  # a member of a run's cohort: its own position first
    pos = client.pos.get(market)
    if isinstance(item, Delta):
        if pos is not None and pos[0] == item.epoch:
            if item.version <= pos[1]:
                return True
            if item.base == pos[1]:
                if out is None:  # a held item's release: a published one keeps its bytes
                    out = item.out if isinstance(item, LiveDelta) else wire.delta(item)
                client.push(out, market=market, delta=item)
                client.pos[market] = (item.epoch, item.version)
                return True
        return False
    if isinstance(item, Market):
        if pos is not None and pos[0] == item.epoch and pos[1] >= item.version:
            return True  # holds it, or a later version (a re-read can lag a catch-up)
        client.push(out or wire.snapshot(item), market=market)
        client.pos[market] = (item.epoch, item.version)
        return True
    if pos is not None:
        client.push(out or wire.gone(market), market=market)
        client.pos[market] = None
    return True


def hold(client: Client, held: list[Held], item: Held, out: wire.Outgoing) -> None:
    """Hold a live item while the client's catch-up runs; its bytes count against the
    outbox's hard limit, and past it the client is closed as a slow consumer."""
    held.append(item)
    client.held_bytes += len(out.payload(client.encoding))
    if client.held_bytes + client.outbox.queued_bytes > client.outbox.max_bytes:
        client.closed = True
        if client.sink is not None:
            client.sink.slow(client)


def settle_held(client: Client) -> None:
    """Forget the held bytes once no catch-up of ``client`` is running (counted per
    connection, not per market: while several run, released bytes still count)."""
    if not client.pending:
        client.held_bytes = 0
