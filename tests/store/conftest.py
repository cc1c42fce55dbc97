"""Store fixtures: the same behaviour suite runs on a single server and on a cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from oddsfeed.embedded import EmbeddedCluster
from oddsfeed.store import Store


@pytest.fixture(params=["single", "cluster"])
async def store(request: pytest.FixtureRequest, valkey_url: str) -> AsyncIterator[Store]:
    """A Store on an emptied single server, or on the emptied 3-primary cluster."""
    if request.param == "single":
        s = await Store.connect(valkey_url)
        await s.client.flushall()
    else:
        cluster: EmbeddedCluster = request.getfixturevalue("valkey_cluster")
        s = await Store.connect(cluster.url, cluster=True)
        await s.client.flushall(target_nodes="primaries")  # type: ignore[call-arg]
    try:
        yield s
    finally:
        await s.close()
