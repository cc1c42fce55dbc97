"""Per-connection outbound policy: a bounded outbox, conflation past the high-water mark,
and the slow-consumer decision (protocol.md section 2). No I/O: time comes in as ``now``.

The fan-out adapter pushes shared :class:`~oddsfeed.core.wire.Outgoing` messages in and takes
ready-to-send payloads out; it never buffers anything outside the outbox.
"""

from __future__ import annotations

from collections import deque

from .book import Delta, conflate
from .wire import Outgoing, batch_payload
from .wire import delta as delta_message

# A queued message: (out, size in bytes, time queued, market, delta). A plain tuple: push()
# builds one per queued delivery, and a dataclass __init__ cost more than the rest of push.
_Entry = tuple[Outgoing, int, float, str | None, Delta | None]


# An idle connection holds no deque (about 0.6 KB each): the queue is created on demand and
# dropped when it empties: idle connections are most of a node's connections, and their
# memory is what bounds how many one node holds.
_NO_QUEUE: deque[_Entry] = deque(maxlen=0)

OK = "ok"
SLOW = "slow"
FULL = "full"

# A batch this large is written at once instead of waiting for the batching window, so the
# window alone never pushes a connection past its high-water mark into conflation.
FLUSH_BYTES = 32 * 1024

# The worker's busy share (CPU seconds per second) between which the batching window of hot
# connections grows from its base to its maximum (see adaptive_window).
BUSY_LOW = 0.4
BUSY_HIGH = 0.8


def adaptive_window(busy: float, base_s: float, max_s: float) -> float:
    """The batching window for connections that receive many messages, given the worker's
    busy share (0..1): ``base_s`` up to BUSY_LOW, ``max_s`` from BUSY_HIGH, linear between.

    Frames, not messages, cost a fan-out worker most of its CPU (one send syscall each), so
    a busy worker trades a few milliseconds of latency on its busiest connections for fewer
    frames, instead of falling behind everyone. ``max_s <= base_s`` keeps ``base_s``."""
    if max_s <= base_s:
        return base_s
    share = (busy - BUSY_LOW) / (BUSY_HIGH - BUSY_LOW)
    if share <= 0.0:
        return base_s
    if share >= 1.0:
        return max_s
    return min(max_s, base_s + (max_s - base_s) * share)


