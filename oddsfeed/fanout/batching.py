"""The adaptive batching policy: which message is written at once and which waits for a
shared batching window, and how wide the window of the busiest connections is.

Pure: it reads a connection's counters and the worker's CPU share and lateness, and
decides; the server owns the timers and the writer the sockets (docs/performance.md, "Why
the batching policy looks like this", has the measurements behind each rule).

Rules:
- a worker with CPU to spare (busy share under ``batch_min_busy``) batches nothing: the
  window would add latency and save almost no frames;
- a batching worker queues the message of a connection written to within the last
  ``QUIET_WINDOWS`` windows (a burst's first message goes at once, the rest share frames),
  unless the connection is cold (too few messages a second to ever share a frame);
- hot connections (many messages per window, or a streak of close ones) wait for a hot
  window that widens with the busy share, and at once to the widest when the node reads
  deltas later than ``BEHIND_S`` after their apply.
"""

from __future__ import annotations

from ..core.session import adaptive_window
from .client import Client

# A connection is quiet after this many batching windows without a frame.
QUIET_WINDOWS = 10

# Past this lateness (store apply -> node) the node is behind: hot connections get the
# widest window, as if the worker were fully busy.
BEHIND_S = 0.02

# A connection is hot when it gets at least this many messages per hot window on average.
HOT_MESSAGES = 1.0

# ...or after this many deliveries in a row, each within the quiet period of its last
# frame: the per-period counts lag a jump in traffic by up to a period, and one message per
# frame meanwhile is what makes a worker fall behind. Small enough to catch a jump within a
# few messages; large enough that a connection at a few messages a second rarely reaches it
# by chance.
HOT_STREAK = 3

# A connection is cold when it gets at most this many messages per batching window on
# average, over the ticker's last visit period and so far in this one, and is not on a
# streak: its messages are written at once even right after a frame, since they would
# hardly ever share one. Counted so far in this period too, so that a connection whose
# traffic jumps is warm again after that many messages, not up to a period later.
COLD_MESSAGES = 0.05

# Batching stops when the busy share falls this far below fanout.batch_min_busy (a worker
# near the threshold does not switch at every tick).
BATCH_HYSTERESIS = 0.1

# Weight of the newest tick in the worker's smoothed busy share.
BUSY_SMOOTHING = 0.3

# A streak no connection reaches (HOT_STREAK applies only while the hot window is widened).
NEVER = 1 << 62


