"""The UOF adapter end to end on a real RabbitMQ broker: a fake provider publishes XML in
the shape of the public UOF samples on a topic exchange, `run_adapter("uof", ...)` consumes
it into the store, and the tests read the markets back from the store."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from structlog.testing import capture_logs

from oddsfeed.core.model import Market
from oddsfeed.settings import load_settings
from oddsfeed.store import Store
from oddsfeed_ingest.main import run_adapter
from oddsfeed_ingest.runner import FeedRunner

from ..conftest import until
from .broker import Broker

HERE = Path(__file__).parent
XML = HERE / "xml"
MAPPING = HERE / "mapping.toml"
EVENT = "m16807109"
M1X2, TOTAL, AH, CORNERS = (f"{EVENT}:1x2", f"{EVENT}:total:2.5", f"{EVENT}:ah-0.5",
                            f"{EVENT}:corners:9.5")
ODDS_KEY = "hi.-.live.odds_change.1.sr:match.16807109.-"
STOP_KEY = "hi.-.live.bet_stop.1.sr:match.16807109.-"
SETTLE_KEY = "lo.-.live.bet_settlement.1.sr:match.16807109.-"
CANCEL_KEY = "lo.-.live.bet_cancel.1.sr:match.16807109.-"
ALIVE_KEY = "-.-.-.alive.-.-.-.-"
SNAPSHOT = b'<snapshot_complete request_id="1" timestamp="1700000000000" product="1"/>'


def xml(name: str) -> bytes:
    return (XML / f"{name}.xml").read_bytes()


class Provider:
    """A fake UOF provider: publishes on its own topic exchange of the real broker, with
    publisher confirms and ``mandatory`` (an unroutable message raises)."""

    def __init__(self, url: str, exchange: str = "") -> None:
        self.url = url
        self.exchange_name = exchange or f"unifiedfeed-{uuid.uuid4().hex[:8]}"

    async def open(self) -> None:
        self.connection = await aio_pika.connect(self.url)
        self.channel = await self.connection.channel(on_return_raises=True)
        self.exchange = await self.channel.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)

    async def close(self) -> None:
        await self.exchange.delete()
        await self.connection.close()

    async def publish(self, routing_key: str, body: bytes) -> None:
        await self.exchange.publish(aio_pika.Message(body, content_type="text/xml"),
                                    routing_key=routing_key, mandatory=True)

    async def wait_bound(self, timeout_s: float = 20.0) -> None:
        """Wait until a consumer's queue is bound (a snapshot_complete is routed)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                await self.publish("-.-.-.snapshot_complete.-.-.-.-", SNAPSHOT)
                return
            except aio_pika.exceptions.DeliveryError:
                assert time.monotonic() < deadline, "the adapter never bound its queue"
                await asyncio.sleep(0.05)



@pytest.fixture
async def provider(rabbitmq: Broker) -> AsyncIterator[Provider]:
    """A fake provider with a fresh exchange on the session broker."""
    p = Provider(rabbitmq.url)
    await p.open()
    try:
        yield p
    finally:
        await p.close()


class Adapter:
    """`run_adapter("uof", ...)` as a task, stopped at the end of the test."""

    def __init__(self, store: Store, tmp_path: Path, provider: Provider,
                 **opts: Any) -> None:
        settings = load_settings(None, {}, {"ingest.mapping_file": str(tmp_path / "none.toml"),
                                            "ingest.staleness_s": 600})
        self.stop = asyncio.Event()
        self.task: asyncio.Task[FeedRunner] = asyncio.create_task(run_adapter(
            "uof", {"amqp_url": provider.url, "exchange": provider.exchange_name,
                    "uof_mapping": str(MAPPING), "producer_timeout": 30.0, **opts},
            store, settings, stop=self.stop))

    async def close(self) -> FeedRunner:
        self.stop.set()
        return await asyncio.wait_for(self.task, 15)


async def market(store: Store, mid: str) -> Market | None:
    return await store.get(mid)


async def status_is(store: Store, mid: str, status: str) -> bool:
    m = await store.get(mid)
    return m is not None and m.status == status


