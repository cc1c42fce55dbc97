"""The multi-node deployment without containers (tests/deploy/netns.py): two fan-out nodes
in their own network namespaces on a 3-primary Valkey cluster, HAProxy in front. Clients
through the balancer lose their node to SIGTERM (1001) and then to kill -9, reconnect
through the balancer and resume from their positions with no gap."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from oddsfeed.model import Market
from tests.deploy.netns import NetnsUnavailable, Topology
from tests.deploy.resuming import ResumingClient
from tests.fanout.mirror import wait_until
from tests.sysdeps import debian_binary

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(150)]

EVENTS = [f"ev1-{i}" for i in range(1, 9)]
N_CLIENTS = 24


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    """Two nodes, the cluster, an ingester and HAProxy; all of it gone afterwards."""
    debian_binary("/usr/sbin/haproxy", "haproxy")
    debian_binary("/usr/bin/ss", "iproute2")
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


async def lose_node(topo: Topology, clients: list[ResumingClient], index: int,
                    sig: signal.Signals) -> tuple[list[int | None], float, int]:
    """Stop node ``index`` with ``sig``; return the close code each of its clients saw,
    the time until the last of them was subscribed again through the balancer, and the
    node's exit code."""
    node = topo.nodes[index]
    held = await asyncio.to_thread(topo.connections, node)
    assert held > 0, f"{node.name} holds no client"
    before = {id(c): len(c.closes) for c in clients}
    deltas = [c.deltas for c in clients]
    t0 = time.monotonic()
    code = await asyncio.to_thread(topo.stop_node, node, sig)
    await wait_until(lambda: sum(len(c.closes) > before[id(c)] for c in clients) >= held,
                     10, f"{held} clients of {node.name} closed")
    victims = [c for c in clients if len(c.closes) > before[id(c)]]
    assert len(victims) == held
    await wait_until(lambda: all(c.resumed_after(t0) for c in victims), 20,
                     "every client of the lost node resumed")
    resumed = max(c.resumed_after(t0) or 0.0 for c in victims) - t0
    codes = [c.closes[before[id(c)]][1] for c in victims]
    # Everyone keeps receiving live deltas afterwards.
    await wait_until(lambda: all(c.deltas > d + 5 for c, d in zip(clients, deltas)), 20,
                     "deltas after the failover")
    return codes, resumed, code


async def store_state(topo: Topology, ids: set[str]) -> dict[str, Market | None]:
    """Each market of ``ids`` as GET /v1/markets/{id} through the balancer returns it."""
    out: dict[str, Market | None] = {}
    async with aiohttp.ClientSession() as http:
        for mid in sorted(ids):
            async with http.get(f"{topo.http_url}/v1/markets/{mid}") as response:
                assert response.status in (200, 404), await response.text()
                out[mid] = (Market.from_wire(await response.json())
                            if response.status == 200 else None)
    return out


async def test_failover_through_the_balancer(topology: Topology) -> None:
    """Through HAProxy, clients get snapshots and deltas; SIGTERM a node -> its clients get
    1001 and resume on the other with no gap; kill -9 that one -> all resume on the
    restarted first; at the end every client holds exactly the store's markets."""
    topo = topology
    clients = [ResumingClient(topo.ws_url, EVENTS) for _ in range(N_CLIENTS)]
    for c in clients:
        c.start()
    try:
        await wait_until(lambda: all(c.connected and c.book.markets and c.deltas >= 5
                                     for c in clients), 20, "clients subscribed with deltas")
        counts = [await asyncio.to_thread(topo.connections, n) for n in topo.nodes]
        assert sum(counts) == N_CLIENTS, counts
        assert min(counts) > 0, counts

        codes, term_s, exit_code = await lose_node(topo, clients, 0, signal.SIGTERM)
        assert exit_code == 0
        assert set(codes) == {1001}

        topo.start_node(topo.nodes[0])
        await asyncio.to_thread(topo.wait_ready, topo.nodes[0])
        await asyncio.to_thread(topo.wait_balanced, {n.name for n in topo.nodes})

        killed, kill_s, exit_code = await lose_node(topo, clients, 1, signal.SIGKILL)
        assert exit_code == -signal.SIGKILL
        assert len(killed) == N_CLIENTS  # every client had moved to the survivor
        assert set(killed) == {1006}  # no close frame from a killed node
        print(f"\nfailover, {len(codes)} clients: SIGTERM -> all resumed in {term_s:.3f} s; "
              f"{len(killed)} clients: kill -9 -> all resumed in {kill_s:.3f} s")

        assert topo.ingester is not None
        topo.ingester.send_signal(signal.SIGTERM)
        await asyncio.to_thread(topo.ingester.wait, 10)
        ids = set().union(*(c.book.markets for c in clients))
        assert all(set(c.book.markets) == ids for c in clients)
        want = await store_state(topo, ids)
        await wait_until(lambda: all(c.book.markets.get(m) == w for c in clients
                                     for m, w in want.items()), 10,
                         "every client holding the store's markets")
        for c in clients:
            c.check_clean()
    finally:
        for c in clients:
            await c.stop()
