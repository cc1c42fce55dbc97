"""The composition behind `oddsfeed ingest` and `oddsfeed record`: every adapter run through
run_adapter, recordings of live adapters replayed into the same state, the metrics endpoint,
the mapping file, and the CLI commands."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from click.testing import CliRunner

from oddsfeed.cli import main as cli_main
from oddsfeed.freeport import free_port
from oddsfeed.settings import Settings, load_settings
from oddsfeed.store import Store
from oddsfeed_ingest.main import load_mappings, run_adapter
from oddsfeed_ingest.replay import Recorder

from .conftest import until
from .test_betfair import IMAGE

ROOT = Path(__file__).resolve().parents[2]


def settings(tmp_path: Path, **extra: Any) -> Settings:
    return load_settings(None, {}, {"ingest.mapping_file": str(tmp_path / "none.toml"),
                                    "ingest.staleness_s": 60, **extra})


async def _state(store: Store) -> dict[str, Any]:
    out = {}
    for m in await store.list_markets():
        d = m.to_store()
        for k in ("epoch", "version", "ts"):
            d.pop(k)
        d.pop("src", None)  # the driving feed: the live adapter's name, then the replay's
        out[m.id] = d
    return out


async def test_record_simulator_then_replay(store: Store, tmp_path: Path) -> None:
    """`record simulator` writes a file that `ingest replay` turns into the simulator's
    markets."""
    path = tmp_path / "sim.jsonl"
    stop = asyncio.Event()
    with path.open("w") as fh:
        rec = Recorder(fh)
        task = asyncio.create_task(run_adapter(
            "simulator", {"events": 2, "seed": 5, "rate": 2000}, store, settings(tmp_path),
            stop=stop, recorder=rec))
        await until(lambda: rec.count >= 40, what="40 recorded messages")
        stop.set()
        recorded = await asyncio.wait_for(task, 5)
    assert recorded.counts.get("recorded", 0) >= 40
    assert await store.list_markets() == []  # recording applies nothing
    runner = await run_adapter("replay", {"file": str(path), "speed": 0}, store,
                               settings(tmp_path), stop=asyncio.Event())
    assert runner.counts.get("bad", 0) == 0
    assert runner.counts["applied"] >= 6
    assert len(await store.list_markets()) == 2 * 3


async def test_record_stream_then_replay_gives_the_same_state(
        store: Store, redis_client: Any, tmp_path: Path) -> None:
    """A recorded stream replays into the same markets the live stream produced."""
    delta = {"op": "mcm", "clk": "c2", "pt": 1100,
             "mc": [{"id": "1.1", "rc": [{"id": 12, "atb": [[1.9, 4]]}]}]}

    async def provider(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        for m in (IMAGE, delta):
            writer.write(json.dumps(m).encode() + b"\n")
        await writer.drain()
        await reader.read()  # until the client goes

    server = await asyncio.start_server(provider, "127.0.0.1", 0)
    address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    path = tmp_path / "stream.jsonl"

    async def live_applied() -> bool:
        m = await store.get("1.1")
        return m is not None and "12" in m.selections and m.selections["12"].price == 19000

    stop = asyncio.Event()
    task = asyncio.create_task(run_adapter("stream", {"address": address}, store,
                                           settings(tmp_path), stop=stop))
    await until(live_applied, what="live stream applied")
    stop.set()
    await asyncio.wait_for(task, 5)
    live = await _state(store)
    await redis_client.flushall()
    stop = asyncio.Event()
    with path.open("w") as fh:
        rec = Recorder(fh)
        task = asyncio.create_task(run_adapter("stream", {"address": address}, store,
                                               settings(tmp_path), stop=stop, recorder=rec))
        await until(lambda: rec.count == 2, what="recorded stream")
        stop.set()
        await asyncio.wait_for(task, 5)
    server.close()
    assert await store.list_markets() == []
    await run_adapter("replay", {"file": str(path), "speed": 0}, store, settings(tmp_path),
                      stop=asyncio.Event())
    assert await _state(store) == live
    assert live["1.1"]["selections"]["11"]["price"] == 25000


async def test_metrics_endpoint_and_http_poll(store: Store, tmp_path: Path) -> None:
    """`ingest http-poll --metrics-port` serves the per-source metrics while polling."""
    from aiohttp import web

    from .test_oddsapi import EVENT

    async def odds(request: web.Request) -> web.Response:
        return web.json_response([EVENT])

    app = web.Application()
    app.router.add_get("/odds", odds)
    app_runner = web.AppRunner(app)
    await app_runner.setup()
    site = web.TCPSite(app_runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{app_runner.addresses[0][1]}/odds"
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(run_adapter(
        "http-poll", {"url": url, "bookmaker": "book1", "interval": 0.05, "metrics_port": port,
                      "feed_id": "m"}, store, settings(tmp_path), stop=stop))
    try:
        async def polled() -> bool:
            return await store.get("ev123:h2h") is not None
        await until(polled, what="polled market")
        async with aiohttp.ClientSession() as s, s.get(
                f"http://127.0.0.1:{port}/metrics") as r:
            text = await r.text()
    finally:
        stop.set()
        runner = await asyncio.wait_for(task, 5)
        await app_runner.cleanup()
    assert 'oddsfeed_ingest_messages_total{outcome="applied",source="http-poll:m"}' in text
    assert 'oddsfeed_ingest_healthy{source="http-poll:m"}' in text
    assert runner.counts["applied"] == 3


def test_mapping_file(tmp_path: Path) -> None:
    """The shipped mapping file loads; a bad key in a mapping file is a clear error."""
    maps = load_mappings(ROOT / "config" / "mappings.toml")
    assert "betfair" in maps
    assert maps["betfair"].sport("1") == "soccer"
    bad = tmp_path / "bad.toml"
    bad.write_text('[providers.x]\nevnts = {a = "b"}\n')
    with pytest.raises(ValueError, match="evnts"):
        load_mappings(bad)
    assert load_mappings(tmp_path / "missing.toml") == {}


def test_cli_ingest_replay_and_record_errors(valkey_url: str, tmp_path: Path) -> None:
    """`oddsfeed ingest replay --file F --speed 0` applies a recording into the store;
    missing options are clear errors."""
    redis.Redis.from_url(valkey_url).flushall()
    fixture = Path(__file__).parent / "fixtures" / "mixed.jsonl"
    runner = CliRunner()
    res = runner.invoke(cli_main, ["ingest", "replay", "--file", str(fixture), "--speed", "0",
                                   "--bookmaker", "book1", "--redis-url", valkey_url])
    assert res.exit_code == 0, res.output
    with redis.Redis.from_url(valkey_url) as r:
        assert {x.decode() for x in r.smembers("of:markets")} == {"p1", "ev9:h2h", "1.23"}
    res = runner.invoke(cli_main, ["ingest", "replay", "--redis-url", valkey_url])
    assert res.exit_code != 0
    assert "--file" in res.output
    res = runner.invoke(cli_main, ["record", "stream", "--out", str(tmp_path / "x.jsonl")])
    assert res.exit_code != 0
    assert "--address" in res.output