async def producer_back(provider: Provider, store: Store, what: str) -> None:
    """The producer's alive says it is up again and its next odds_change arrives: the
    markets it had suspended reopen."""
    await provider.publish(ALIVE_KEY, xml("alive").replace(b"1700000002000",
                                                           b"1700000008000"))
    await provider.publish(ODDS_KEY, xml("odds_change_3"))
    await until(lambda: status_is(store, M1X2, "open"), what=what)
    assert await status_is(store, CORNERS, "open")


async def test_odds_change_bet_stop_settlement_and_cancel(
        store: Store, provider: Provider, tmp_path: Path) -> None:
    """odds_change creates and updates mapped markets (unmapped ones skipped), bet_stop
    suspends a group or the whole event at once, the next odds_change reopens, and
    bet_settlement / bet_cancel settle and close."""
    adapter = Adapter(store, tmp_path, provider)
    await provider.wait_bound()
    await provider.publish(ODDS_KEY, xml("odds_change"))
    await until(lambda: status_is(store, CORNERS, "open"), what="markets created")
    m = await market(store, M1X2)
    assert m is not None
    assert (m.event, m.sport, m.name, m.kind, m.in_play) == (
        EVENT, "soccer", "Match result", "1x2", True)
    assert {k: (s.price, s.status) for k, s in m.selections.items()} == {
        "home": (24500, "active"), "draw": (31000, "active"), "away": (29000, "active")}
    total = await market(store, TOTAL)
    assert total is not None
    assert total.name == "Total goals 2.5"
    assert {k: (s.price, s.point) for k, s in total.selections.items()} == {
        "over": (18500, 2.5), "under": (19500, 2.5)}
    ah = await market(store, AH)
    assert ah is not None
    assert {k: s.point for k, s in ah.selections.items()} == {
        "home": -0.5, "away": 0.5}
    assert len(await store.list_markets()) == 4  # market 999 is not in the mapping

    await provider.publish(ODDS_KEY, xml("odds_change_2"))
    await until(lambda: status_is(store, AH, "closed"), what="handicap deactivated")
    m = await market(store, M1X2)
    assert m is not None
    assert m.status == "open"
    assert {k: (s.price, s.status) for k, s in m.selections.items()} == {
        "home": (26000, "active"), "draw": (30000, "active"), "away": (29000, "suspended")}
    assert await status_is(store, TOTAL, "suspended")

    await provider.publish(STOP_KEY, xml("bet_stop_corners"))
    await until(lambda: status_is(store, CORNERS, "suspended"), what="corners stopped")
    assert await status_is(store, M1X2, "open")  # not in the "corner" group

    await provider.publish(ODDS_KEY, xml("odds_change_3"))
    await until(lambda: status_is(store, CORNERS, "open"), what="corners reopened")
    assert await status_is(store, TOTAL, "open")
    await provider.publish(STOP_KEY, xml("bet_stop").replace(b"1700000006000",
                                                             b"1700000009500"))
    await until(lambda: status_is(store, CORNERS, "suspended"), what="event stopped")
    for mid in (M1X2, TOTAL):
        assert await status_is(store, mid, "suspended")
    assert await status_is(store, AH, "closed")  # a deactivated market stays closed

    await provider.publish(SETTLE_KEY, xml("bet_settlement"))
    await provider.publish(CANCEL_KEY, xml("bet_cancel"))
    await until(lambda: status_is(store, CORNERS, "closed"), what="corners cancelled")
    assert await status_is(store, M1X2, "settled")
    assert await status_is(store, TOTAL, "settled")
    runner = await adapter.close()
    assert runner.counts.get("bad", 0) == 0
    assert runner.counts.get("rejected", 0) == 0


