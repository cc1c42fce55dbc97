"""A multi-node oddsfeed deployment on one machine, without containers: each fan-out node
(`oddsfeed serve`) in its own network namespace with its own address on a private bridge,
a 3-primary Valkey cluster and an ingester (simulator) on the bridge's host address, and
HAProxy (deploy/haproxy/haproxy.cfg) on loopback in front of the nodes.

Every address is private to the bridge this module creates; nothing is sent anywhere but
there and loopback. :meth:`Topology.close` kills what it started (by process group id) and
deletes the namespaces and the bridge, whatever state the test left them in.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from oddsfeed.embedded import EmbeddedCluster, free_port

from .lifecycle import StartedInWith

HAPROXY_CFG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy" / "haproxy.cfg"
WS_PORT = 8765
HTTP_PORT = 8080
SECRET = "netns-topology-secret-0123456789abcdef"  # >= 32 bytes
# Behind a balancer every client has the balancer's address: the per-address connect
# limit would throttle a failover's reconnects, so the balancer is where that limit lives.
NODE_ENV = {
    "ODDSFEED_REDIS__CLUSTER": "true",
    "ODDSFEED_AUTH__ANONYMOUS_READ": "true",
    "ODDSFEED_AUTH__HS256_SECRET": SECRET,
    "ODDSFEED_FANOUT__IP_CONNECT_PER_S": "100000",
    "ODDSFEED_LOG__FORMAT": "json",
}


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be created here (not root, or no CAP_NET_ADMIN)."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; raise with its stderr if it fails and ``check`` is set."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False,
                          timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def _free_subnet() -> str:
    """A 10.213.X.0/24 prefix (``10.213.X``) no interface of this machine uses."""
    used = ip("-4", "-o", "addr").stdout + ip("-4", "route").stdout
    for i in range(256):
        x = (os.getpid() + i) % 200 + 20
        if f"10.213.{x}." not in used:
            return f"10.213.{x}"
    raise RuntimeError("no free 10.213.X.0/24 subnet")


def haproxy_config(ws_port: int, http_port: int, stats_socket: Path,
                   servers: list[tuple[str, str]]) -> str:
    """deploy/haproxy/haproxy.cfg bound to loopback ports, its servers replaced by
    ``servers`` ((name, address) pairs) and its stats socket at ``stats_socket``."""
    text = HAPROXY_CFG.read_text()
    text = re.sub(r"(?ms)^resolvers docker\n.*?\n\n", "", text)
    text = re.sub(r"(?m)^\s+server .*\n", "", text)
    text = text.replace("bind :8765", f"bind 127.0.0.1:{ws_port}")
    text = text.replace("bind :8080", f"bind 127.0.0.1:{http_port}")
    text = text.replace("bind :8404", f"bind 127.0.0.1:{free_port()}")
    text = text.replace("/tmp/haproxy.sock", str(stats_socket))
    ws = "".join(f"    server {n} {a}:{WS_PORT} check port {HTTP_PORT}\n" for n, a in servers)
    http = "".join(f"    server {n} {a}:{HTTP_PORT} check\n" for n, a in servers)
    text = text.replace("backend fanout_ws\n    balance leastconn\n    option httpchk GET /readyz\n",
                        "backend fanout_ws\n    balance leastconn\n    option httpchk GET /readyz\n"
                        + ws)
    return text.replace("backend fanout_http\n    balance roundrobin\n"
                        "    option httpchk GET /readyz\n",
                        "backend fanout_http\n    balance roundrobin\n"
                        "    option httpchk GET /readyz\n" + http)


def haproxy_command(sock: Path, command: str) -> str:
    """One command on HAProxy's stats socket; its reply."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(sock))
        s.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


@dataclass
class Node:
    """One fan-out node: its namespace, its address, its process (None when stopped)."""

    name: str
    netns: str
    address: str
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def readyz(self) -> str:
        return f"http://{self.address}:{HTTP_PORT}/readyz"


