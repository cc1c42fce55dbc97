"""Published deltas on the fan-out's slow paths: conflation and a held item's release decode
them only there, and send what plain deltas would."""

from __future__ import annotations

import asyncio

import msgpack
import pytest

from oddsfeed.core import wire
from oddsfeed.core.book import Delta
from oddsfeed.core.model import MarketUpdate
from oddsfeed.core.session import Outbox
from oddsfeed.fanout.client import Client
from oddsfeed.fanout.delivery import deliver
from oddsfeed.store import LiveDelta, Store, decode_payload, live_delta
from oddsfeed.store.codec import market_channel
from oddsfeed.worker import Worker

from .builders import create, price
from .conftest import ws_url
from .mirror import Mirror, wait_until

MID = "m.live"


@pytest.fixture
async def published(valkey_url: str) -> list[bytes]:
    """What the store published for a market created then changed four times (a price,
    a suspension, a new selection with a line, a reopening)."""
    store = await Store.connect(valkey_url)
    await store.delete(MID)
    got: list[bytes] = []
    bus = store.bus(lambda kind, ident, data: got.append(data))
    await bus.start()
    await bus.subscribe_market(MID)
    await store.apply(create(MID))
    for update in (price(MID, 26000), MarketUpdate(market=MID, fields={"status": "suspended"}),
                   MarketUpdate(market=MID, selections={"x": {"name": "Ünder \"2.5\"",
                                                             "price": 19999, "point": 2.5}}),
                   MarketUpdate(market=MID, fields={"status": "open"})):
        await store.apply(update)
    deadline = asyncio.get_running_loop().time() + 5
    while len(got) < 5 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.005)
    await bus.stop()
    await store.close()
    assert len(got) == 5
    return got[1:]


def _outbox(high_water: int) -> Outbox:
    return Outbox(encoding=wire.JSON, high_water_bytes=high_water, max_bytes=1 << 20,
                  max_lag_s=60)


async def test_conflation_of_published_deltas(published: list[bytes]) -> None:
    """A queue of published deltas past its high-water mark conflates into the messages a
    queue of the same deltas decoded conflates into."""
    queues = []
    for kind in ("published", "plain"):
        outbox = _outbox(high_water=10)
        for raw in published:
            d = live_delta(MID, raw) if kind == "published" else decode_payload(raw)[0]
            assert isinstance(d, Delta)
            out = d.out if isinstance(d, LiveDelta) else wire.delta(d)
            outbox.push(out, now=0.0, market=MID, delta=d)
        assert outbox.conflations
        queues.append([wire.decode_message(p, wire.JSON) for p in outbox.take(10)])
    assert queues[0] == queues[1]
    assert len(queues[0]) < len(published)


async def test_released_published_delta_keeps_its_bytes(published: list[bytes]) -> None:
    """A published delta handed over without its message (a held item's release) is sent
    as the bytes the store published, not decoded and encoded again."""
    d = live_delta(MID, published[0])
    assert isinstance(d, LiveDelta)
    client = Client(1, wire.JSON, _outbox(high_water=1 << 16))
    client.pos[MID] = (d.epoch, d.base)
    assert deliver(client, MID, d)
    assert client.pos[MID] == (d.epoch, d.version)
    (payload,) = client.outbox.take(10)
    assert payload is d.out.payload(wire.JSON)
    assert d._full is None  # nothing read its members


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_stored_form_delta_still_delivered(worker: Worker, encoding: str) -> None:
    """A delta published in its stored form (msgpack, prices in ticks: a script from before
    the published payload) still reaches subscribers, with the same message."""
    store = worker.store
    await store.apply(create(MID))
    client = await Mirror.open(ws_url(worker), encoding)
    try:
        await client.request({"op": "subscribe", "markets": [MID]})
        await wait_until(lambda: MID in client.markets)
        market = client.markets[MID]
        stored = Delta(market=MID, epoch=market.epoch, version=market.version + 1,
                       base=market.version, ts=7, sel={"h": {"price": 25001}})
        payload = msgpack.packb({**stored.to_store(), "t": 1})
        await store.client.execute_command(store.publish_command, market_channel(MID), payload)
        await wait_until(lambda: client.ops("delta"))
        (got,) = client.ops("delta")
        assert got == wire.decode_message(wire.delta(stored).payload(encoding), encoding)
        client.check_clean()
    finally:
        await client.close()
