"""The fan-out's Python per delivery, without the kernel: the hub's live path, the batching
policy, queueing and the window's framing for one-market-per-connection traffic, with the
many-socket sends replaced by no-ops (the send syscalls are measured by sendcost.c) and the
deltas built and encoded before the timed part (they reach the hub encoded by the store).

1,000 connections each on one of 100 markets (10 subscribers per update), the worker
batching with its hot window, ``per_window`` updates of each market per batching window;
reports the best of ``rounds`` (µs of CPU per delivery). Run it in two trees to compare
them (the second with ``PYTHONPATH=OTHER_TREE``), interleaved, under the bench lock:

    flock /tmp/oddsfeed-bench.lock python -m bench.fanout.python_cost [PER_WINDOW ...]
"""

from __future__ import annotations

import asyncio
import sys
import time
from types import SimpleNamespace
from typing import Any


class _Transport:
    """What the writer asks of a transport that keeps up (nothing buffered, open)."""

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        pass


async def measure(per_window: int, conns: int = 1000, markets: int = 100,
                  rounds: int = 7, windows: int = 40) -> float:
    """µs of CPU per delivery, the best of ``rounds``."""
    from websockets.protocol import State

    from oddsfeed.core import wire
    from oddsfeed.core.book import Delta
    from oddsfeed.core.session import Outbox
    from oddsfeed.fanout import writer as writer_module
    from oddsfeed.fanout.hub import Client, Hub
    from oddsfeed.fanout.server import FanoutServer
    from oddsfeed.settings import load_settings

    writer_module.send_each = lambda fds, frames: []  # type: ignore[attr-defined]
    writer_module.send_all = lambda fds, frame: []  # type: ignore[attr-defined]
    settings = load_settings(None, {}, {})
    hub = Hub(store=SimpleNamespace(bus=lambda *a, **k: None))
    fan = FanoutServer(hub, fanout=settings.fanout, auth=None)  # type: ignore[arg-type]
    hub.sink = fan
    fan.policy.set_batching(True)
    fan.policy.set_hot_window(fan.policy.max_window_s)
    transport = _Transport()
    names = [f"m{i}" for i in range(markets)]
    for i in range(conns):
        c = Client(i + 1, wire.JSON, Outbox(encoding=wire.JSON, high_water_bytes=1 << 20,
                                            max_bytes=8 << 20, max_lag_s=60.0))
        c.sink = fan
        c.transport = transport
        c.proto = SimpleNamespace(state=State.OPEN)
        c.conn = SimpleNamespace(transport=transport, protocol=c.proto)
        c.fd = 1000 + i
        c.rate = 1000
        c.last_sent = time.monotonic()
        m = names[i % markets]
        hub.index.add_market(c, m)
        c.pos[m] = ("e", 1)
        hub.clients.add(c)
    version = dict.fromkeys(names, 1)

    def deltas() -> list[list[tuple[str, Any, Any]]]:
        """Every window's updates, built (and encoded, as they arrive from the store) ahead
        of the timed part."""
        made = []
        for _ in range(windows):
            one = []
            for _ in range(per_window):
                for m in names:
                    v = version[m] + 1
                    version[m] = v
                    d = Delta(market=m, epoch="e", version=v, base=v - 1, ts=0,
                              sel={"h": {"p": 20000 + v % 100}})
                    out = wire.delta(d)
                    out.payload(wire.JSON)
                    one.append((m, d, out))
            made.append(one)
        return made

    live = hub._live
    batches = (fan._hot_batch, fan._batch)
    best = float("inf")
    for _ in range(rounds):
        todo = deltas()
        t0 = time.process_time()
        for window in todo:
            for m, d, out in window:
                live(m, d, out)
            for batch in batches:
                if batch.handle is not None:
                    batch.handle.cancel()
                fan._flush(batch)
        spent = time.process_time() - t0
        best = min(best, spent / (windows * per_window * markets * (conns // markets)))
    return best * 1e6


def main(argv: list[str]) -> None:
    for per_window in [int(a) for a in argv] or [1, 2, 4]:
        us = asyncio.run(measure(per_window))
        print(f"{per_window} update(s) per market per window: {us:.3f} us per delivery")


if __name__ == "__main__":
    main(sys.argv[1:])
