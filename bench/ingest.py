"""Ingest benchmark: normalised updates per second from a replay file into the store, end to
end (read line, parse, normalise, order, atomic apply), against an embedded Valkey.

    python -m bench.ingest [--quick] [--messages N] [--json PATH]

Rows: the normalising alone (no store), the full replay -> FeedRunner path one update at a
time (FeedRunner.submit -> Store.apply, a round trip each), through one lane and through 8
lanes (markets applied concurrently, in order within each market, as `oddsfeed ingest
replay` does by default; each lane sends what waits in it, up to 64 updates, as one
FeedRunner.submit_many -> Store.apply_many call), each with ``redis.auto_pipeline`` off
(a pipeline per call) and on (the lanes' calls of one loop turn in one pipeline), the push
endpoint (HTTP POSTs of
100 messages on loopback, each one submit_many), and a baseline of one plain HSET per
message (the floor a round trip per update costs), measured first and last (the ratios
are against the mean of the two).
The file is a simulator recording (`oddsfeed record simulator` shape, 20 events x 3
markets). Prints a table and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from oddsfeed.auth import Authenticator
from oddsfeed.embedded import EmbeddedValkey
from oddsfeed.settings import load_settings
from oddsfeed.store import Store
from oddsfeed_ingest.normalised import parse_line, to_message
from oddsfeed_ingest.push import build_push_app
from oddsfeed_ingest.replay import Normalizer, Recorder, replay
from oddsfeed_ingest.runner import FeedRunner, Lanes
from oddsfeed_ingest.simulator import Simulator, SimulatorConfig

from .common import environment, table, write_json

COLUMNS = ["impl", "updates", "seconds", "per_s", "ratio"]
LANES = 8
PUSH_BATCH = 100


def make_file(path: Path, messages: int) -> int:
    """Write a simulator recording of ``messages`` normalised messages; returns the count."""
    sim = Simulator(SimulatorConfig(events=20, seed=3))
    n = 0
    with path.open("w") as fh:
        rec = Recorder(fh, clock=lambda: n / 1000)  # 1 ms apart (ignored at speed 0)
        batch = sim.initial()
        while n < messages:
            for u in batch[: messages - n]:
                rec("simulator", to_message(u))
                n += 1
            batch = sim.step()
    return n


async def run(quick: bool, messages: int | None = None) -> dict[str, Any]:
    """Run every row; returns the results document."""
    n_msgs = messages or (5_000 if quick else 50_000)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedValkey() as vk:
        path = Path(tmp) / "feed.jsonl"
        n = make_file(path, n_msgs)
        env = environment(vk.url)
        lines = path.read_text().splitlines()

        normalize = Normalizer()
        t0 = time.perf_counter()
        for line in lines:
            normalize(parse_line(line))
        norm_s = time.perf_counter() - t0

        base_first = await _baseline(vk.url, lines)
        store = await Store.connect(vk.url)
        runner = FeedRunner(store, "replay:bench")
        t0 = time.perf_counter()
        applied = await replay(lines, runner.submit, runner.bad, speed=0)
        ours_s = time.perf_counter() - t0
        markets = len(await store.list_markets())
        laned: dict[tuple[bool, int], tuple[FeedRunner, int, float, int]] = {}
        for auto in (False, True):  # the lanes' apply_many calls: one pipeline each, or shared
            laned_store = await Store.connect(vk.url, auto_pipeline=auto)
            for n_lanes in (1, LANES):
                await store.client.flushall()
                feed = FeedRunner(laned_store, "replay:bench")
                lanes = Lanes(feed.submit_many, lanes=n_lanes)
                t0 = time.perf_counter()
                count = await replay(lines, lanes.put, feed.bad, speed=0)
                await lanes.close()
                laned[auto, n_lanes] = (feed, count, time.perf_counter() - t0,
                                        len(await store.list_markets()))
            await laned_store.close()
        await store.client.flushall()
        push_feed = FeedRunner(store, "push:bench")
        pushed, push_s = await _push(lines, push_feed)
        push_markets = len(await store.list_markets())
        await store.close()
        # The baseline again at the end: the rows' ratios are against the mean of the two,
        # so a machine that got busier (or quieter) during the run moves both sides.
        base_last = await _baseline(vk.url, lines)
        base_s = (base_first + base_last) / 2

    def row(impl: str, count: int, secs: float, **extra: Any) -> dict[str, Any]:
        return {"impl": impl, "updates": count, "seconds": round(secs, 3),
                "per_s": round(count / secs), "ratio": round(base_s / secs, 2), **extra}

    rows = [row("baseline: one HSET per message", n, base_s,
                first_s=round(base_first, 3), last_s=round(base_last, 3)),
            row("oddsfeed: parse + normalise only", n, norm_s),
            row("oddsfeed: replay -> runner.submit -> Store.apply (one at a time)", applied,
                ours_s, outcomes=runner.counts, markets=markets)]
    for (auto, n_lanes), (feed, count, secs, n_markets) in laned.items():
        what = "1 lane" if n_lanes == 1 else f"{n_lanes} lanes (order kept per market)"
        rows.append(row(f"oddsfeed: replay -> {what} -> submit_many -> Store.apply_many "
                        f"(batches <= 64; auto_pipeline {'on' if auto else 'off'})", count,
                        secs, outcomes=feed.counts, markets=n_markets))
    rows.append(row(f"oddsfeed: HTTP POST /v1/push, {PUSH_BATCH} messages per request "
                    "-> submit_many -> Store.apply_many", pushed, push_s,
                    outcomes=push_feed.counts, markets=push_markets))
    return {"scenario": "ingest", "params": {"messages": n, "events": 20, "speed": 0},
            "env": env, "rows": rows, "columns": COLUMNS}


async def _baseline(url: str, lines: list[str]) -> float:
    """Seconds to write one plain HSET per message, one at a time; the keys are removed."""
    r = Redis.from_url(url)
    t0 = time.perf_counter()
    for line in lines:
        rec = json.loads(line)
        await r.hset(f"base:{rec['msg']['market']}", mapping={"d": line[:100]})
    secs = time.perf_counter() - t0
    keys = [k async for k in r.scan_iter(match="base:*", count=1000)]
    if keys:
        await r.delete(*keys)
    await r.aclose()
    return secs


async def _push(lines: list[str], feed: FeedRunner) -> tuple[int, float]:
    """POST the recording's messages to the push endpoint (a JWT with odds:write, one
    request at a time, PUSH_BATCH messages each) on loopback; returns (messages, seconds)."""
    auth = Authenticator(load_settings(None, {}, {"auth.hs256_secret": "b" * 32}).auth)
    app = web.AppRunner(build_push_app(feed, auth, max_body_bytes=16 << 20), access_log=None)
    await app.setup()
    site = web.TCPSite(app, "127.0.0.1", 0)
    await site.start()
    try:
        port = app.addresses[0][1]
        token = auth.mint("bench", ["odds:write"], ttl_s=3600, now_s=int(time.time()))
        messages = [json.loads(line)["msg"] for line in lines]
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as http:
            t0 = time.perf_counter()
            for i in range(0, len(messages), PUSH_BATCH):
                async with http.post(f"http://127.0.0.1:{port}/v1/push", headers=headers,
                                     json={"messages": messages[i:i + PUSH_BATCH]}) as r:
                    r.raise_for_status()
                    await r.read()
            return len(messages), time.perf_counter() - t0
    finally:
        await app.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5k messages instead of 50k")
    ap.add_argument("--messages", type=int, help="messages in the generated file")
    ap.add_argument("--json", help="where to write the JSON (default: bench/results/)")
    args = ap.parse_args()
    res = asyncio.run(run(args.quick, args.messages))
    print(table(res["rows"], res["columns"]))
    print(f"outcomes: {res['rows'][-1]['outcomes']}")
    print(f"wrote {write_json('ingest', res, args.json)}")


if __name__ == "__main__":
    main()
