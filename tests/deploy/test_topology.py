"""The multi-node deployment without containers (tests/deploy/netns.py): two fan-out nodes
in their own network namespaces on a 3-primary Valkey cluster, HAProxy in front. Clients
through the balancer lose their node to SIGTERM (1001) and then to kill -9, reconnect
through the balancer and resume from their positions with no gap."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.netns import NetnsUnavailable, Topology
from tests.deploy.resuming import converged, failover, resuming_clients
from tests.sysdeps import debian_binary

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(150)]

EVENTS = [f"ev1-{i}" for i in range(1, 9)]
N_CLIENTS = 24


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    """Two nodes, the cluster, an ingester and HAProxy; all of it gone afterwards."""
    debian_binary("/usr/sbin/haproxy", "haproxy")
    debian_binary("/bin/ip", "iproute2")
    debian_binary("/bin/ss", "iproute2")
    topo = Topology(n_nodes=2, workdir=tmp_path)
    try:
        topo.start()
    except NetnsUnavailable as exc:
        topo.close()
        pytest.skip(f"network namespaces: {exc}")
    except BaseException:
        topo.close()
        raise
    try:
        yield topo
    finally:
        topo.close()


async def test_failover_through_the_balancer(topology: Topology) -> None:
    """Through HAProxy, clients get snapshots and deltas; SIGTERM a node -> its clients get
    1001 and resume on the other with no gap; kill -9 that one -> all resume on the
    restarted first; at the end every client holds exactly the store's markets."""
    topo = topology
    async with resuming_clients(topo.ws_url, EVENTS, N_CLIENTS, 20) as clients:
        counts = [await asyncio.to_thread(topo.connections, n) for n in topo.nodes]
        assert sum(counts) == N_CLIENTS, counts
        assert min(counts) > 0, counts

        held = await asyncio.to_thread(topo.connections, topo.nodes[0])
        codes, term_s, exit_code = await failover(
            clients, held, lambda: topo.stop_node(topo.nodes[0], signal.SIGTERM))
        assert exit_code == 0
        assert set(codes) == {1001}

        topo.start_node(topo.nodes[0])
        await asyncio.to_thread(topo.wait_ready, topo.nodes[0])
        await asyncio.to_thread(topo.wait_balanced, {n.name for n in topo.nodes})

        held = await asyncio.to_thread(topo.connections, topo.nodes[1])
        killed, kill_s, exit_code = await failover(
            clients, held, lambda: topo.stop_node(topo.nodes[1], signal.SIGKILL))
        assert exit_code == -signal.SIGKILL
        assert len(killed) == N_CLIENTS  # every client had moved to the survivor
        assert set(killed) == {1006}  # no close frame from a killed node
        print(f"\nfailover, {len(codes)} clients: SIGTERM -> all resumed in {term_s:.3f} s; "
              f"{len(killed)} clients: kill -9 -> all resumed in {kill_s:.3f} s")

        assert topo.ingester is not None
        topo.ingester.send_signal(signal.SIGTERM)
        await asyncio.to_thread(topo.ingester.wait, 10)
        await converged(clients, topo.http_url)
        for c in clients:
            c.check_clean()