async def test_producer_down_by_subscribed_zero_then_up(
        store: Store, provider: Provider, tmp_path: Path) -> None:
    """alive subscribed=0 suspends the producer's markets at once; its odds stay suspended
    until an alive says it is up, and then each market reopens on its next odds_change."""
    adapter = Adapter(store, tmp_path, provider)
    await provider.wait_bound()
    await provider.publish(ALIVE_KEY, xml("alive"))
    await provider.publish(ODDS_KEY, xml("odds_change"))
    await until(lambda: status_is(store, CORNERS, "open"), what="markets created")
    await provider.publish(ALIVE_KEY, xml("alive_unsubscribed"))
    for mid in (M1X2, TOTAL, AH, CORNERS):
        await until(lambda mid=mid: status_is(store, mid, "suspended"), what=f"{mid} down")

    await provider.publish(ODDS_KEY, xml("odds_change_2"))  # while down: priced, not open
    await until(lambda: status_is(store, AH, "closed"), what="odds applied while down")
    m = await market(store, M1X2)
    assert m is not None
    assert m.status == "suspended"
    assert m.selections["home"].price == 26000

    up = xml("alive").replace(b"1700000002000", b"1700000006500")
    await provider.publish(ALIVE_KEY, up)
    await provider.publish(ODDS_KEY, xml("odds_change_reopen"))
    await until(lambda: status_is(store, M1X2, "open"), what="1x2 reopened")
    assert await status_is(store, CORNERS, "suspended")  # no odds_change for it yet
    assert await status_is(store, TOTAL, "suspended")
    await provider.publish(ODDS_KEY, xml("odds_change_3"))
    await until(lambda: status_is(store, CORNERS, "open"), what="corners reopened")
    await adapter.close()


async def test_producer_down_when_alives_stop(
        store: Store, provider: Provider, tmp_path: Path) -> None:
    """A producer whose alives stop for longer than the timeout is down: its open markets
    are suspended (closed ones stay closed); a new alive and odds_change reopen them."""
    adapter = Adapter(store, tmp_path, provider, producer_timeout=1.0)
    await provider.wait_bound()
    await provider.publish(ALIVE_KEY, xml("alive"))
    await provider.publish(ODDS_KEY, xml("odds_change"))
    await provider.publish(ODDS_KEY, xml("odds_change_2"))
    await until(lambda: status_is(store, AH, "closed"), what="markets created")
    assert await status_is(store, M1X2, "open")
    started = time.monotonic()
    await until(lambda: status_is(store, M1X2, "suspended"), what="alive timeout")
    assert time.monotonic() - started < 5
    assert await status_is(store, CORNERS, "suspended")
    assert await status_is(store, AH, "closed")

    await producer_back(provider, store, "reopened by odds_change")
    await adapter.close()


@pytest.mark.slow
async def test_broker_restart_suspends_then_recovers(
        store: Store, rabbitmq: Broker, tmp_path: Path) -> None:
    """When the broker goes away the producer's alives stop, so its markets are suspended;
    the adapter retries with backoff (no reconnect storm), consumes again once the broker is
    back, and the next alive and odds_change reopen the markets."""
    provider = Provider(rabbitmq.url)
    await provider.open()
    adapter = Adapter(store, tmp_path, provider, producer_timeout=1.0)
    await provider.wait_bound()
    await provider.publish(ALIVE_KEY, xml("alive"))
    await provider.publish(ODDS_KEY, xml("odds_change"))
    await until(lambda: status_is(store, CORNERS, "open"), what="markets created")
    with capture_logs() as logs:
        await asyncio.to_thread(rabbitmq.stop)
        await until(lambda: status_is(store, M1X2, "suspended"), what="suspended while down")
        outage_started = time.monotonic()
        await asyncio.to_thread(rabbitmq.start)
        outage_s = time.monotonic() - outage_started
        # The exchange survives the restart (durable); the provider's connection does not.
        provider = Provider(rabbitmq.url, provider.exchange_name)
        await provider.open()
        await provider.wait_bound(timeout_s=40)
    failed = [e for e in logs if e["event"] == "uof connect failed"]
    # Backoff 0.5 s doubling (jittered x0.5-1.5) up to 30 s: a handful of attempts, where
    # a fixed 0.1 s retry would make dozens.
    assert 1 <= len(failed) <= 3 + outage_s / 2, (len(failed), outage_s)
    await producer_back(provider, store, "reopened after the outage")
    await adapter.close()
    await provider.close()


