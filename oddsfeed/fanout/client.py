"""One WebSocket connection's protocol state (:class:`Client`) and what the hub needs from
the I/O side (:class:`Sink`). No I/O here: the server and the writer own the sockets."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from ..core import wire
from ..core.book import Delta
from ..core.model import Market
from ..core.session import FULL, SLOW, Outbox
from ..store import Gone
from . import metrics
from .runs import Run, leave

# What a held (not yet released) live item can be.
Held = Delta | Market | Gone


class Sink(Protocol):
    """What the hub and its clients need from the I/O side; the server implements it and
    every client and the hub hold the one instance (no per-connection callbacks)."""

    def ready(self, client: Client, urgent: bool) -> None:
        """The client's outbox stopped being empty (or got an urgent message, or a frame's
        worth): write it now or at the end of the batching window."""

    def direct(self, client: Client, out: wire.Outgoing, now: float) -> bool:
        """Called while the client's outbox is empty: write ``out`` at once and return True,
        or return False to have it queued."""

    def slow(self, client: Client) -> None:
        """The client is past its slow-consumer limit: close it (4008)."""

    def send_many(self, clients: list[Client], out: wire.Outgoing, market: str,
                  delta: Delta, now: float) -> None:
        """One delta to every client of ``clients`` (the hub already moved their positions);
        must behave like ``client.push()`` for each of them, in order."""

    def advance(self, market: str, out: wire.Outgoing, delta: Delta, checked: bool) -> int:
        """The hub's next delta of ``market`` to the cohort of the market's run
        (:mod:`.runs`) if it has one, when ``checked`` (it applies on top of the node's
        position, which the cohort holds; otherwise the cohort is dissolved): returns how
        many subscribers took it there (0: none; the hub hands it to the others, skipping
        the cohort's members, and to every subscriber when 0)."""


class Client:
    """One WebSocket connection's protocol state; the I/O lives in the server and the writer."""

    __slots__ = ("id", "encoding", "outbox", "pos", "pending", "via_event", "explicit",
                 "closed", "sink", "counted", "last_sent", "writer", "conn", "transport", "proto",
                 "fd", "received", "rate", "streak", "held_bytes", "run", "run_at",
                 "run_end", "__weakref__")

    def __init__(self, cid: int, encoding: str, outbox: Outbox) -> None:
        self.id = cid
        self.encoding = encoding
        self.outbox = outbox
        # market -> (epoch, version) the client holds, or None (subscribed, market absent)
        self.pos: dict[str, tuple[str, int] | None] = {}
        # market -> live items held while its catch-up is being read
        self.pending: dict[str, list[Held]] = {}
        self.via_event: dict[str, str] = {}  # market -> event it came in through
        self.explicit: set[str] = set()  # markets the client named itself
        self.closed = False
        # the server: decides when the writer wakes (batching window), may write a message
        # at once, closes a slow client
        self.sink: Sink | None = None
        self.last_sent = 0.0  # monotonic time of the last frame written
        # the writer task, only while the socket is backed up (memory: no idle task per
        # connection); while it runs, nothing else writes to this connection
        self.writer: asyncio.Task[None] | None = None
        self.conn: Any = None  # the server's connection object
        # its transport and protocol state machine (the hot path reads them per delivery)
        self.transport: Any = None
        self.proto: Any = None
        self.fd = -1  # its socket, where the writer may write to it directly (else -1)
        self.counted = 0  # subscriptions this client holds in the metrics gauge
        # messages handed to this client since the server's ticker last visited it, and how
        # many it got in the visit period before (hot connections share frames when busy)
        self.received = 0
        self.rate = 0
        # deliveries in a row that came within the batching policy's quiet period of its
        # last frame, up to its HOT_STREAK (a connection whose traffic jumps is known to be
        # hot within a few messages)
        self.streak = 0
        # bytes of the live items held in ``pending`` (they count against the outbox limit)
        self.held_bytes = 0
        # the market run (:mod:`.runs`) this client takes a slice [run_at, run_end) of, or
        # None; while set, its outbox is empty
        self.run: Run[Client] | None = None
        self.run_at = self.run_end = 0

    def __hash__(self) -> int:
        return self.id

    def __eq__(self, other: object) -> bool:
        return self is other

    def push(self, out: wire.Outgoing, *, market: str | None = None,
             delta: Delta | None = None, now: float | None = None,
             write_through: bool = True) -> None:
        """Queue a message; a slow verdict hands the client to ``sink.slow`` (close 4008).
        ``now`` (monotonic) may be passed by a caller pushing to many clients at once;
        ``write_through=False`` skips ``sink.direct`` (the caller already asked it)."""
        if self.closed:
            return
        if self.run is not None and not leave(self):  # what the run holds for it goes first
            return
        self.received += 1
        outbox = self.outbox
        was_empty = not outbox.queued_bytes
        sink = self.sink
        if was_empty and write_through and sink is not None:
            if now is None:
                now = time.monotonic()
            if sink.direct(self, out, now):
                return
        before = outbox.conflations
        verdict = outbox.push(out, now=time.monotonic() if now is None else now,
                              market=market, delta=delta)
        if outbox.conflations != before:
            metrics.CONFLATIONS.inc(outbox.conflations - before)
        if verdict == SLOW:
            self.closed = True
            if sink is not None:
                sink.slow(self)
            return
        now_please = out.urgent or verdict == FULL
        if (was_empty or now_please) and sink is not None:
            # urgent, or a frame's worth queued: written now, not at the window's end
            sink.ready(self, now_please)

    async def drained(self) -> None:
        """Wait while the client's outbox is past its high-water mark, so that a large
        catch-up (snapshots do not conflate) goes out at the pace the client reads instead of
        being queued at once and cut as slow. The slow-consumer checks still apply meanwhile:
        a client that does not read is closed, which ends the wait."""
        # A poll, not an event: the outbox is drained by the writer, which has no
        # hook into the hub, and this only runs while a catch-up is past the high-water mark.
        outbox = self.outbox
        while outbox.queued_bytes > outbox.high_water_bytes and not self.closed:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
