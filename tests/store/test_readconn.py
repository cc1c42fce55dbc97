"""The store's read connection (oddsfeed.store.readconn) against a real Valkey: outages,
restarts, a hung server, credentials, db and unix socket, many batches in flight."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest
import redis

from oddsfeed.core.errors import StoreError
from oddsfeed.core.model import MarketUpdate
from oddsfeed.embedded import EmbeddedValkey, free_port
from oddsfeed.store import Store
from oddsfeed.store.readconn import ReadBatches

T = TypeVar("T")


def _market(mid: str, price: int = 25000) -> MarketUpdate:
    return MarketUpdate(market=mid, fields={"event": "e", "sport": "s", "name": mid,
                                            "status": "open"},
                        selections={"h": {"name": "H", "price": price}}, create=True)


async def _within(aw: Awaitable[T], seconds: float = 10) -> T:
    # A caller left waiting fails the test here instead of hanging it.
    return await asyncio.wait_for(aw, timeout=seconds)


def _connections(url: str) -> int:
    with redis.Redis.from_url(url) as c:
        return int(c.info("stats")["total_connections_received"])


async def test_single_server_reads_use_the_read_connection(valkey_url: str) -> None:
    """A single-server store with auto_pipeline reads through ReadBatches."""
    store = await Store.connect(valkey_url)
    try:
        assert isinstance(store._reads, ReadBatches)
    finally:
        await store.close()


async def test_killed_mid_batch_then_restarted_the_next_validation_succeeds() -> None:
    """Valkey killed while a batch is out fails its callers at once with a StoreError; once
    it is back on the same port (empty), the next validation reads it again."""
    port = free_port()
    server = EmbeddedValkey(port=port).start()
    store = await Store.connect(server.url, socket_timeout=30)
    try:
        await store.apply(_market("m1"))
        assert (await store.get_for_validation(["m1"]))["m1"] is not None
        os.kill(server.pid, signal.SIGSTOP)  # the batch below is written, never answered
        waiting = [asyncio.ensure_future(store.get_for_validation(["m1"])) for _ in range(20)]
        done, _ = await asyncio.wait(waiting, timeout=0.2)
        assert not done
        os.kill(server.pid, signal.SIGKILL)
        t0 = time.monotonic()
        results = await _within(asyncio.gather(*waiting, return_exceptions=True))
        assert time.monotonic() - t0 < 1.0
        assert all(isinstance(r, StoreError) and "read failed" in str(r) for r in results)
        server.stop()
        with pytest.raises(StoreError, match="read failed: cannot connect"):
            await _within(store.get_for_validation(["m1"]))
        server = EmbeddedValkey(port=port).start()
        assert await _within(store.get_for_validation(["m1"])) == {"m1": None}
        await store.apply(_market("m1"))
        got = await _within(store.get_for_validation(["m1"]))
        assert got["m1"] is not None
        assert got["m1"][0].version == 1
    finally:
        await store.close()
        server.stop()


async def test_a_hung_store_fails_the_waiting_reads_after_the_socket_timeout() -> None:
    """A server that stops answering fails the reads out on it within about two socket
    timeouts; once it answers again, the next read succeeds on a new connection."""
    with EmbeddedValkey() as server:
        store = await Store.connect(server.url, socket_timeout=0.3)
        try:
            await store.apply(_market("m1"))
            assert await store.get("m1") is not None
            os.kill(server.pid, signal.SIGSTOP)
            try:
                t0 = time.monotonic()
                with pytest.raises(StoreError, match=r"did not answer within 0\.3 s"):
                    await _within(store.get_for_validation(["m1"]))
                assert time.monotonic() - t0 < 2.0
            finally:
                os.kill(server.pid, signal.SIGCONT)
            got = await _within(store.get_for_validation(["m1"]))
            assert got["m1"] is not None
        finally:
            await store.close()


async def _wrong_password_error(url: str, server: EmbeddedValkey, auto: bool) -> str:
    """The read error of a store whose password was changed on the server under it."""
    store = await Store.connect(url, auto_pipeline=auto)
    try:
        await store.apply(_market("m1"))
        assert await store.get("m1") is not None
        with redis.Redis.from_url(url) as admin:
            admin.config_set("requirepass", "changed")
        with redis.Redis(host=server.host, port=server.port, password="changed") as admin:
            admin.client_kill_filter(_type="normal", skipme=True)
        error = ""
        for _ in range(3):  # the first read may meet the killed connection's close first
            with pytest.raises(StoreError) as err:
                await _within(store.get_for_validation(["m1"]))
            error = str(err.value)
            if "closed" not in error:
                break
        with redis.Redis(host=server.host, port=server.port, password="changed") as admin:
            admin.config_set("requirepass", "s3cret")
        return error
    finally:
        await store.close()


async def test_a_wrong_password_gives_the_same_error_as_redis_py() -> None:
    """A password the server no longer takes fails a read with the same StoreError on the
    read connection as on redis-py's path, naming the cause and not the password."""
    with EmbeddedValkey() as server:
        with redis.Redis.from_url(server.url) as admin:
            admin.config_set("requirepass", "s3cret")
        url = f"redis://:s3cret@{server.host}:{server.port}"
        ours = await _wrong_password_error(url, server, auto=True)
        theirs = await _wrong_password_error(url, server, auto=False)
    assert ours == theirs
    assert "invalid username-password pair" in ours
    assert "s3cret" not in ours