async def test_bad_xml_is_counted_and_skipped(
        store: Store, provider: Provider, tmp_path: Path) -> None:
    """Malformed XML, an entity-expansion bomb, a DTD, an unknown market status and a bad
    price are counted as bad data and skipped; the good markets around them still apply."""
    bomb = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
            b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
            b'<odds_change product="1" event_id="sr:match:1" timestamp="1">&lol3;</odds_change>')
    external = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
                b'<alive product="1" timestamp="1700000000000">&e;</alive>')
    mixed = (b'<odds_change product="1" event_id="sr:match:16807109" timestamp="1700000001000">'
             b'<odds><market status="7" id="1"><outcome id="1" odds="2.0"/></market>'
             b'<market status="1" id="18" specifiers="total=2.5">'
             b'<outcome id="12" odds="0.5"/></market>'
             b'<market status="1" id="166" specifiers="total=9.5">'
             b'<outcome id="12" odds="1.8"/><outcome id="13" odds="2.0"/></market>'
             b'</odds></odds_change>')
    adapter = Adapter(store, tmp_path, provider)
    await provider.wait_bound()
    for body in (b"<odds_change", b"\xff\xfe not xml", bomb, external,
                 b'<alive product="1"/>', mixed):
        await provider.publish(ODDS_KEY, body)
    await until(lambda: status_is(store, CORNERS, "open"), what="the good market")
    assert await store.get(M1X2) is None
    assert await store.get(TOTAL) is None
    runner = await adapter.close()
    assert runner.counts["bad"] == 7


async def test_routing_keys_select_what_is_consumed(
        store: Store, provider: Provider, tmp_path: Path) -> None:
    """With UOF binding keys for live odds and system messages only, a prematch odds_change
    is not routed to the adapter's queue, and the live one is consumed."""
    adapter = Adapter(store, tmp_path, provider,
                      routing_key=("hi.-.live.#", "-.-.-.alive.#", "-.-.-.snapshot_complete.#"))
    await provider.wait_bound()
    prematch = xml("odds_change").replace(b'product="1"', b'product="3"')
    with pytest.raises(aio_pika.exceptions.DeliveryError):
        await provider.publish("lo.pre.-.odds_change.1.sr:match.16807109.-", prematch)
    await provider.publish(ODDS_KEY, xml("odds_change"))
    await until(lambda: status_is(store, CORNERS, "open"), what="live odds consumed")
    m = await store.get(M1X2)
    assert m is not None
    assert m.in_play  # from the live producer, not the prematch one
    await adapter.close()


async def test_cli_ingest_uof_takes_the_url_from_the_environment(
        valkey_url: str, redis_client: Any, provider: Provider, tmp_path: Path) -> None:
    """`oddsfeed ingest uof` with ODDSFEED_UOF_AMQP_URL consumes into the store, never
    prints the credentials, and stops on SIGTERM."""
    env = {**os.environ, "ODDSFEED_UOF_AMQP_URL": provider.url,
           "ODDSFEED_INGEST__MAPPING_FILE": str(tmp_path / "none.toml")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "oddsfeed", "ingest", "uof", "--redis-url", valkey_url,
         "--exchange", provider.exchange_name, "--uof-mapping", str(MAPPING)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        await provider.wait_bound(timeout_s=60)
        await provider.publish(ODDS_KEY, xml("odds_change"))
        store = await Store.connect(valkey_url)
        try:
            await until(lambda: status_is(store, CORNERS, "open"), what="markets via the CLI")
        finally:
            await store.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(proc.communicate, timeout=20)
    assert proc.returncode == 0, output.decode()[-2000:]
    assert b"guest:guest" not in output
    assert b"uof connected" in output


def test_cli_refused_credentials_stop_with_a_clear_error(
        valkey_url: str, rabbitmq: Broker, tmp_path: Path) -> None:
    """Credentials the real broker refuses stop `oddsfeed ingest uof` at once with a clear
    error (no retry loop that could get an account blocked), without printing them."""
    url = rabbitmq.url.replace("guest:guest", "guest:wr0ng-t0ken")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "oddsfeed", "ingest", "uof", "--redis-url", valkey_url,
         "--uof-mapping", str(MAPPING)],
        env={**os.environ, "ODDSFEED_UOF_AMQP_URL": url,
             "ODDSFEED_INGEST__MAPPING_FILE": str(tmp_path / "none.toml")},
        capture_output=True, timeout=60, check=False)
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 1, output[-2000:]
    assert "refused the credentials" in output
    assert "wr0ng-t0ken" not in output
    assert output.count("uof connect failed") == 0
    assert time.monotonic() - started < 30
