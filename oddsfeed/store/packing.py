"""A redis-py connection that packs plain commands with one ``hiredis.pack_command`` call.

redis-py (with hiredis) still encodes every argument in a Python generator before calling
hiredis, which for the apply script's 17-argument ``EVALSHA`` cost about a fifth of an
apply's client CPU. Commands whose arguments are all ``bytes``, ``str`` or ``int`` (not
``bool``), with a one-word command name, go to hiredis as they are: the same RESP bytes
(str as UTF-8, int in decimal). Anything else (floats, memoryviews, ``"CONFIG GET"``-style
names, non-UTF-8 encodings) takes redis-py's own path. A cluster's node connections use it
too (:func:`cluster_packing`).
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection

__all__ = ["PackingConnection", "cluster_packing", "pool_options"]

_PLAIN = frozenset((bytes, str, int))


class PackingConnection(Connection):
    """``redis.asyncio.Connection`` with the single-call packer for plain commands."""

    def pack_command(self, *args: Any) -> list[bytes]:
        head = args[0] if args else None
        if (type(head) is str and " " not in head and self.encoder.encoding == "utf-8"
                and _PLAIN.issuperset(map(type, args))):
            return [hiredis.pack_command(args)]
        return super().pack_command(*args)


def pool_options(url: str) -> dict[str, Any]:
    """Extra ``ConnectionPool.from_url`` options for ``url``: the packing connection for a
    plain TCP server (``redis://``); TLS and unix sockets keep redis-py's own classes."""
    return {"connection_class": PackingConnection} if url.startswith("redis://") else {}


def cluster_packing(client: RedisCluster, url: str) -> None:
    """Give the node connections of ``client`` (a cluster on ``url``, not yet initialised)
    the packing connection, as :func:`pool_options` does for a single server.

    RedisCluster takes no connection class: it hands one dict of connection options
    (``connection_class`` included) to every node it creates, and the startup nodes were
    made from it already; both are set here. TLS keeps redis-py's own class.
    """
    if not url.startswith("redis://"):
        return
    client.nodes_manager.connection_kwargs["connection_class"] = PackingConnection
    for node in client.nodes_manager.startup_nodes.values():
        node.connection_class = PackingConnection