class Outbox:
    """A connection's queue of messages not yet written, bounded in bytes and age.

    Call :meth:`push` for every message; it returns ``"slow"`` when the connection must be
    closed with 4008 (queued bytes past ``max_bytes`` even after conflation, or the oldest
    message older than ``max_lag_s``), ``"full"`` when a frame's worth is queued. Call
    :meth:`take` from the writer to get the next frame's payloads. Past
    ``high_water_bytes`` pending deltas are conflated per market.
    """

    __slots__ = ("encoding", "high_water_bytes", "max_bytes", "max_lag_s", "_q", "queued_bytes",
                 "conflations", "urgent", "flush_bytes")

    def __init__(self, *, encoding: str, high_water_bytes: int, max_bytes: int,
                 max_lag_s: float) -> None:
        self.encoding = encoding
        self.high_water_bytes = high_water_bytes
        self.max_bytes = max_bytes
        self.max_lag_s = max_lag_s
        self._q = _NO_QUEUE
        self.queued_bytes = 0
        self.conflations = 0
        self.urgent = False
        self.flush_bytes = min(FLUSH_BYTES, high_water_bytes // 2)

    def __len__(self) -> int:
        return len(self._q)

    def push(self, out: Outgoing, *, now: float, market: str | None = None,
             delta: Delta | None = None) -> str:
        """Queue one message; returns ``"ok"``, ``"full"`` (enough queued for one frame:
        write now, do not wait for a batching window) or ``"slow"`` (close, 4008)."""
        size = len(out.payload(self.encoding))
        if self._q is _NO_QUEUE:
            self._q = deque()
        self._q.append((out, size, now, market, delta))
        self.queued_bytes += size
        if out.urgent:
            self.urgent = True
            if market is not None and len(self._q) > 1:
                self._promote(market)
        if self.queued_bytes > self.high_water_bytes:
            self._conflate()
        # verdict(), inlined: this runs once per delivery
        if self.queued_bytes > self.max_bytes or now - self._q[0][2] > self.max_lag_s:
            return SLOW
        return FULL if self.queued_bytes >= self.flush_bytes else OK

    def _promote(self, market: str) -> None:
        # Move the last entry (urgent, of ``market``) ahead of every entry of another market
        # after the leading urgent ones; the entries of ``market`` keep their order before it.
        # The head takes the oldest queued time, so the age limit still counts from the
        # oldest message.
        q = self._q
        entries = list(q)
        lead = 0
        while lead < len(entries) - 1 and entries[lead][0].urgent:
            lead += 1
        rest = entries[lead:-1]
        mine = [e for e in rest if e[3] == market]
        if len(mine) == len(rest):
            return  # nothing of another market to overtake
        others = [e for e in rest if e[3] != market]
        ordered = entries[:lead] + mine + [entries[-1]] + others
        oldest = min(e[2] for e in entries)
        first = ordered[0]
        ordered[0] = (first[0], first[1], oldest, first[3], first[4])
        self._q = deque(ordered)

    def verdict(self, now: float) -> str:
        """``"slow"`` if the connection is past its hard limit in bytes or in age."""
        if self.queued_bytes > self.max_bytes:
            return SLOW
        if self._q and now - self._q[0][2] > self.max_lag_s:
            return SLOW
        return OK

    def _conflate(self) -> None:
        # Merge each market's run of pending deltas into one delta (base of the first,
        # v of the last). A snapshot or gone of that market ends the run (and supersedes
        # it); so does a suspension, which merged with a later reopening would vanish: it
        # is never conflated away: a client must see that betting stopped, however briefly.
        merged: list[_Entry] = []
        # market -> (where its run's entry sits in merged, the run's deltas, oldest time)
        open_run: dict[str, tuple[int, list[Delta], list[float]]] = {}
        for e in self._q:
            out, _, at, market, delta = e
            if delta is not None and market is not None:
                run = open_run.get(market)
                if run is not None:
                    run[1].append(delta)
                    run[2][0] = min(run[2][0], at)
                else:
                    run = open_run[market] = (len(merged), [delta], [at])
                    merged.append(e)
                if out.urgent:
                    self._merge(merged, *open_run.pop(market))
            else:
                if market is not None:
                    run = open_run.pop(market, None)
                    if run is not None:  # superseded: the run's first entry stays as it is
                        first = merged[run[0]]
                        merged[run[0]] = (first[0], first[1], run[2][0], first[3], first[4])
                merged.append(e)
        for run in open_run.values():
            self._merge(merged, *run)
        self._q = deque(merged) if merged else _NO_QUEUE
        self.queued_bytes = sum(e[1] for e in merged)

    def _merge(self, merged: list[_Entry], at_index: int, deltas: list[Delta],
               oldest: list[float]) -> None:
        out, size, _, market, delta = merged[at_index]
        if len(deltas) > 1:
            delta = conflate(deltas)
            out = delta_message(delta)
            size = len(out.payload(self.encoding))
            self.conflations += 1
        merged[at_index] = (out, size, oldest[0], market, delta)

    def oldest_t_us(self) -> int:
        """The store apply time of the oldest queued message (0 if unknown)."""
        return self._q[0][0].t_us if self._q else 0

    def take_one(self) -> Outgoing | None:
        """Remove and return the queued message when it is the only one, else None (its
        frame is then the one shared by every subscriber of that message)."""
        q = self._q
        if len(q) != 1:
            return None
        e = q.popleft()
        self.queued_bytes -= e[1]
        self.urgent = False
        self._q = _NO_QUEUE
        return e[0]

    def take_all(self, max_items: int = 512) -> tuple[Outgoing, ...] | None:
        """Remove and return every queued message, oldest first, when there are 1 to
        ``max_items`` (one frame's worth); else None and nothing is removed. Connections
        that queued the same messages frame them once (see the fan-out's ``frames``)."""
        q = self._q
        n = len(q)
        if n == 1:  # the common case: one message in the window
            messages: tuple[Outgoing, ...] = (q[0][0],)
        elif not n or n > max_items:
            return None
        else:
            messages = tuple([e[0] for e in q])
        self.queued_bytes = 0
        self.urgent = False
        self._q = _NO_QUEUE
        return messages

    def take(self, max_items: int = 512) -> list[bytes]:
        """Remove and return up to ``max_items`` payloads, oldest first."""
        out: list[bytes] = []
        q = self._q
        while q and len(out) < max_items:
            e = q.popleft()
            self.queued_bytes -= e[1]
            out.append(e[0].payload(self.encoding))
        if not q:
            self.urgent = False
            self._q = _NO_QUEUE
        return out

    def frame(self, max_items: int = 512) -> bytes | None:
        """The next frame: one message as is, or several packed into one ``batch``."""
        items = self.take(max_items)
        if not items:
            return None
        if len(items) == 1:
            return items[0]
        return batch_payload(items, self.encoding)
