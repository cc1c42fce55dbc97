"""Fan-out benchmark: one oddsfeed worker (`serve --workers 1`) against a naive baseline
(websockets + redis-py pub/sub, one ``broadcast`` per message), same load, same run.

C connections each subscribe to S of M markets; P updates/s go through the store (oddsfeed)
or are published on Redis (naive). Load generators are separate processes on loopback (raw
asyncio protocols, cheap per message); every received version is checked (loss and gaps).
Figures: delivered messages/s, p50/p99/max latency apply -> receive, server CPU seconds per
second, deliveries per server CPU-second (and its ratio to the naive one at the same rate),
RSS and KB per connection; a saturation search raises P until p99 > 100 ms, deliveries
< 95% of expected, or a gap; idle memory against connection count.

    python -m bench.fanout [--quick] [--json PATH]

The one-market-per-connection workload (few subscribers per update, JSON) is
:mod:`bench.fanout.one_market`.
"""

from __future__ import annotations

from .runner import idle_memory, run, run_scenario


def main() -> None:
    import signal
    import sys

    from ..common import cli

    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the servers under test are stopped
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    cli("fanout", run, __doc__)


__all__ = ["idle_memory", "main", "run", "run_scenario"]
