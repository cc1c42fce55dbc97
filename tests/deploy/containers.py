"""The Docker topology of `make image-test`: on a user-defined network of its own, Valkey
(the image's bundled valkey-server), a simulator ingester, two fan-out nodes and HAProxy
(deploy/haproxy), the balancer published on loopback only. Everything it creates carries a
per-run prefix and is removed by :meth:`DockerTopology.close`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field

from .lifecycle import StartedInWith

SECRET = "image-test-secret-0123456789abcdef0123"  # >= 32 bytes
FANOUTS = ("fanout-1", "fanout-2")
# What deploy/k8s asks of the pods: read-only root filesystem with /tmp in memory, no
# capabilities, no privilege escalation.
HARDENED = ("--read-only", "--tmpfs", "/tmp:size=64m", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges")


def docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    """Run ``docker ARGS`` and return its stdout; raise with its stderr on failure."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, check=False,
                          timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])}...: {done.stderr.strip()[-2000:]}")
    return done.stdout.strip()


@dataclass
class DockerTopology(StartedInWith):
    """Valkey, ingester, two fan-out nodes and HAProxy from ``image`` and ``haproxy_image``."""

    image: str
    haproxy_image: str
    prefix: str = field(default_factory=lambda: f"oftest{os.getpid()}")
    ws_port: int = 0
    http_port: int = 0
    stats_port: int = 0
    _containers: list[str] = field(default_factory=list)
    _network: str = ""

    def name(self, service: str) -> str:
        return f"{self.prefix}-{service}"

    def _run(self, service: str, image: str, *args: str, env: dict[str, str] | None = None,
             options: tuple[str, ...] = ()) -> None:
        argv = ["run", "-d", "--name", self.name(service), "--network", self._network,
                "--network-alias", service]
        for key, value in (env or {}).items():
            argv += ["-e", f"{key}={value}"]
        docker(*argv, *options, image, *args)
        self._containers.append(self.name(service))

    def start(self) -> None:
        docker("network", "create", self.name("net"))
        self._network = self.name("net")
        env = {"ODDSFEED_REDIS__URL": "redis://valkey:6379"}
        self._run("valkey", self.image, "valkey-server", "--bind", "0.0.0.0", "--port", "6379",
                  "--protected-mode", "no", "--save", "", "--appendonly", "no",
                  options=("--health-cmd", "valkey-cli ping", "--health-interval", "1s"))
        self.wait_healthy("valkey")
        self._run("ingest", self.image, "oddsfeed", "ingest", "simulator", "--rate", "50",
                  env=env, options=("--no-healthcheck", *HARDENED))
        for fanout in FANOUTS:
            self._run(fanout, self.image, env={
                **env, "ODDSFEED_AUTH__ANONYMOUS_READ": "true",
                "ODDSFEED_AUTH__HS256_SECRET": SECRET, "ODDSFEED_SERVER__WORKERS": "1",
                "ODDSFEED_FANOUT__IP_CONNECT_PER_S": "100000"},
                # The image's HEALTHCHECK, polled every second instead of every ten.
                options=("--health-interval", "1s", "--stop-timeout", "30", *HARDENED))
        self._run("haproxy", self.haproxy_image, options=(
            "-p", "127.0.0.1::8765", "-p", "127.0.0.1::8080", "-p", "127.0.0.1::8404"))
        self.ws_port = self._published("haproxy", 8765)
        self.http_port = self._published("haproxy", 8080)
        self.stats_port = self._published("haproxy", 8404)
        for fanout in FANOUTS:
            self.wait_healthy(fanout)
        self.wait_balanced(set(FANOUTS))

    def close(self) -> None:
        """Remove every container and the network this topology created."""
        if self._containers:
            docker("rm", "-f", "-v", *self._containers, check=False)
            self._containers.clear()
        if self._network:
            docker("network", "rm", self._network, check=False)
            self._network = ""

    def _published(self, service: str, port: int) -> int:
        out = docker("port", self.name(service), f"{port}/tcp")
        return int(out.splitlines()[0].rsplit(":", 1)[1])

    def health(self, service: str) -> str:
        return docker("inspect", "-f", "{{.State.Health.Status}}", self.name(service),
                      check=False)

    def wait_healthy(self, service: str, timeout: float = 60) -> None:
        """Until the container's HEALTHCHECK reports healthy."""
        deadline = time.monotonic() + timeout
        while (status := self.health(service)) != "healthy":
            if time.monotonic() > deadline:
                raise AssertionError(f"{service}: {status} after {timeout} s:\n"
                                     + self.logs(service))
            time.sleep(0.2)

    def balanced(self) -> set[str]:
        """The fan-out nodes HAProxy's WebSocket backend holds UP now (its CSV stats)."""
        url = f"http://127.0.0.1:{self.stats_port}/stats;csv"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                rows = csv.DictReader(io.StringIO(response.read().decode().lstrip("# ")))
                return {r["svname"] for r in rows
                        if r["pxname"] == "fanout_ws" and r["status"] == "UP"
                        and r["svname"] not in ("FRONTEND", "BACKEND")}
        except OSError:
            return set()

    def wait_balanced(self, names: set[str], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.balanced() != names:
            running = docker("inspect", "-f", "{{.State.Running}}", self.name("haproxy"))
            if running != "true" or time.monotonic() > deadline:
                raise AssertionError(f"haproxy up: {self.balanced()}, wanted {names}\n"
                                     + self.logs("haproxy"))
            time.sleep(0.1)

    def connections(self, service: str) -> int:
        """Established connections to the container's port 8765 (from /proc/net/tcp*)."""
        out = docker("exec", self.name(service), "cat", "/proc/net/tcp", "/proc/net/tcp6")
        return sum(1 for line in out.splitlines()[1:]
                   if len(cols := line.split()) > 3 and cols[1].endswith(":223D")
                   and cols[3] == "01")

    def stop(self, service: str, timeout_s: int = 30) -> None:
        """`docker stop`: SIGTERM, SIGKILL after ``timeout_s``."""
        docker("stop", "-t", str(timeout_s), self.name(service), timeout=timeout_s + 30)

    def kill(self, service: str) -> None:
        docker("kill", "-s", "KILL", self.name(service))

    def start_again(self, service: str) -> None:
        docker("start", self.name(service))

    def exit_code(self, service: str) -> int:
        return int(docker("inspect", "-f", "{{.State.ExitCode}}", self.name(service)))

    def logs(self, service: str, tail: int = 40) -> str:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            done = subprocess.run(["docker", "logs", "--tail", str(tail), self.name(service)],
                                  capture_output=True, text=True, timeout=30, check=False)
            return done.stdout + done.stderr
        return ""

    def image_size_mb(self, image: str) -> float:
        return int(json.loads(docker("image", "inspect", "-f", "{{json .Size}}", image))) / 1e6
