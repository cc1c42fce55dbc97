"""The packing connection sends the same RESP bytes as redis-py's own packer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio.connection import Connection

from oddsfeed.core.book import Created
from oddsfeed.core.model import MarketUpdate
from oddsfeed.store import Store
from oddsfeed.store.packing import PackingConnection

CASES: list[tuple[Any, ...]] = [
    ("EVALSHA", "a" * 40, 3, "of:{m:m1}", "om:{m:m1}", b"\x81\xa1a\x01", -7, 0, "",
     2**53, "caf\u00e9"),
    ("GET", "of:{m:x}"),
    ("MGET", *(f"of:{{m:m{i}}}" for i in range(50))),
    ("SET", "k", b"\x00\xff\r\n"),
    ("CONFIG GET", "maxmemory"),  # a two-word name: redis-py's path splits it
    ("ZADD", "z", 1.5, "m"),  # a float: redis-py's path formats it
    ("SET", "k", memoryview(b"abc")),
]


@pytest.mark.parametrize("args", CASES)
def test_same_bytes_as_redis_py(args: tuple[Any, ...]) -> None:
    """Every command packs to the bytes redis-py's own connection packs it to."""
    ours = b"".join(bytes(p) for p in PackingConnection().pack_command(*args))
    theirs = b"".join(bytes(p) for p in Connection().pack_command(*args))
    assert ours == theirs


async def test_store_uses_it_on_a_tcp_server(valkey_url: str) -> None:
    """A Store on a redis:// URL packs with it, and a round trip of a plain command and
    of a fallback one (a float score) both answer."""
    store = await Store.connect(valkey_url)
    try:
        client: Any = store.client
        assert client.connection_pool.connection_class is PackingConnection
        await client.set("pk:{x}", "caf\u00e9")
        assert await client.get("pk:{x}") == "caf\u00e9".encode()
        await client.zadd("pk:{z}", {"m": 1.5})
        assert await client.zscore("pk:{z}", "m") == 1.5
        await client.delete("pk:{x}", "pk:{z}")
    finally:
        await store.close()


async def test_cluster_nodes_use_it(valkey_cluster: Any) -> None:
    """A Store on a redis:// cluster packs with it on every node, and batched applies, reads
    and a fallback command (a float score) answer on each node."""
    store = await Store.connect(valkey_cluster.url, cluster=True)
    try:
        client: Any = store.client
        nodes = client.get_nodes()
        assert len(nodes) >= 3
        assert all(node.connection_class is PackingConnection for node in nodes)
        await client.flushall(target_nodes="primaries")
        ids = [f"pk{i}" for i in range(24)]  # spread over the three primaries
        created = await store.apply_many([MarketUpdate(
            market=mid, fields={"event": "e", "sport": "s", "name": mid},
            selections={"h": {"name": "H", "price": 20000}}, create=True) for mid in ids])
        assert all(isinstance(o, Created) for o in created)
        changed: list[Any] = await asyncio.gather(*(store.apply(MarketUpdate(
            market=mid, selections={"h": {"price": 30000}}), short=True) for mid in ids))
        assert [(o.kind, o.market.version) for o in changed] == [("changed", 2)] * len(ids)
        read = await store.get_many(ids)
        assert {m.selections["h"].price for m in read.values() if m} == {30000}
        used = {c for node in nodes for c in node._connections}
        assert used
        assert all(type(c) is PackingConnection for c in used)
        await client.zadd("pk:{z}", {"m": 1.5})
        assert await client.zscore("pk:{z}", "m") == 1.5
    finally:
        await store.close()
