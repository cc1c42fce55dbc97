"""The event loop every entry point runs on (composition root: the CLI and each worker)."""

from __future__ import annotations

import asyncio
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
