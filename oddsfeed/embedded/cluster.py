"""N embedded valkey-server nodes joined into one cluster with every slot covered."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator, Sequence
from typing import Any, Self

import redis

from oddsfeed.freeport import LOOPBACK

from .process import LOG_TAIL_BYTES, EmbeddedServerError, Launcher, find_cli_binary
from .server import EmbeddedValkey

CLUSTER_SLOTS = 16384


class EmbeddedCluster(Launcher):
    """N cluster-enabled valkey-server nodes on loopback (or ``host``), joined into one
    cluster with every slot covered and no replicas.

    Call ``start()`` (or use ``with``), read ``url``/``urls``, call ``stop()``.
    """

    def __init__(
        self,
        *,
        n_primaries: int = 3,
        start_timeout_s: float = 60.0,
        extra_args: Sequence[str] = (),
        host: str = LOOPBACK,
    ) -> None:
        if n_primaries < 1:
            raise ValueError("n_primaries must be at least 1")
        self._n = n_primaries
        self._start_timeout_s = start_timeout_s
        self._extra_args = list(extra_args)
        # Every node binds and announces this address: clients must be able to reach it.
        self._host = host
        self.nodes: list[EmbeddedValkey] = []

    @property
    def url(self) -> str:
        """The first node's ``redis://`` url (a cluster client discovers the rest)."""
        if not self.nodes:
            raise EmbeddedServerError("embedded cluster is not started")
        return self.nodes[0].url

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def pids(self) -> list[int]:
        return [node.pid for node in self.nodes]

    def start(self) -> Self:
        """Start every node, join them, and return once every node reports
        ``cluster_state:ok``. Raises EmbeddedServerError (stopping what it started)."""
        if self.nodes:
            raise EmbeddedServerError("embedded cluster is already started")
        deadline = time.monotonic() + self._start_timeout_s
        try:
            for _ in range(self._n):
                node = EmbeddedValkey(
                    cluster_enabled=True, extra_args=self._extra_args, host=self._host
                )
                self.nodes.append(node)
                node.start()
            if self._n >= 3:
                self._create_with_cli(deadline)
            else:
                self._create_by_hand()
            self._wait_ok(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every node. Safe to call more than once."""
        for node in self.nodes:
            node.stop()
        self.nodes = []

    def _started(self) -> bool:
        return bool(self.nodes)

    def _create_with_cli(self, deadline: float) -> None:
        cli = find_cli_binary()
        args = [str(cli), "--cluster", "create", *(n.address for n in self.nodes)]
        args += ["--cluster-replicas", "0", "--cluster-yes"]
        try:
            done = subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=max(1.0, deadline - time.monotonic()),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise EmbeddedServerError("valkey-cli --cluster create timed out") from exc
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode("utf-8", "replace")[-LOG_TAIL_BYTES:]
            raise EmbeddedServerError(
                f"valkey-cli --cluster create failed with code {done.returncode}:\n{output}"
            )

    def _create_by_hand(self) -> None:
        # valkey-cli refuses fewer than 3 primaries; split the slots ourselves.
        share = CLUSTER_SLOTS // self._n
        for i, node in enumerate(self.nodes):
            first = i * share
            last = CLUSTER_SLOTS - 1 if i == self._n - 1 else first + share - 1
            with contextlib.closing(node.client()) as client:
                _command(client, "CLUSTER", "ADDSLOTSRANGE", first, last)
                for other in self.nodes[i + 1 :]:
                    _command(client, "CLUSTER", "MEET", other.host, other.port, other.cluster_port)

    def _wait_ok(self, deadline: float) -> None:
        pending = list(self.nodes)
        last_info = ""
        while pending:
            node = pending[0]
            with contextlib.closing(node.client()) as client:
                try:
                    info = _command(client, "CLUSTER", "INFO")
                except redis.exceptions.RedisError as exc:
                    info = f"error: {exc}"
            last_info = info.decode() if isinstance(info, bytes) else str(info)
            fields = dict(_info_lines(last_info))
            if (
                fields.get("cluster_state") == "ok"
                and fields.get("cluster_slots_assigned") == str(CLUSTER_SLOTS)
                and fields.get("cluster_known_nodes") == str(self._n)
            ):
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"cluster node {node.address} not ok within {self._start_timeout_s}s; "
                    f"last CLUSTER INFO:\n{last_info}"
                )
            time.sleep(0.05)


def _command(client: redis.Redis, *args: str | int) -> Any:
    """Send one raw command (redis-py leaves execute_command untyped)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _info_lines(text: str) -> Iterator[tuple[str, str]]:
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep:
            yield key, value


def start_cluster(
    n_primaries: int = 3, *, start_timeout_s: float = 60.0, extra_args: Sequence[str] = ()
) -> EmbeddedCluster:
    """Start and return an EmbeddedCluster of ``n_primaries`` nodes; the caller stops it."""
    cluster = EmbeddedCluster(
        n_primaries=n_primaries, start_timeout_s=start_timeout_s, extra_args=extra_args
    )
    return cluster.start()
