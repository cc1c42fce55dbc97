"""The one parser of ``Authorization: Bearer <token>`` headers (HTTP API, WebSocket
handshake, ingest push endpoint). Pure: no I/O, no verification."""

from __future__ import annotations

__all__ = ["SCHEME", "bearer_token"]

SCHEME = "bearer "  # compared case-insensitively (RFC 9110: auth schemes are)


def bearer_token(header: str) -> str | None:
    """The token of an Authorization header value, or None when the header does not use
    the Bearer scheme; the token may be empty (``"Bearer "``), which verification refuses."""
    if header[:len(SCHEME)].lower() != SCHEME:  # the scheme only, not the whole token
        return None
    return header[len(SCHEME):].strip()
