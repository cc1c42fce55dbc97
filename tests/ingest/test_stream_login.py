"""The stream adapter against a provider that requires login: credentials from flags or the
environment (never logged), refusals, backoff counted per connection, the documented error
codes, and provider lag notices; state is read back through the store and /metrics."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from click.testing import CliRunner
from structlog.testing import capture_logs

from oddsfeed.cli import main as cli_main
from oddsfeed.freeport import free_port
from oddsfeed.settings import Settings, load_settings
from oddsfeed.store import Store
from oddsfeed_ingest.betfair import StreamRefused, StreamState, failure_action
from oddsfeed_ingest.betfair_stream import run_stream
from oddsfeed_ingest.main import run_adapter
from oddsfeed_ingest.runner import FeedRunner

from .conftest import until
from .fake_stream import FakeStream
from .test_betfair import DEF, IMAGE

ENV = {"ODDSFEED_INGEST__APP_KEY": "app-key-1", "ODDSFEED_INGEST__SESSION": "session-1"}


def _settings(tmp_path: Path, env: dict[str, str] | None = None, **extra: Any) -> Settings:
    return load_settings(None, env if env is not None else ENV,
                         {"ingest.mapping_file": str(tmp_path / "none.toml"), **extra})


def _image(price: float, clk: str, pt: int = 1000) -> dict[str, Any]:
    return {**IMAGE, "initialClk": f"i-{clk}", "clk": clk, "pt": pt, "mc": [
        {"id": "1.1", "img": True, "marketDefinition": DEF,
         "rc": [{"id": 11, "batb": [[0, price, 10]]}, {"id": 12, "batb": [[0, 1.6, 3]]}]}]}


async def _price(store: Store, market: str, sel: str) -> int | None:
    m = await store.get(market)
    return m.selections[sel].price if m is not None and sel in m.selections else None


_R = TypeVar("_R")


async def _end(stop: asyncio.Event, task: asyncio.Task[_R], fake: FakeStream) -> _R:
    """Stop the adapter, wait for its task (its result), then close the fake provider."""
    stop.set()
    try:
        return await asyncio.wait_for(task, 5)
    finally:
        await fake.close()


async def test_login_from_the_environment_then_image(store: Store, tmp_path: Path) -> None:
    """With the app key and session from ODDSFEED_INGEST__* the adapter sends authentication
    before its subscription, the market converges, and no log line holds a secret."""
    fake = FakeStream(images=lambda sub: [_image(2.5, "c1")])
    address = await fake.start()
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(run_adapter("stream", {"address": address, "feed_id": "l"},
                                               store, _settings(tmp_path), stop=stop))
        try:
            await until(lambda: _price(store, "1.1", "11"), what="market 1.1 priced")
        finally:
            await _end(stop, task, fake)
    assert await _price(store, "1.1", "11") == 25000
    first = fake.received[0]
    assert [m["op"] for m in first[:2]] == ["authentication", "marketSubscription"]
    assert first[0]["appKey"] == "app-key-1"
    assert first[0]["session"] == "session-1"
    assert logs
    assert not [e for e in logs if "app-key-1" in repr(e) or "session-1" in repr(e)]


async def test_without_login_the_refusal_stops_with_a_clear_error(store: Store,
                                                                  tmp_path: Path) -> None:
    """A provider that refuses a subscription before login (NOT_AUTHORIZED) stops the
    adapter after one connection with an error naming the code; nothing is created."""
    fake = FakeStream(images=lambda sub: [_image(2.5, "c1")])
    address = await fake.start()
    try:
        with pytest.raises(StreamRefused, match="NOT_AUTHORIZED"):
            await asyncio.wait_for(run_adapter("stream", {"address": address}, store,
                                               _settings(tmp_path, env={}),
                                               stop=asyncio.Event()), 5)
    finally:
        await fake.close()
    assert len(fake.connects) == 1
    assert await store.list_markets() == []


def test_cli_bad_app_key_exits_with_the_code_and_masks_secrets(valkey_url: str,
                                                               tmp_path: Path) -> None:
    """`oddsfeed ingest stream --app-key ... --session ...` with a wrong key exits 1 naming
    INVALID_APP_KEY, without the key; show-config masks the credentials from the env."""

    async def serve_until_refused() -> tuple[str, FakeStream]:
        fake = FakeStream()
        return await fake.start(), fake

    loop = asyncio.new_event_loop()
    try:
        address, fake = loop.run_until_complete(serve_until_refused())
        env = {"ODDSFEED_INGEST__MAPPING_FILE": str(tmp_path / "none.toml")}
        runner = CliRunner()
        result: list[Any] = []

        def invoke() -> None:
            result.append(runner.invoke(cli_main, [
                "ingest", "stream", "--address", address, "--redis-url", valkey_url,
                "--app-key", "wrong-key-42", "--session", "session-1"], env=env))

        loop.run_until_complete(asyncio.wait_for(asyncio.to_thread(invoke), 20))
        loop.run_until_complete(fake.close())
    finally:
        loop.close()
    [res] = result
    assert res.exit_code == 1, res.output
    assert "INVALID_APP_KEY" in res.output
    assert "wrong-key-42" not in res.output
    shown = CliRunner().invoke(cli_main, ["show-config"], env={
        "ODDSFEED_INGEST__APP_KEY": "wrong-key-42", "ODDSFEED_INGEST__SESSION": "s-99"})
    assert shown.exit_code == 0, shown.output
    ingest = json.loads(shown.output)["ingest"]
    assert ingest["app_key"] != "wrong-key-42"
    assert "wrong-key-42" not in shown.output
    assert "s-99" not in shown.output
    helped = CliRunner().invoke(cli_main, ["ingest", "stream", "--help"])
    for option in ("--app-key", "--session", "--keep-trying", "ODDSFEED_INGEST__APP_KEY",
                   "--api-key", "odds:write"):
        assert option in helped.output


async def test_refused_login_backs_off_exponentially(store: Store) -> None:
    """With --keep-trying and the shipped backoff (0.1 s doubling to 30 s, jitter 0.5-1.5x),
    a provider refusing every login sees at most 7 connections in 3 s, each gap at least
    half the doubled backoff: at most 12 connections in the first minute and 4 a minute
    after that."""
    fake = FakeStream(session="the-right-one")
    address = await fake.start()
    stop = asyncio.Event()
    task = asyncio.create_task(run_stream(
        address, StreamState(), lambda ups: asyncio.sleep(0), lambda exc: None, stop=stop,
        authentication={"appKey": "app-key-1", "session": "expired"}, keep_trying=True))
    await asyncio.sleep(3.0)
    stop.set()
    connects = await asyncio.wait_for(task, 5)
    await fake.close()
    assert 3 <= connects <= 7
    assert len(fake.connects) == connects
    gaps = [b - a for a, b in zip(fake.connects, fake.connects[1:])]
    for k, gap in enumerate(gaps):
        assert gap >= 0.9 * 0.05 * 2 ** k, gaps
    assert all(r[-1]["op"] == "authentication" for r in fake.received)


async def test_timeout_and_connection_limit_retry_then_converge(store: Store,
                                                                tmp_path: Path) -> None:
    """TIMEOUT retries with backoff; MAX_CONNECTION_LIMIT_EXCEEDED waits the longest
    backoff; then the subscription is accepted and the market converges."""
    fake = FakeStream(refuse={1: ("TIMEOUT", True), 2: ("MAX_CONNECTION_LIMIT_EXCEEDED", True)},
                      images=lambda sub: [_image(3.0, "c1")])
    address = await fake.start()
    stop = asyncio.Event()
    feed = FeedRunner(store, "stream:limits")
    task = asyncio.create_task(run_stream(
        address, StreamState(), feed.submit_many, feed.bad, stop=stop,
        authentication={"appKey": "app-key-1", "session": "session-1"},
        min_backoff_s=0.01, max_backoff_s=0.4, rng=random.Random(1)))
    try:
        await until(lambda: _price(store, "1.1", "11"), what="market 1.1 priced")
    finally:
        await _end(stop, task, fake)
    assert len(fake.connects) == 3
    assert fake.connects[2] - fake.connects[1] >= 0.2  # half of max_backoff_s at least
    assert await _price(store, "1.1", "11") == 30000


@pytest.mark.parametrize("closed", [False, True])
async def test_invalid_clock_resubscribes_for_a_fresh_image(store: Store, closed: bool) -> None:
    """After a reconnect the provider refuses the resumed clocks with INVALID_CLOCK (on the
    same link or closing it): the client subscribes again without clocks and the fresh
    image replaces the market."""
    fake = FakeStream(images=lambda sub: [_image(2.0 if "clk" not in sub else 9.0, "c1")])
    address = await fake.start()
    stop = asyncio.Event()
    state = StreamState(heartbeat_ms=100)  # the fake is silent after the image: reconnect
    feed = FeedRunner(store, "stream:clock")
    task = asyncio.create_task(run_stream(
        address, state, feed.submit_many, feed.bad, stop=stop,
        authentication={"appKey": "app-key-1", "session": "session-1"},
        min_backoff_s=0.01, max_backoff_s=0.1, rng=random.Random(2)))
    try:
        await until(lambda: _price(store, "1.1", "11"), what="first image")
        fake.clock_refusal = ("INVALID_CLOCK", closed)
        fake.images = lambda sub: [_image(4.0, "c2", pt=2000)]
        await until(lambda: len(fake.received) >= 2 and any(
            m.get("op") == "marketSubscription" and "clk" not in m
            for r in fake.received[1:] for m in r), what="a subscription without clocks")
        async def fresh() -> bool:
            return await _price(store, "1.1", "11") == 40000

        await until(fresh, what="fresh image applied")
    finally:
        await _end(stop, task, fake)
    assert feed.counts.get("bad", 0) == 0


async def test_lag_notices_are_a_metric_not_bad_data(store: Store, tmp_path: Path) -> None:
    """mcm messages with status 503 (with and without pt or market changes) set the
    provider-lagging gauge and count as lag notices, never as bad data; the next mcm
    without it clears the gauge."""
    lag = [{"op": "mcm", "id": 1, "clk": "c2", "status": 503},
           {"op": "mcm", "id": 1, "clk": "c3", "pt": 1100, "status": 503, "ct": "HEARTBEAT"}]
    fake = FakeStream(images=lambda sub: [_image(2.5, "c1"), *lag])
    address = await fake.start()
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(run_adapter(
        "stream", {"address": address, "feed_id": "lag", "metrics_port": port}, store,
        _settings(tmp_path), stop=stop))

    async def metrics() -> str:
        async with aiohttp.ClientSession() as s, s.get(
                f"http://127.0.0.1:{port}/metrics") as r:
            return await r.text()

    async def lagging() -> bool:
        try:
            text = await metrics()
        except aiohttp.ClientError:
            return False
        return 'oddsfeed_ingest_provider_lagging{source="stream:lag"} 1.0' in text

    try:
        await until(lagging, what="lagging gauge")
        text = await metrics()
        assert 'oddsfeed_ingest_provider_lag_notices_total{source="stream:lag"} 2.0' in text
        assert 'oddsfeed_ingest_bad_messages_total{source="stream:lag"}' not in text
        assert await _price(store, "1.1", "11") == 25000
    finally:
        runner = await _end(stop, task, fake)
    assert runner.counts.get("bad", 0) == 0
    assert runner.health()["lag_notices"] == 2


def test_failure_actions() -> None:
    """Each documented error code maps to what the next connection does."""
    assert {c: failure_action(c) for c in (
        "NO_APP_KEY", "INVALID_APP_KEY", "NO_SESSION", "INVALID_SESSION_INFORMATION",
        "NOT_AUTHORIZED", "INVALID_CLOCK", "SUBSCRIPTION_LIMIT_EXCEEDED",
        "MAX_CONNECTION_LIMIT_EXCEEDED", "TIMEOUT", "UNEXPECTED_ERROR")} == {
        "NO_APP_KEY": "fatal", "INVALID_APP_KEY": "fatal", "NO_SESSION": "fatal",
        "INVALID_SESSION_INFORMATION": "fatal", "NOT_AUTHORIZED": "fatal",
        "INVALID_CLOCK": "fresh_image", "SUBSCRIPTION_LIMIT_EXCEEDED": "limit",
        "MAX_CONNECTION_LIMIT_EXCEEDED": "limit", "TIMEOUT": "retry",
        "UNEXPECTED_ERROR": "retry"}
