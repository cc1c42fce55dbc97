"""A market's run: the deltas of one market queued once per update, not once per subscriber,
while a batching window is open.

Rules (the server opens runs, the hub decides who takes each delta, the writer frames them):
- a run holds one market's deltas of one window, each once, in version order, and the
  subscribers that take them: each holds a contiguous slice ``[run_at, run_end)`` of it,
  so a subscriber that missed one of the run's deltas (the hub did not hand it the delta)
  can never take a later one from the run;
- a client is in at most one run, and only while its outbox is empty: whatever else is
  pushed to it (another market's message, a snapshot, a reply, a heartbeat) first moves its
  slice into its outbox (:func:`leave`), so what it receives keeps the order of today's
  per-connection queue, with its conflation and limits;
- at the window's end each member gets its slice as one frame, built once per slice and
  encoding (a market's subscribers share it); a member whose socket is backed up goes
  through its outbox as before;
- a run is bounded: past ``RUN_ITEMS`` deltas or its flush size in bytes it is written at
  once, like an outbox holding a frame's worth;
- the members that hold every delta the hub handed the run are its **cohort**
  (``run_end == COHORT``): their slice ends at the run's ``cohort_end`` and their position
  is the run's delta before it, so an update the whole cohort takes (:meth:`Run.advance`)
  costs one append and one integer, not a position check and move per member. A member's
  own position is written back (:func:`settle`) before anything else concerns it: whatever
  is pushed to it, a hold or a re-read of its market, a snapshot, an unsubscribe, the
  window's end; only the hub advances the cohort, and only with a delta that applies on
  top of the position the cohort holds.

No I/O here.
"""

from __future__ import annotations

import time
from typing import Any, Generic, Protocol, TypeVar

from ..core.book import Delta
from ..core.session import SLOW, Outbox
from ..core.wire import Outgoing
from . import metrics

# Deltas per run at most (one frame's worth, as the writer's FRAME_ITEMS).
RUN_ITEMS = 512

# A member's ``run_end`` while it is in its run's cohort (its slice ends at ``cohort_end``).
COHORT = -1


class Member(Protocol):
    """What a run needs of a client (:class:`~oddsfeed.fanout.client.Client`; named through
    this protocol so that the client and its run do not import each other)."""

    run: Run[Any] | None
    run_at: int
    run_end: int
    closed: bool
    received: int
    pos: dict[str, tuple[str, int] | None]
    outbox: Outbox
    sink: Any  # the client's Sink: ready() and slow()


M = TypeVar("M", bound=Member)


