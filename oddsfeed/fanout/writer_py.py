"""The portable ``send_all``: the same contract as the C module oddsfeed/fanout/_send.c,
used where it was not built (no C compiler at install). See :mod:`oddsfeed.fanout.writer`."""

from __future__ import annotations

import os
from collections.abc import Sequence


def send_all(fds: Sequence[int], frame: bytes, /) -> list[tuple[int, int]]:
    """Send ``frame`` to every socket of ``fds`` (non-blocking sockets: nothing waits).

    Returns the sockets that did not take the whole frame: their index in ``fds`` and the
    bytes they took (0 <= sent < len(frame)), or minus the errno of a failed send."""
    if not isinstance(fds, Sequence):
        raise TypeError(f"send_all: fds must be a sequence of ints, not {type(fds).__name__}")
    checked: list[int] = []
    for fd in fds:
        if not isinstance(fd, int):
            raise TypeError(f"send_all: bad file descriptor {fd!r}")
        if fd < 0:
            raise ValueError(f"send_all: bad file descriptor {fd}")
        checked.append(fd)
    short: list[tuple[int, int]] = []
    n = len(frame)
    for i, fd in enumerate(checked):
        # the sockets are non-blocking (asyncio's), and Python ignores SIGPIPE: a gone peer
        # is an EPIPE here, as with the C loop's MSG_NOSIGNAL
        try:
            sent = os.write(fd, frame)
        except OSError as exc:
            short.append((i, -(exc.errno or 0)))
            continue
        if sent != n:
            short.append((i, sent))
    return short


def send_each(fds: Sequence[int], frames: Sequence[bytes], /) -> list[tuple[int, int]]:
    """Send ``frames[i]`` to ``fds[i]`` for every ``i``; returns what :func:`send_all`
    returns (the sockets that did not take their whole frame)."""
    if len(fds) != len(frames):
        raise ValueError(f"send_each: {len(fds)} fds but {len(frames)} frames")
    short: list[tuple[int, int]] = []
    for i, (fd, frame) in enumerate(zip(fds, frames, strict=True)):
        short += [(i, took) for _, took in send_all((fd,), frame)]
    return short
