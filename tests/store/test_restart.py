"""The store killed and started again empty: the bus reconnects, says so, and delivers."""

from __future__ import annotations

import asyncio
from typing import Any

from oddsfeed.core.book import Created
from oddsfeed.core.model import MarketUpdate
from oddsfeed.embedded import EmbeddedValkey, free_port
from oddsfeed.store import Store, decode_payload


async def wait_for(cond: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_bus_reconnects_after_restart_and_epoch_is_new() -> None:
    """After a restart the bus calls on_reconnect, resubscribes, and a re-created market
    has a new epoch."""
    port = free_port()
    server = EmbeddedValkey(port=port).start()
    store = await Store.connect(server.url)
    reconnects: list[int] = []
    got: list[Any] = []

    async def on_reconnect() -> None:
        reconnects.append(1)

    bus = store.bus(lambda k, i, d: got.append(decode_payload(d)[0]), on_reconnect)
    try:
        await bus.start()
        await bus.subscribe_market("m1")
        up = MarketUpdate(market="m1", fields={"event": "e", "sport": "s", "name": "n"},
                          create=True)
        first = await store.apply(up)
        assert isinstance(first, Created)
        await wait_for(lambda: len(got) == 1)
        server.stop()
        await wait_for(lambda: not bus.connected)
        server = EmbeddedValkey(port=port).start()
        await wait_for(lambda: reconnects == [1] and bus.connected)
        second = await store.apply(up)
        assert isinstance(second, Created)
        assert second.market.epoch != first.market.epoch
        await wait_for(lambda: len(got) == 2)
    finally:
        await bus.stop()
        await store.close()
        server.stop()


async def test_bus_uses_the_store_credentials() -> None:
    """On a password-protected server the bus authenticates like the store and delivers."""
    with EmbeddedValkey() as server:
        admin = server.client()
        admin.config_set("requirepass", "s3cret")
        admin.close()
        url = f"redis://:s3cret@127.0.0.1:{server.port}"
        store = await Store.connect(url)
        got: list[Any] = []
        bus = store.bus(lambda k, i, d: got.append(decode_payload(d)[0]))
        try:
            await bus.start()
            await bus.subscribe_market("m1")
            await store.apply(MarketUpdate(market="m1", create=True,
                                           fields={"event": "e", "sport": "s", "name": "n"}))
            await wait_for(lambda: len(got) == 1)
            assert bus.connected
            assert bus.reconnects == 0
        finally:
            await bus.stop()
            await store.close()
