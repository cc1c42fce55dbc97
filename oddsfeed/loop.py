"""The event loop every entry point runs on (composition root: the CLI and each worker)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")


def run_async(main_coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``main_coro`` to completion on uvloop (asyncio's loop where uvloop is missing)."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop  # optional speed-up; absent on some platforms

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main_coro)


def install_stop_signals(stop: asyncio.Event, log: Any) -> None:
    """Make the first SIGINT/SIGTERM set ``stop``; a second one gets the default action."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)

    def on_signal(signum: int) -> None:
        log.info("stop requested", signal=signal.Signals(signum).name)
        for sig in signals:
            loop.remove_signal_handler(sig)
        stop.set()

    for sig in signals:
        # Not in the main thread (e.g. an in-process test): rely on `stop` alone.
        with contextlib.suppress(RuntimeError, ValueError, NotImplementedError):
            loop.add_signal_handler(sig, on_signal, int(sig))