@dataclass
class Topology(StartedInWith):
    """``n_nodes`` fan-out nodes in namespaces, a cluster, an ingester and HAProxy.

    Use as a context manager; ``ws_url``/``http_url`` are HAProxy's loopback addresses.
    """

    n_nodes: int
    workdir: Path
    ingest_rate: float = 50.0  # 0: no ingester (the caller writes to the store itself)
    events: int = 4
    node_env: dict[str, str] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    cluster: EmbeddedCluster | None = None
    ingester: subprocess.Popen[bytes] | None = None
    haproxy: subprocess.Popen[bytes] | None = None
    ws_port: int = 0
    http_port: int = 0
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _logs: list[IO[bytes]] = field(default_factory=list)
    _netns: list[str] = field(default_factory=list)
    _bridge: str = ""
    _host: str = ""

    # ---------------------------------------------------------------- life cycle

    def start(self) -> None:
        """Network, store, nodes (ready), ingester, balancer."""
        self._network()
        self.cluster = EmbeddedCluster(n_primaries=3, host=self._host).start()
        for node in self.nodes:
            self.start_node(node)
        if self.ingest_rate:
            self.ingester = self._spawn(
                "ingest", None,
                ["ingest", "simulator", "--redis-url", self.store_url, "--rate",
                 str(self.ingest_rate), "--events", str(self.events)])
        self._start_haproxy()
        for node in self.nodes:
            self.wait_ready(node)
        self.wait_balanced({n.name for n in self.nodes})

    def close(self) -> None:
        """Stop every process started here, then delete the namespaces and the bridge."""
        for proc in reversed(self._procs):
            _kill_group(proc)
        self._procs.clear()
        if self.cluster is not None:
            self.cluster.stop()
        for ns in self._netns:
            ip("netns", "del", ns, check=False)
        self._netns.clear()
        if self._bridge:
            ip("link", "del", self._bridge, check=False)
            self._bridge = ""
        for log in self._logs:
            log.close()
        self._logs.clear()

    def _network(self) -> None:
        tag = f"{os.getpid() % 100000}"
        self._probe(tag)
        prefix = _free_subnet()
        self._host = f"{prefix}.1"
        self._bridge = f"ofbr{tag}"
        ip("link", "add", self._bridge, "type", "bridge")
        ip("addr", "add", f"{self._host}/24", "dev", self._bridge)
        ip("link", "set", self._bridge, "up")
        for i in range(1, self.n_nodes + 1):
            ns = f"of{tag}n{i}"
            ip("netns", "add", ns)
            self._netns.append(ns)
            outside = f"ofv{tag}n{i}"
            ip("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("link", "set", outside, "master", self._bridge, "up")
            address = f"{prefix}.{10 + i}"
            ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")
            self.nodes.append(Node(f"fanout-{i}", ns, address))

    @staticmethod
    def _probe(tag: str) -> None:
        """Raise NetnsUnavailable unless a namespace, a bridge and a veth pair can be made."""
        steps = [("netns", "add", f"of{tag}p"), ("link", "add", f"ofb{tag}p", "type", "bridge"),
                 ("link", "add", f"ofv{tag}p", "type", "veth", "peer", "name", f"ofw{tag}p")]
        try:
            for step in steps:
                done = ip(*step, check=False)
                if done.returncode != 0:
                    raise NetnsUnavailable(f"`ip {' '.join(step[:3])}` is not permitted here: "
                                           f"{done.stderr.strip()}")
        finally:
            ip("netns", "del", f"of{tag}p", check=False)
            ip("link", "del", f"ofb{tag}p", check=False)
            ip("link", "del", f"ofv{tag}p", check=False)

    # ---------------------------------------------------------------- processes

    @property
    def store_url(self) -> str:
        assert self.cluster is not None
        return self.cluster.url

    def _spawn(self, name: str, netns: str | None, args: list[str]) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ODDSFEED_")}
        env.update(NODE_ENV)
        env.update(self.node_env)
        argv = [sys.executable, "-m", "oddsfeed", *args]
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        log = (self.workdir / f"{name}.log").open("ab")
        self._logs.append(log)
        # Its own process group: a node is its parent and its worker process, and
        # "the node dies" means both do.
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self._procs.append(proc)
        return proc

    def start_node(self, node: Node) -> None:
        """Start ``node``'s `oddsfeed serve` (one worker) in its namespace."""
        node.starts += 1
        node.proc = self._spawn(f"{node.name}.{node.starts}", node.netns, [
            "serve", "--host", node.address, "--ws-port", str(WS_PORT),
            "--http-port", str(HTTP_PORT), "--redis-url", self.store_url, "--workers", "1"])

    def stop_node(self, node: Node, sig: signal.Signals, timeout: float = 15.0) -> int:
        """Send ``sig`` (to the node's parent for SIGTERM, to its whole group otherwise)
        and return its exit code."""
        assert node.proc is not None
        if sig == signal.SIGTERM:
            node.proc.send_signal(sig)
        else:
            os.killpg(node.proc.pid, sig)
        code = node.proc.wait(timeout)
        _kill_group(node.proc)  # a worker left behind by a parent that died first
        node.proc = None
        return code

    def wait_ready(self, node: Node, timeout: float = 30.0) -> None:
        """Until ``node`` answers 200 on /readyz."""
        deadline = time.monotonic() + timeout
        while True:
            assert node.proc is not None
            if node.proc.poll() is not None:
                raise AssertionError(f"{node.name} exited with {node.proc.returncode}:\n"
                                     + self.log_tail(f"{node.name}.{node.starts}"))
            with contextlib.suppress(OSError), urllib.request.urlopen(node.readyz,
                                                                      timeout=1) as response:
                if response.status == 200:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"{node.name} not ready within {timeout} s")
            time.sleep(0.05)

    def _start_haproxy(self) -> None:
        self.ws_port, self.http_port = free_port(), free_port()
        sock = self.workdir / "haproxy.sock"
        cfg = self.workdir / "haproxy.cfg"
        cfg.write_text(haproxy_config(self.ws_port, self.http_port, sock,
                                      [(n.name, n.address) for n in self.nodes]))
        log = (self.workdir / "haproxy.log").open("ab")
        self._logs.append(log)
        self.haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)],
                                        stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self._procs.append(self.haproxy)

    def balanced(self) -> set[str]:
        """The fan-out nodes HAProxy's WebSocket backend holds UP now."""
        sock = self.workdir / "haproxy.sock"
        if not sock.exists():
            return set()
        try:
            state = haproxy_command(sock, "show servers state fanout_ws")
        except OSError:
            return set()
        up = set()
        for line in state.splitlines()[2:]:
            cols = line.split()
            if len(cols) > 5 and cols[5] == "2":  # srv_op_state 2: running
                up.add(cols[3])
        return up

    def wait_balanced(self, names: set[str], timeout: float = 20.0) -> None:
        """Until HAProxy's UP set is exactly ``names``."""
        deadline = time.monotonic() + timeout
        while self.balanced() != names:
            assert self.haproxy is not None
            if self.haproxy.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"haproxy up: {self.balanced()}, wanted {names}\n"
                                     + self.log_tail("haproxy"))
            time.sleep(0.05)

    def connections(self, node: Node) -> int:
        """Established WebSocket connections to ``node`` (counted by ss in its namespace)."""
        out = subprocess.run(
            ["ip", "netns", "exec", node.netns, "ss", "-Htn", "state", "established",
             f"( sport = :{WS_PORT} )"], capture_output=True, text=True, check=True,
            timeout=10).stdout
        return len([line for line in out.splitlines() if line.strip()])

    def log_tail(self, name: str, size: int = 3000) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-size:] if path.exists() else ""


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM ``proc``'s process group, SIGKILL it after 5 s; reap ``proc``."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; its group may still hold a worker.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, 0)
            os.killpg(proc.pid, signal.SIGKILL)
        return
