"""Ending a process a test (or benchmark) started itself, by its handle: never by name."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM,
                 wait_s: float = 20) -> None:
    """Send ``sig`` to ``proc`` (if it still runs), wait ``wait_s`` for it to exit, then
    SIGKILL it; always reaps it."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
