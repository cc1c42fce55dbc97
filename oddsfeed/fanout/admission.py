"""Who may open a WebSocket connection: the connect rate per peer address and the caps on
open connections per address and per token subject. Policy only: no sockets, time comes
in as ``now``; the server answers the refusals (HTTP 429, or 1013 after a raced handshake).
"""

from __future__ import annotations

from ..auth import ANONYMOUS, Principal


class TokenBucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst`` saved up."""

    __slots__ = ("rate", "burst", "tokens", "at")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


# Past this many addresses the connect-rate buckets are forgotten wholesale (bounded memory).
MAX_BUCKETS = 100_000


class Admission:
    """The connect rate per address (``connect_per_s``) and the open-connection caps per
    address and per token subject (0: no cap; anonymous readers share no subject).

    Call :meth:`refusal` at the handshake, :meth:`opened` once the connection is served
    (it re-checks the caps: handshakes in flight together all passed :meth:`refusal`) and
    :meth:`closed` when it ends."""

    def __init__(self, *, connect_per_s: float, per_ip: int, per_subject: int) -> None:
        self.connect_per_s = connect_per_s
        self.per_ip = per_ip
        self.per_subject = per_subject
        self._buckets: dict[str, TokenBucket] = {}
        # open connections; an entry goes when it reaches 0
        self._ips: dict[str, int] = {}
        self._subjects: dict[str, int] = {}

    def rate_ok(self, ip: str, now: float) -> bool:
        """Take one connect token of ``ip``; False: it connects too fast (HTTP 429)."""
        bucket = self._buckets.get(ip)
        if bucket is None:
            if len(self._buckets) > MAX_BUCKETS:
                self._buckets.clear()
            rate = self.connect_per_s
            bucket = self._buckets[ip] = TokenBucket(rate, max(1.0, rate), now)
        return bucket.take(now)

    def refusal(self, ip: str, principal: Principal) -> str:
        """The cap one more connection would pass: ``"ip"``, ``"subject"``, or ``""``."""
        if self.per_ip and self._ips.get(ip, 0) >= self.per_ip:
            return "ip"
        if (self.per_subject and principal is not ANONYMOUS
                and self._subjects.get(principal.sub, 0) >= self.per_subject):
            return "subject"
        return ""

    def opened(self, ip: str, principal: Principal) -> str:
        """Count a connection that is about to be served, unless a cap refuses it (returned
        as by :meth:`refusal`; then nothing is counted and the caller closes it with 1013)."""
        refused = self.refusal(ip, principal)
        if not refused:
            self._add(self._ips, ip, 1)
            if principal is not ANONYMOUS:
                self._add(self._subjects, principal.sub, 1)
        return refused

    def closed(self, ip: str, principal: Principal) -> None:
        """A connection counted by :meth:`opened` ended."""
        self._add(self._ips, ip, -1)
        if principal is not ANONYMOUS:
            self._add(self._subjects, principal.sub, -1)

    @staticmethod
    def _add(counts: dict[str, int], key: str, n: int) -> None:
        left = counts.get(key, 0) + n
        if left > 0:
            counts[key] = left
        else:
            counts.pop(key, None)
