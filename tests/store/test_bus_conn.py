"""The bus's own pub/sub connection lost while the store stays up: it is noticed from the
connection itself (the store still answers pings), reported, and the bus resubscribes."""

from __future__ import annotations

from typing import Any

from oddsfeed.core.model import MarketUpdate
from oddsfeed.embedded import EmbeddedValkey
from oddsfeed.store import Store, decode_payload

from .test_restart import wait_for


def change(i: int) -> MarketUpdate:
    return MarketUpdate(market="m1", fields={"name": f"n{i}"})


async def test_killed_pubsub_connection_is_reported_and_resubscribed() -> None:
    """CLIENT KILL of the pub/sub connection calls on_lost and on_reconnect, and the next
    publications of the subscribed market arrive again, several in one read included."""
    with EmbeddedValkey() as server:
        store = await Store.connect(server.url)
        got: list[Any] = []
        lost: list[int] = []
        reconnects: list[int] = []

        async def on_reconnect() -> None:
            reconnects.append(1)

        bus = store.bus(lambda k, i, d: got.append(decode_payload(d)[0]), on_reconnect,
                        lambda: lost.append(1))
        admin = server.client()
        try:
            await bus.start()
            await bus.subscribe_market("m1")
            await store.apply(MarketUpdate(market="m1", create=True,
                                           fields={"event": "e", "sport": "s", "name": "n"}))
            await wait_for(lambda: len(got) == 1)
            assert admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub") >= 1
            await wait_for(lambda: lost == [1] and reconnects == [1] and bus.connected)
            await store.apply_many([change(i) for i in range(50)])
            await wait_for(lambda: len(got) == 51)
            assert [d.version for d in got[1:]] == list(range(2, 52))
        finally:
            admin.close()
            await bus.stop()
            await store.close()
