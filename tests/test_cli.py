"""The command line: `run` starts and stops cleanly, stubs exit 2, settings errors are clear."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import psutil
import pytest
import redis
from click.testing import CliRunner

from oddsfeed.cli import main
from oddsfeed.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent


class Lines:
    """Reads a child's stream on a thread so the test can wait for a line with a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for_event(self, event: str, deadline_s: float = 20.0) -> dict[str, Any]:
        """Return the first JSON log record whose event is ``event``."""
        deadline = time.monotonic() + deadline_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {event!r} log line; got:\n{''.join(self.seen)}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"stream ended before {event!r}:\n{''.join(self.seen)}")
            self.seen.append(line)
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == event:
                return record


# In-process commands configure logging (onto CliRunner's streams); each test undoes it.
pytestmark = pytest.mark.usefixtures("restore_logging")


@pytest.fixture
def child_env() -> dict[str, str]:
    """Environment for a child oddsfeed: free ports, JSON logs, embedded Valkey."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ODDSFEED_")}
    env.update(
        ODDSFEED_SERVER__WS_PORT=str(free_port()),
        ODDSFEED_SERVER__HTTP_PORT=str(free_port()),
        ODDSFEED_SERVER__ADMIN_PORT=str(free_port()),
        ODDSFEED_REDIS__URL="",
        ODDSFEED_LOG__FORMAT="json",
    )
    return env


@pytest.fixture
def spawn(child_env: dict[str, str]) -> Iterator[Any]:
    """Start `python -m oddsfeed ARGS...`; kills whatever is left at the end."""
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "oddsfeed", *args],
            cwd=ROOT,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def wait_gone(pid: int, deadline_s: float = 10.0) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


def test_run_starts_and_stops_on_sigint(spawn: Any, child_env: dict[str, str]) -> None:
    """`oddsfeed run` logs ready with its urls, and on SIGINT exits 0 with no Valkey left."""
    proc = spawn("run")
    assert proc.stderr is not None
    lines = Lines(proc.stderr)
    started = lines.wait_for_event("embedded valkey started")
    ready = lines.wait_for_event("oddsfeed ready")
    valkey_pid = started["pid"]
    assert psutil.Process(valkey_pid).ppid() == proc.pid
    assert ready["redis_url"] == started["url"]
    assert ready["ws_url"] == f"ws://127.0.0.1:{child_env['ODDSFEED_SERVER__WS_PORT']}/ws"
    with redis.Redis.from_url(ready["redis_url"]) as client:
        assert client.ping()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0, "".join(lines.seen)
    lines.wait_for_event("oddsfeed stopped")
    assert wait_gone(valkey_pid), "embedded valkey outlived `oddsfeed run`"


def test_run_stops_on_sigterm_with_external_redis(
    spawn: Any, child_env: dict[str, str], valkey_url: str
) -> None:
    """With redis.url set, `run` starts no Valkey of its own and exits 0 on SIGTERM."""
    child_env["ODDSFEED_REDIS__URL"] = valkey_url
    proc = spawn("run")
    assert proc.stderr is not None
    lines = Lines(proc.stderr)
    ready = lines.wait_for_event("oddsfeed ready")
    assert ready["redis_url"] == valkey_url
    assert psutil.Process(proc.pid).children() == []
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


def test_valkey_command_prints_url(spawn: Any) -> None:
    """`oddsfeed valkey` prints a url that answers PING, and stops on SIGTERM."""
    proc = spawn("valkey")
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    assert url.startswith("redis://127.0.0.1:")
    with redis.Redis.from_url(url) as client:
        assert client.ping()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


def test_serve_needs_a_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve` refuses to start without redis.url, with a clear error."""
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 1
    assert "serve needs redis.url" in result.output


def test_token_mints_a_verifiable_jwt(monkeypatch: pytest.MonkeyPatch) -> None:
    """`token` prints a JWT with the scopes asked for, signed with the configured secret."""
    from oddsfeed.auth import Authenticator
    from oddsfeed.settings import load_settings

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("ODDSFEED_AUTH__HS256_SECRET", "cli-test-secret-0123456789abcdef")
    result = CliRunner().invoke(main, ["token", "--scope", "odds:read odds:write", "--ttl", "60"])
    assert result.exit_code == 0, result.output
    auth = Authenticator(load_settings(None, {}, {
        "auth.hs256_secret": "cli-test-secret-0123456789abcdef"}).auth)
    principal = auth.verify(result.output.strip())
    assert principal.scopes == {"odds:read", "odds:write"}
    bad = CliRunner().invoke(main, ["token", "--scope", "root"])
    assert bad.exit_code == 1
    assert "unknown scope" in bad.output


def test_bad_env_setting_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """An invalid setting from the environment exits 1 naming the key."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("ODDSFEED_FANOUT__HEARTBEAT_MS", "soon")
    result = CliRunner().invoke(main, ["show-config"])
    assert result.exit_code == 1
    assert "fanout.heartbeat_ms: input should be a valid integer" in result.output


def test_flags_override_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--config is read, env beats it, flags beat env; the secret is masked."""
    monkeypatch.delenv("ODDSFEED_SERVER__HOST", raising=False)
    config = tmp_path / "c.toml"
    config.write_text('[server]\nws_port = 1111\n[auth]\nhs256_secret = "s3cret"\n')
    monkeypatch.setenv("ODDSFEED_SERVER__HTTP_PORT", "2222")
    result = CliRunner().invoke(
        main, ["--config", str(config), "--log-level", "WARNING", "show-config"]
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["server"]["ws_port"] == 1111
    assert shown["server"]["http_port"] == 2222
    assert shown["log"]["level"] == "warning"
    assert shown["auth"]["hs256_secret"] == "***"


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    """A --config path that does not exist exits 1 naming the file."""
    result = CliRunner().invoke(main, ["--config", str(tmp_path / "nope.toml"), "show-config"])
    assert result.exit_code == 1
    assert "nope.toml" in result.output
