"""Every close code the fan-out sends, with its reason (protocol.md section 2).

A close is named once here and sent by name, so that a client's handling of a code can be
traced to the one place that decides it. Codes 4000-4999 are the application's own
(RFC 6455 section 7.4.2); the others are the standard codes used in their standard sense.
"""

from __future__ import annotations

from typing import NamedTuple


class Close(NamedTuple):
    """A close frame's code and reason."""

    code: int
    reason: str


# Sent by websockets itself when the server shuts down (FanoutServer.close).
GOING_AWAY = Close(1001, "going away")
# The client sent past its message rate limit too many times.
RATE_LIMITED = Close(1008, "message rate limit exceeded")
# A peer silent for ping_interval_s + ping_timeout_s.
KEEPALIVE_TIMEOUT = Close(1011, "keepalive ping timeout")
# The connection's handler failed (a bug): the client reconnects and resumes.
INTERNAL_ERROR = Close(1011, "internal error")
# The worker holds fanout.max_connections already.
OVERLOADED = Close(1013, "overloaded")
# A handshake raced past the per-address or per-subject cap.
TOO_MANY_CONNECTIONS = Close(1013, "too many connections")
# The connection's token expired: the client reconnects with a fresh one.
TOKEN_EXPIRED = Close(4001, "token expired")
# The client did not read fast enough: it reconnects and resumes with ``from``.
SLOW_CONSUMER = Close(4008, "slow consumer")
