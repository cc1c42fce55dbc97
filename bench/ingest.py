"""Ingest benchmark: normalised updates per second from a replay file into the store, end to
end (parse, normalise, order, atomic apply); baseline: the same updates as plain HSET.

    python -m bench.ingest [--quick] [--json PATH]
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from ingest.replay import Recorder, replay
from ingest.runner import FeedRunner
from ingest.simulator import SimulatorConfig, updates_for
from oddsfeed.embedded import EmbeddedValkey
from oddsfeed.store import Store

from .common import cli, environment


def make_file(path: Path, n: int) -> int:
    from ingest.main import _as_message

    ups = updates_for(SimulatorConfig(events=20, seed=3), n)
    with path.open("w") as fh:
        rec = Recorder(fh, clock=lambda: 0.0)
        for u in ups:
            rec("push", _as_message(u))
    return len(ups)


async def run(quick: bool) -> dict[str, Any]:
    ticks = 5_000 if quick else 50_000
    with tempfile.TemporaryDirectory() as tmp, EmbeddedValkey() as vk:
        path = Path(tmp) / "feed.jsonl"
        n = make_file(path, ticks)
        env = environment(vk.url)
        r = Redis.from_url(vk.url)
        lines = path.read_text().splitlines()
        t0 = time.perf_counter()
        for line in lines:
            rec = json.loads(line)
            await r.hset(f"base:{rec['msg']['market']}", mapping={"d": line[:100]})
        base_s = time.perf_counter() - t0
        await r.flushall()
        await r.aclose()
        store = await Store.connect(vk.url)
        runner = FeedRunner(store, "replay:bench")
        t0 = time.perf_counter()
        applied = await replay(lines, runner.submit, runner.bad, speed=0)
        ours_s = time.perf_counter() - t0
        await store.close()
    rows = [{"impl": "baseline HSET per message", "updates": n, "per_s": round(n / base_s),
             "ratio": 1.0},
            {"impl": "oddsfeed replay -> apply", "updates": applied,
             "per_s": round(applied / ours_s), "ratio": round(base_s / ours_s, 2),
             "outcomes": runner.counts}]
    return {"scenario": "ingest", "params": {"updates": n}, "env": env, "rows": rows,
            "columns": ["impl", "updates", "per_s", "ratio"]}


def main() -> None:
    cli("ingest", run, __doc__)


if __name__ == "__main__":
    main()
