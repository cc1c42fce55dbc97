"""RFC 6455 framing of what the core encodes: the fan-out writes complete server frames
(unmasked, unfragmented) straight to sockets, so one frame's bytes serve every subscriber.

The core knows messages and payloads; only this adapter knows they travel in WebSocket
frames.
"""

from __future__ import annotations

from ..core.session import Outbox
from ..core.wire import JSON, Outgoing, batch_payload


def ws_frame(payload: bytes, text: bool) -> bytes:
    """One complete, unmasked, unfragmented WebSocket data frame (RFC 6455 section 5.2)."""
    b0 = 0x81 if text else 0x82
    n = len(payload)
    if n < 126:
        header = bytes((b0, n))
    elif n < 65536:
        header = bytes((b0, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((b0, 127)) + n.to_bytes(8, "big")
    return header + payload


def frame_of(out: Outgoing, encoding: str) -> bytes:
    """``out``'s complete frame for one encoding, built once and written as the same bytes
    to every subscriber (kept in the message's per-encoding frame slot)."""
    frames = out._frames
    frame = frames.get(encoding)
    if frame is None:
        frame = frames[encoding] = ws_frame(out.payload(encoding), encoding == JSON)
    return frame


def frame_of_all(messages: tuple[Outgoing, ...], encoding: str,
                 memo: dict[tuple[Outgoing, ...], bytes]) -> bytes:
    """The frame of ``messages`` (from :meth:`Outbox.take_all`): one message's shared
    frame, or their ``batch``, built once per ``memo`` (one per encoding) for every
    connection that queued the same messages in the same order (a market's subscribers in
    one batching window)."""
    if len(messages) == 1:
        return frame_of(messages[0], encoding)
    frame = memo.get(messages)
    if frame is None:
        frame = memo[messages] = ws_frame(
            batch_payload([m.payload(encoding) for m in messages], encoding),
            encoding == JSON)
    return frame


def next_frame(outbox: Outbox, max_items: int = 512) -> tuple[bytes, int] | None:
    """The next complete frame of ``outbox`` and how many messages it carries: one message
    alone, or several packed into one ``batch``; None when it is empty."""
    single = outbox.take_one()
    if single is not None:  # one message alone: its frame, built once for all subscribers
        return frame_of(single, outbox.encoding), 1
    items = outbox.take(max_items)
    if not items:
        return None
    text = outbox.encoding == JSON
    if len(items) == 1:
        return ws_frame(items[0], text), 1
    return ws_frame(batch_payload(items, outbox.encoding), text), len(items)
