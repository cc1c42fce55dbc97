"""A real RabbitMQ broker for the UOF adapter's tests: Debian's rabbitmq-server started on
free loopback ports with its own epmd, node name, data, logs and config in a tmp dir,
stopped by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from oddsfeed.freeport import free_port
from tests.procs import stop_process
from tests.sysdeps import debian_binary

# The Debian wrapper (/usr/sbin) switches to the rabbitmq user; the script it runs does not.
SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
START_TIMEOUT_S = 60.0


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Broker:
    """One RabbitMQ node; :attr:`url` is its ``amqp://guest:guest@127.0.0.1:PORT/``."""

    def __init__(self, base: Path) -> None:
        debian_binary("/usr/sbin/rabbitmq-server", "rabbitmq-server")
        epmd = debian_binary("/usr/bin/epmd", "erlang-base")
        self.base = base
        self.port = free_port()
        self.node = f"oddsfeed_{uuid.uuid4().hex[:8]}@localhost"
        epmd_port, dist_port = free_port(), free_port()
        conf = base / "rabbitmq.conf"
        conf.write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
                        "loopback_users = none\n"
                        "disk_free_limit.absolute = 1MB\n"
                        "log.console = false\n"
                        "log.file.level = warning\n")
        (base / "enabled_plugins").write_text("[].\n")
        self.env = {
            **os.environ,
            "HOME": str(base),  # the Erlang cookie goes here
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "ERL_EPMD_PORT": str(epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_CONFIG_FILE": str(conf),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
        }
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        # Our own epmd in the foreground: a node would otherwise start a daemon that
        # outlives it and that we have no PID of.
        self.epmd = subprocess.Popen([epmd, "-port", str(epmd_port), "-address", "127.0.0.1"],
                                     env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        self.server: subprocess.Popen[bytes] | None = None
        try:
            self._wait_port(epmd_port, self.epmd, 10.0)
            self.start()
        except BaseException:
            self.close()
            raise

    def _wait_port(self, port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not _port_open(port):
            if proc.poll() is not None:
                raise RuntimeError(f"process exited with {proc.returncode} before port {port} "
                                   f"opened; logs in {self.base}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"port {port} not open after {timeout_s}s; logs in {self.base}")
            time.sleep(0.05)

    def start(self) -> None:
        """Start the node (again) and wait until it accepts AMQP connections."""
        out = (self.base / "server.out").open("ab")
        self.server = subprocess.Popen([SERVER], env=self.env, stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True, cwd=self.base)
        out.close()
        self._wait_port(self.port, self.server, START_TIMEOUT_S)
        self.ctl("await_startup", timeout_s=START_TIMEOUT_S)

    def ctl(self, *args: str, timeout_s: float = 30.0) -> str:
        """Run rabbitmqctl against this node; returns its output, raises on failure."""
        done = subprocess.run([CTL, "-n", self.node, *args], env=self.env, capture_output=True,
                              timeout=timeout_s, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stderr.decode()[-500:]}")
        return done.stdout.decode()

    def stop(self) -> None:
        """Stop the node (its script stops the VM on SIGTERM); kills it after 20 s."""
        proc, self.server = self.server, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            # The VM and its helpers are in the session the script leads: ours alone.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        deadline = time.monotonic() + 10
        while _port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        """Stop the node and our epmd."""
        try:
            self.stop()
        finally:
            stop_process(self.epmd, wait_s=5)
