"""Debian packages some tests and benchmarks need (Chromium, RabbitMQ, HAProxy, wrk...):
found, or installed.

On a fresh machine (CI included) nothing was installed by hand, so a test that needs a
system binary calls :func:`debian_binary`, and a benchmark :func:`ensure_debian`: both
install the package with apt-get when we are root and it is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

import pytest

_lock = threading.Lock()
_updated = False


def ensure_debian(path: str, package: str) -> bool:
    """Install Debian's ``package`` unless ``path`` exists (as root, with apt-get); return
    whether ``path`` exists afterwards."""
    global _updated
    with _lock:
        if os.path.exists(path):
            return True
        if os.geteuid() == 0 and shutil.which("apt-get"):
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            if not _updated:
                subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True,
                               env=env, timeout=600)
                _updated = True
            subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                            package], check=False, capture_output=True, env=env, timeout=900)
        return os.path.exists(path)


def debian_binary(path: str, package: str) -> str:
    """Return ``path`` once it exists, installing Debian's ``package`` first if needed.

    Skips the calling test when the binary is missing and cannot be installed here."""
    if not ensure_debian(path, package):
        pytest.skip(f"Debian {package} ({path}) is not installed and cannot be installed here")
    return path
