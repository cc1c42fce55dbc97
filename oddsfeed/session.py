"""Per-connection outbound policy: a bounded outbox, conflation past the high-water mark,
and the slow-consumer decision (protocol.md section 2). No I/O: time comes in as ``now``.

The fan-out adapter pushes shared :class:`~oddsfeed.wire.Outgoing` messages in and takes
ready-to-send payloads out; it never buffers anything outside the outbox.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .book import Delta, conflate
from .wire import Outgoing, batch_payload, ws_frame
from .wire import delta as delta_message


@dataclass(slots=True)
class _Entry:
    out: Outgoing
    size: int
    at: float
    market: str | None = None
    delta: Delta | None = None


# An idle connection holds no deque (about 0.6 KB each): the queue is created on demand and
# dropped when it empties (memory per idle connection, issue 4).
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
    return base_s + (max_s - base_s) * min(1.0, max(0.0, share))


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
        self._q.append(_Entry(out, size, now, market, delta))
        self.queued_bytes += size
        if out.urgent:
            self.urgent = True
        if self.queued_bytes > self.high_water_bytes:
            self._conflate()
        # verdict(), inlined: this runs once per delivery
        if self.queued_bytes > self.max_bytes or now - self._q[0].at > self.max_lag_s:
            return SLOW
        return FULL if self.queued_bytes >= self.flush_bytes else OK

    def verdict(self, now: float) -> str:
        """``"slow"`` if the connection is past its hard limit in bytes or in age."""
        if self.queued_bytes > self.max_bytes:
            return SLOW
        if self._q and now - self._q[0].at > self.max_lag_s:
            return SLOW
        return OK

    def _conflate(self) -> None:
        # Merge each market's run of pending deltas into one delta (base of the first,
        # v of the last). A snapshot or gone of that market ends the run (and supersedes
        # it); so does a suspension, which merged with a later reopening would vanish: it
        # is never conflated away (issue 4).
        merged: deque[_Entry] = deque()
        open_run: dict[str, tuple[_Entry, list[Delta]]] = {}
        for e in self._q:
            if e.delta is not None and e.market is not None:
                run = open_run.get(e.market)
                if run is not None:
                    run[1].append(e.delta)
                    run[0].at = min(run[0].at, e.at)
                else:
                    run = open_run[e.market] = (_Entry(e.out, e.size, e.at, e.market, e.delta),
                                                [e.delta])
                    merged.append(run[0])
                if e.out.urgent:
                    self._merge(*open_run.pop(e.market))
            else:
                if e.market is not None:
                    open_run.pop(e.market, None)
                merged.append(e)
        total = 0
        for entry, deltas in open_run.values():
            self._merge(entry, deltas)
        for e in merged:
            total += e.size
        self._q = merged if merged else _NO_QUEUE
        self.queued_bytes = total

    def _merge(self, entry: _Entry, deltas: list[Delta]) -> None:
        if len(deltas) > 1:
            d = conflate(deltas)
            entry.delta = d
            entry.out = delta_message(d)
            entry.size = len(entry.out.payload(self.encoding))
            self.conflations += 1

    def oldest_t_us(self) -> int:
        """The store apply time of the oldest queued message (0 if unknown)."""
        return self._q[0].out.t_us if self._q else 0

    def take(self, max_items: int = 512) -> list[bytes]:
        """Remove and return up to ``max_items`` payloads, oldest first."""
        out: list[bytes] = []
        q = self._q
        while q and len(out) < max_items:
            e = q.popleft()
            self.queued_bytes -= e.size
            out.append(e.out.payload(self.encoding))
        if not q:
            self.urgent = False
            self._q = _NO_QUEUE
        return out

    def ws_frame(self, max_items: int = 512) -> tuple[bytes, int] | None:
        """The next complete WebSocket frame and how many messages it carries. A lone
        message reuses its shared prebuilt frame; several become one ``batch`` frame."""
        q = self._q
        if not q:
            return None
        if len(q) == 1:
            e = q.popleft()
            self.queued_bytes -= e.size
            self.urgent = False
            self._q = _NO_QUEUE
            return e.out.ws_frame(self.encoding), 1
        items = self.take(max_items)
        return ws_frame(batch_payload(items, self.encoding), self.encoding == "json"), len(items)

    def frame(self, max_items: int = 512) -> bytes | None:
        """The next frame: one message as is, or several packed into one ``batch``."""
        items = self.take(max_items)
        if not items:
            return None
        if len(items) == 1:
            return items[0]
        return batch_payload(items, self.encoding)
