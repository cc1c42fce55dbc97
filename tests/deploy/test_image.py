"""The container image in a Docker topology (tests/deploy/containers.py), run by
`make image-test` (deploy/image-test.sh builds the images and sets ODDSFEED_IMAGE): clients
through HAProxy resume with no gap when a node is stopped (1001) or killed, and resync
when the store restarts empty."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import pytest

from tests.deploy.containers import FANOUTS, DockerTopology
from tests.deploy.resuming import converged, failover, resuming_clients
from tests.fanout.mirror import wait_until

IMAGE = os.environ.get("ODDSFEED_IMAGE", "")
HAPROXY_IMAGE = os.environ.get("ODDSFEED_HAPROXY_IMAGE", "")
pytestmark = [
    pytest.mark.skipif(not (IMAGE and HAPROXY_IMAGE),
                       reason="needs built images: run `make image-test`"),
    pytest.mark.timeout(300),
]

EVENTS = [f"ev1-{i}" for i in range(1, 9)]
N_CLIENTS = 20


@pytest.fixture
def topology() -> Iterator[DockerTopology]:
    """Valkey, ingester, two fan-out nodes and HAProxy, removed afterwards."""
    with DockerTopology(IMAGE, HAPROXY_IMAGE) as topo:
        yield topo


async def test_image_topology_failover_and_store_restart(topology: DockerTopology) -> None:
    """Through the HAProxy container, clients get snapshots and deltas; `docker stop` a node
    -> its clients get 1001 and resume on the other; `docker kill` that one -> all resume on
    the restarted first; the store restarted empty -> every client resyncs and ends equal
    to the store."""
    topo = topology
    report = [f"image {IMAGE}: {topo.image_size_mb(IMAGE):.0f} MB; "
              f"haproxy image: {topo.image_size_mb(HAPROXY_IMAGE):.0f} MB"]
    async with resuming_clients(topo.ws_url, EVENTS, N_CLIENTS, 30) as clients:
        counts = [await asyncio.to_thread(topo.connections, f) for f in FANOUTS]
        assert sum(counts) == N_CLIENTS, counts
        assert min(counts) > 0, counts

        codes, stop_s, _ = await failover(clients, counts[0], lambda: topo.stop("fanout-1"))
        assert set(codes) == {1001}
        assert topo.exit_code("fanout-1") == 0
        report.append(f"docker stop: {len(codes)} clients resumed in {stop_s:.3f} s")

        await asyncio.to_thread(topo.start_again, "fanout-1")
        await asyncio.to_thread(topo.wait_healthy, "fanout-1")
        await asyncio.to_thread(topo.wait_balanced, set(FANOUTS))

        held = await asyncio.to_thread(topo.connections, "fanout-2")
        assert held == N_CLIENTS
        codes, kill_s, _ = await failover(clients, held, lambda: topo.kill("fanout-2"))
        assert set(codes) == {1006}
        report.append(f"docker kill: {len(codes)} clients resumed in {kill_s:.3f} s")
        await asyncio.to_thread(topo.start_again, "fanout-2")
        await asyncio.to_thread(topo.wait_healthy, "fanout-2")

        for c in clients:
            c.check_clean()
        # The store restarts empty: every client must drop (gone) or replace (snapshot, new
        # epoch) every market it held; the simulator creates markets again only as new
        # events start, and every client must end up holding exactly those.
        epochs = [{mid: m.epoch for mid, m in c.book.markets.items()} for c in clients]
        t0 = time.monotonic()
        await asyncio.to_thread(topo.stop, "valkey", 0)
        await asyncio.to_thread(topo.start_again, "valkey")

        def resynced() -> bool:
            return all(m.epoch != old.get(mid) for c, old in zip(clients, epochs)
                       for mid, m in c.book.markets.items())

        await wait_until(resynced, 60, "every client dropping or replacing the lost markets")
        report.append(f"store restart: every client resynced in {time.monotonic() - t0:.3f} s")
        await asyncio.to_thread(topo.wait_balanced, set(FANOUTS))
        await wait_until(lambda: all(c.book.markets for c in clients), 60,
                         "markets created again")
        report.append(f"store restart: markets created again after {time.monotonic() - t0:.3f}"
                      " s (the simulator's next event)")
        await asyncio.to_thread(topo.stop, "ingest")
        await converged(clients, topo.http_url, 30)
        for c in clients:
            assert c.error is None, repr(c.error)
            assert not c.book.anomalies, c.book.anomalies[:5]
        print("\n" + "\n".join(report))