class BatchingPolicy:
    """The batching decisions of one worker; :meth:`adapt` once per ticker tick,
    :meth:`write_now` once per delivery, :meth:`hot` for a message that waits."""

    __slots__ = ("window_s", "max_window_s", "hot_window_s", "hot_min", "hot_streak",
                 "cold_max", "period", "busy", "tick_busy", "min_busy", "batching",
                 "quiet_s", "busy_quiet_s", "behind_s")

    def __init__(self, *, window_ms: float, max_window_ms: float, min_busy: float) -> None:
        self.window_s = window_ms / 1000
        # hot clients of a busy worker share a wider window, sized by adaptive_window()
        # from the busy share; 0 = no batching
        self.max_window_s = (max(self.window_s, max_window_ms / 1000)
                             if self.window_s else 0.0)
        self.hot_window_s = self.window_s
        # messages per ticker period from which a connection is hot: at least one per hot
        # window on average, so that waiting for the window shares frames (inf: nobody)
        self.hot_min = float("inf")
        self.hot_streak = NEVER  # HOT_STREAK while the hot window is widened
        # messages per ticker period up to which a connection is cold (see COLD_MESSAGES)
        self.cold_max = 0.0
        self.period = 1.0  # the ticker's visit period (set by the ticker)
        self.busy = 0.0  # smoothed CPU seconds per second of this worker
        self.tick_busy = 0.0  # the same over the last tick alone
        # a connection that got no frame for this long is quiet: its next message is
        # written at once; one that did is busy and its messages share frames
        self.busy_quiet_s = QUIET_WINDOWS * self.window_s
        self.min_busy = min_busy
        self.batching = False
        self.quiet_s = 0.0
        self.set_batching(bool(self.window_s) and min_busy <= 0)
        # reading deltas later than this after their apply, the node is behind: hot
        # connections get the widest window. Not the others: one message per window gains
        # nothing from a batch and costs more to queue than to write.
        self.behind_s = max(BEHIND_S, self.window_s) if self.window_s else float("inf")

    def adapt(self, cpu_s: float, wall_s: float, lateness_s: float) -> None:
        """Fold one tick's CPU share into the busy share; size the hot window from it (the
        widest while the node is behind the store) and the rate from which a connection is
        hot from the window.

        The share that sizes the window rises with the last tick alone and falls with the
        smoothed one: a load that jumps gets batching one tick after it starts, not after
        the several ticks the smoothed share needs to reach batch_min_busy, and one idle
        tick does not end it."""
        if wall_s <= 0:
            return
        self.tick_busy = min(1.0, cpu_s / wall_s)
        self.busy += BUSY_SMOOTHING * (self.tick_busy - self.busy)
        share = 1.0 if lateness_s > self.behind_s else max(self.busy, self.tick_busy)
        if self.window_s:
            if share >= self.min_busy:
                self.set_batching(True)
            elif share < self.min_busy - BATCH_HYSTERESIS:
                self.set_batching(False)
        self.set_hot_window(adaptive_window(share, self.window_s, self.max_window_s))
        self.cold_max = (COLD_MESSAGES * self.period / self.window_s
                         if self.window_s else 0.0)

    def set_hot_window(self, window: float) -> None:
        self.hot_window_s = window
        widened = self.batching and window > self.window_s
        self.hot_min = HOT_MESSAGES * self.period / window if widened else float("inf")
        self.hot_streak = HOT_STREAK if widened else NEVER

    def behind(self, lateness_s: float) -> bool:
        """Whether a delta read ``lateness_s`` after its apply should widen the hot window
        now (the node is behind and the window is not at its widest yet)."""
        return lateness_s > self.behind_s and self.hot_window_s < self.max_window_s

    def widen(self) -> None:
        """The node is behind the store: batch with the widest hot window now, not at the
        next tick; the next :meth:`adapt` sizes it again."""
        self.set_batching(True)
        self.set_hot_window(self.max_window_s)

    def set_batching(self, on: bool) -> None:
        # quiet_s is read once per delivery (write_now): kept here, never derived there
        self.batching = on
        self.quiet_s = self.busy_quiet_s if on else 0.0

    def hot(self, client: Client) -> bool:
        """Whether ``client`` waits for the (widened) hot window: hot over the last visit
        period, already in this one, or by its streak (the counts lag a jump in traffic by
        up to a period)."""
        return (client.rate >= self.hot_min or client.received >= self.hot_min
                or client.streak >= self.hot_streak)

    def write_now(self, client: Client, now: float) -> bool:
        """Whether a message for ``client`` may be written at once (its socket permitting),
        rather than queued and coalesced at the window's end (like Nagle: the first message
        of a burst goes at once, the rest share frames).

        Needs a quiet connection: nothing queued, no writer, no frame written to it within
        the quiet period (unless it is cold), and not hot while the hot window is widened.
        Every delivery passes here before it is written or queued, so it also counts the
        connection's streak: whether the worker batches or not (when it starts to, the
        connections whose traffic jumped are hot at once), up to HOT_STREAK (all that is
        ever asked of it, so a hot connection's deliveries write nothing here)."""
        gap = now - client.last_sent
        if gap < self.busy_quiet_s:
            if client.streak < HOT_STREAK:
                client.streak += 1
        else:
            client.streak = 0
        if client.closed or client.outbox.queued_bytes or client.writer is not None:
            return False
        if gap < self.quiet_s and (client.rate > self.cold_max
                                   or client.received > self.cold_max
                                   or client.streak >= HOT_STREAK):
            return False
        return not (client.rate >= self.hot_min or client.received >= self.hot_min
                    or client.streak >= self.hot_streak)
