"""A redis-py connection that packs plain commands with one ``hiredis.pack_command`` call.

redis-py (with hiredis) still encodes every argument in a Python generator before calling
hiredis, which for the apply script's 17-argument ``EVALSHA`` cost about a fifth of an
apply's client CPU. Commands whose arguments are all ``bytes``, ``str`` or ``int`` (not
``bool``), with a one-word command name, go to hiredis as they are: the same RESP bytes
(str as UTF-8, int in decimal). Anything else (floats, memoryviews, ``"CONFIG GET"``-style
names, non-UTF-8 encodings) takes redis-py's own path.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio.connection import Connection

__all__ = ["PackingConnection", "pool_options"]

_PLAIN = frozenset((bytes, str, int))


class PackingConnection(Connection):
    """``redis.asyncio.Connection`` with the single-call packer for plain commands."""

    def pack_command(self, *args: Any) -> list[bytes]:
        head = args[0] if args else None
        if (type(head) is str and " " not in head and self.encoder.encoding == "utf-8"
                and all(type(a) in _PLAIN for a in args)):
            return [hiredis.pack_command(args)]
        return super().pack_command(*args)


def pool_options(url: str) -> dict[str, Any]:
    """Extra ``ConnectionPool.from_url`` options for ``url``: the packing connection for a
    plain TCP server (``redis://``); TLS and unix sockets keep redis-py's own classes."""
    return {"connection_class": PackingConnection} if url.startswith("redis://") else {}