async def test_reads_go_to_the_urls_db() -> None:
    """A store on db 3 reads db 3's markets through the read connection, not db 0's."""
    with EmbeddedValkey() as server:
        zero = await Store.connect(server.url)
        three = await Store.connect(server.url + "/3")
        try:
            await zero.apply(_market("m1", price=25000))
            await three.apply(_market("m1", price=40000))
            await three.apply(_market("only3"))
            a, b = await _within(asyncio.gather(zero.get("m1"), three.get("m1")))
            assert a is not None
            assert b is not None
            assert (a.selections["h"].price, b.selections["h"].price) == (25000, 40000)
            assert await zero.get("only3") is None
            assert await three.get("only3") is not None
        finally:
            await zero.close()
            await three.close()


async def test_reads_over_a_unix_socket() -> None:
    """A unix:// store reads through the read connection too."""
    with EmbeddedValkey(unix_socket=True) as server:
        store = await Store.connect(server.url)
        try:
            assert isinstance(store._reads, ReadBatches)
            await store.apply(_market("m1"))
            got = await _within(store.get_for_validation(["m1", "nope"]))
            assert got["m1"] is not None
            assert got["nope"] is None
        finally:
            await store.close()


async def test_many_batches_in_flight_on_one_connection() -> None:
    """With no bound on batches in flight, reads of twenty loop turns go out as twenty
    batches on one connection while the server is held, and each caller gets its own
    markets when it answers."""
    with EmbeddedValkey() as server:
        store = await Store.connect(server.url, socket_timeout=30, read_batches_in_flight=0)
        try:
            for i in range(20):
                await store.apply(_market(f"m{i}", price=20000 + i))
            await store.get("m0")  # the read connection is open
            before = _connections(server.url)
            os.kill(server.pid, signal.SIGSTOP)
            try:
                reads: list[asyncio.Future[Any]] = []
                for i in range(20):  # one loop turn each: one batch each
                    reads.append(asyncio.ensure_future(
                        store.get_many([f"m{i}", f"m{(i + 1) % 20}", "absent"])))
                    await asyncio.sleep(0)
                done, _ = await asyncio.wait(reads, timeout=0.1)
                assert not done
            finally:
                os.kill(server.pid, signal.SIGCONT)
            answers = await _within(asyncio.gather(*reads))
            assert _connections(server.url) == before + 1  # the count's own connection
        finally:
            await store.close()
    for i, got in enumerate(answers):
        a, b = got[f"m{i}"], got[f"m{(i + 1) % 20}"]
        assert a is not None
        assert b is not None
        assert a.selections["h"].price == 20000 + i
        assert b.selections["h"].price == 20000 + (i + 1) % 20
        assert got["absent"] is None


async def test_a_cancelled_reader_leaves_its_batch_to_the_others(valkey_url: str) -> None:
    """A caller cancelled while its batch is out drops out; the others get their values."""
    store = await Store.connect(valkey_url)
    try:
        await store.apply(_market("c1"))
        a = asyncio.ensure_future(store.get("c1"))
        b = asyncio.ensure_future(store.get("c1"))
        await asyncio.sleep(0)
        a.cancel()
        got = await _within(b)
        assert got is not None
        assert got.id == "c1"
        assert a.cancelled()
    finally:
        await store.close()


async def test_a_closed_store_refuses_reads(valkey_url: str) -> None:
    """After close, a read fails at once with "the store is closed"."""
    store = await Store.connect(valkey_url)
    await store.get("x")
    await store.close()
    with pytest.raises(StoreError, match="the store is closed"):
        await store.get_for_validation(["x"])


async def test_reads_issued_while_the_connection_fails_to_open_fail_too() -> None:
    """With the store down, reads issued over several loop turns while the connection is
    being opened all fail with a StoreError (none is left waiting)."""
    port = free_port()
    server = EmbeddedValkey(port=port).start()
    store = await Store.connect(server.url, socket_timeout=30)
    server.stop()
    try:
        reads = []
        for _ in range(5):
            reads.append(asyncio.ensure_future(store.get_for_validation(["m1"])))
            await asyncio.sleep(0)
        results = await _within(asyncio.gather(*reads, return_exceptions=True), 5)
        assert all(isinstance(r, StoreError) and "read failed" in str(r) for r in results)
    finally:
        await store.close()


def test_tls_keeps_redis_pys_path() -> None:
    """A TLS client gives no read-connection target (its reads stay on redis-py); a plain
    one gives its host, port, db, credentials and timeouts."""
    from redis.asyncio import Redis

    from oddsfeed.store.readconn import target_of

    assert target_of(Redis.from_url("rediss://127.0.0.1:1")) is None
    t = target_of(Redis.from_url("redis://u:pw@127.0.0.1:7000/2", socket_timeout=1.5))
    assert t is not None
    assert (t.host, t.port, t.db, t.username, t.password, t.timeout) == (
        "127.0.0.1", 7000, 2, "u", "pw", 1.5)


async def test_a_cluster_keeps_the_pipeline(valkey_cluster: Any) -> None:
    """A cluster store reads through the auto-pipeline (per node), not a read connection."""
    from oddsfeed.store.autopipe import AutoPipeline

    store = await Store.connect(valkey_cluster.url, cluster=True)
    try:
        assert isinstance(store._reads, AutoPipeline)
    finally:
        await store.close()