class Run(Generic[M]):
    """One market's deltas of one batching window and the clients that take them."""

    __slots__ = ("market", "messages", "deltas", "clients", "hot", "nbytes", "limit_bytes",
                 "encoding", "opened", "frames", "cohort_end", "ncohort", "formed")

    def __init__(self, market: str, hot: bool, encoding: str, limit_bytes: int) -> None:
        self.market = market
        self.messages: list[Outgoing] = []
        self.deltas: list[Delta] = []
        # every client that joined (one that left, or joined again, is told by its own
        # ``run`` and slice): the writer skips members whose ``run`` is not this one
        self.clients: list[M] = []
        self.hot = hot  # which batching window it waits for
        self.nbytes = 0  # payload bytes in ``encoding`` (the first member's), for the bound
        self.encoding = encoding
        self.limit_bytes = limit_bytes
        self.opened = time.monotonic()  # the queued time of every delta (the age limit)
        # (encoding, at, end) -> the frame of a slice other than the whole run in the run's
        # encoding (the writer keeps that one), built once for its members
        self.frames: dict[tuple[str, int, int], bytes] = {}
        # the cohort's slice end (moved by advance() only) and how many members it holds
        self.cohort_end = 0
        self.ncohort = 0
        self.formed = False  # whether advance() formed the cohort yet

    def index(self, out: Outgoing, delta: Delta) -> int:
        """The index of ``out`` in the run, appending it when it is not the last one (the
        hub hands one delta's subscribers over in chunks: it is appended once)."""
        messages = self.messages
        if not messages or messages[-1] is not out:
            messages.append(out)
            self.deltas.append(delta)
            self.nbytes += len(out.payload(self.encoding))
        return len(messages) - 1

    def advance(self, out: Outgoing, delta: Delta) -> int:
        """The hub's next delta of the market, checked to apply on top of the cohort's
        position: appended, and every cohort member takes it; returns how many did.

        The cohort forms here, at the run's second delta (a window with one update per
        market pays nothing for it): every member that took all of the run so far."""
        idx = self.index(out, delta)
        if not self.formed:
            self.formed = True
            n = 0
            for client in self.clients:
                if client.run is self and client.run_end == idx:
                    client.run_end = COHORT
                    n += 1
            self.ncohort = n
        self.cohort_end = idx + 1
        return self.ncohort

    def position(self) -> tuple[str, int]:
        """The (epoch, version) a cohort member holds."""
        d = self.deltas[self.cohort_end - 1]
        return d.epoch, d.version

    def full(self) -> bool:
        """Whether the run holds a frame's worth (written at once, not at the window's end)."""
        return self.nbytes >= self.limit_bytes or len(self.messages) >= RUN_ITEMS

    def join(self, client: M, idx: int) -> None:
        """``client`` (in no run, its outbox empty) takes the run's delta at ``idx`` on."""
        client.run = self
        client.run_at = idx
        client.run_end = idx + 1  # in the cohort from its next delta on (take)
        self.clients.append(client)

    def take(self, clients: list[M], idx: int) -> list[M]:
        """The members of ``clients`` whose slice ends right before ``idx`` take it (one that
        catches up with the cohort joins it; a cohort member the delta was not advanced
        for takes it alone); returns the others (not in this run, or past a delta they did
        not take)."""
        rest: list[M] = []
        cohort_end = self.cohort_end
        for client in clients:
            if client.run is self:
                end = client.run_end
                if end == idx:
                    if idx + 1 == cohort_end:
                        client.run_end = COHORT
                        self.ncohort += 1
                    else:
                        client.run_end = idx + 1
                    continue
                if end == COHORT:
                    if cohort_end == idx + 1:
                        continue  # the cohort took it already
                    if cohort_end == idx:
                        client.run_end = idx + 1
                        self.ncohort -= 1
                        continue
            rest.append(client)
        return rest


def settle(client: Member) -> None:
    """``client`` leaves its run's cohort (if in it): its slice and position are its own
    again, the position written back for its market."""
    run = client.run
    if run is None or client.run_end != COHORT:
        return
    client.run_end = run.cohort_end
    run.ncohort -= 1
    if run.market in client.pos:
        client.pos[run.market] = run.position()


def leave(client: Member) -> bool:
    """``client`` leaves its run: its slice moves to its outbox, in order, with the outbox's
    conflation and limits (a slow verdict closes it), and the client waits for a batching
    window like any client with something queued. A closed client just leaves. Returns
    whether the client is still open."""
    run = client.run
    if run is None:
        return not client.closed
    settle(client)
    client.run = None
    if client.closed:
        return False
    at, end = client.run_at, client.run_end
    client.received += end - at
    outbox = client.outbox
    before = outbox.conflations
    verdict = "ok"
    market, messages, deltas, opened = run.market, run.messages, run.deltas, run.opened
    for i in range(at, end):
        verdict = outbox.push(messages[i], now=opened, market=market, delta=deltas[i])
        if verdict == SLOW:
            break
    if outbox.conflations != before:
        metrics.CONFLATIONS.inc(outbox.conflations - before)
    sink = client.sink
    if verdict == SLOW:
        client.closed = True
        if sink is not None:
            sink.slow(client)
        return False
    if sink is not None:
        sink.ready(client, verdict != "ok")
    return True
