"""Process faults on `oddsfeed serve`: a worker killed with SIGKILL is restarted, and a
node started while its store is down waits (readyz 503) and becomes ready when it is up."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest

from oddsfeed.embedded import EmbeddedValkey, free_port
from tests.procs import stop_process
from tests.test_cli import ROOT, Lines

SECRET = "supervisor-test-secret-0123456789abcdef"


def _status(port: int, path: str = "/readyz") -> int:
    """The HTTP status of GET ``path``, 0 while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def _wait(cond: Callable[[], bool], what: str, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def serve() -> Iterator[Callable[[str], tuple[subprocess.Popen[str], Lines, int]]]:
    """Start `oddsfeed serve --workers 1` on a redis url; yields (process, stderr lines, HTTP
    port). Stops it with SIGTERM after the test and kills, by pid, whatever it left."""
    started: list[subprocess.Popen[str]] = []
    # psutil.Process objects, not bare pids: kill() refuses a pid reused by another process
    seen: dict[int, psutil.Process] = {}

    def start(url: str) -> tuple[subprocess.Popen[str], Lines, int]:
        http_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ODDSFEED_")}
        env.update(ODDSFEED_REDIS__URL=url, ODDSFEED_AUTH__HS256_SECRET=SECRET,
                   ODDSFEED_SERVER__WS_PORT=str(free_port()),
                   ODDSFEED_SERVER__HTTP_PORT=str(http_port),
                   ODDSFEED_SERVER__ADMIN_PORT=str(free_port()), ODDSFEED_LOG__FORMAT="json")
        proc = subprocess.Popen([sys.executable, "-m", "oddsfeed", "serve", "--workers", "1"],
                                cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stderr is not None
        return proc, Lines(proc.stderr), http_port

    def remember_children(proc: subprocess.Popen[str]) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            seen.update((c.pid, c) for c in psutil.Process(proc.pid).children(recursive=True))

    yield start
    for proc in started:
        remember_children(proc)
        stop_process(proc)
    for child in seen.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


def test_sigkilled_worker_is_restarted(serve: Any, valkey_url: str) -> None:
    """SIGKILL of the only worker: the supervisor logs it, starts a new worker after a
    backoff and the node serves again; SIGTERM then stops it with status 0."""
    proc, lines, port = serve(valkey_url)
    first = lines.wait_for_event("worker ready", 60)
    _wait(lambda: _status(port) == 200, "readyz 200")
    os.kill(first["pid"], signal.SIGKILL)
    exited = lines.wait_for_event("worker exited; restarting it")
    assert (exited["pid"], exited["exit_code"]) == (first["pid"], -signal.SIGKILL)
    second = lines.wait_for_event("worker ready", 60)
    assert second["pid"] != first["pid"]
    _wait(lambda: _status(port) == 200, "readyz 200 after the restart")
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


def test_node_started_with_the_store_down_waits_for_it(serve: Any) -> None:
    """A node whose store is down at start keeps running with readyz 503 (and 503 with
    Retry-After on the API) and becomes ready once the store is started."""
    store_port = free_port()
    proc, lines, port = serve(f"redis://127.0.0.1:{store_port}")
    lines.wait_for_event("store unreachable; retrying", 60)
    _wait(lambda: _status(port) == 503, "readyz 503 while the store is down")
    assert _status(port, "/healthz") == 200
    assert _status(port, "/v1/markets") == 503
    assert proc.poll() is None
    with EmbeddedValkey(port=store_port):
        lines.wait_for_event("worker ready", 60)
        _wait(lambda: _status(port) == 200, "readyz 200 once the store is up")
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
