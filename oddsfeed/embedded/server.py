"""One valkey-server child process: start, wait until it answers, stop, clean up."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from oddsfeed.freeport import LOOPBACK, free_port

from .process import (
    LOG_TAIL_BYTES,
    EmbeddedServerError,
    Launcher,
    die_with_parent,
    find_server_binary,
)


class EmbeddedValkey(Launcher):
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

    def _started(self) -> bool:
        return self._proc is not None

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
            preexec_fn=die_with_parent(os.getpid()),  # fork-safe: only prctl + getppid
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
                fh.seek(max(0, size - LOG_TAIL_BYTES))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
