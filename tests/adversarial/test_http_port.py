"""The client-facing HTTP port of a real worker under abuse: slowloris connections, a
connection flood, the admin surface and banners, held validations and large listings."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from oddsfeed.embedded import free_port
from oddsfeed.worker import Worker
from tests.api.conftest import BODY, api_settings, mint


@pytest.fixture
async def worker(valkey_url: str, redis_client: Any
                 ) -> AsyncIterator[Callable[..., Any]]:
    """A factory of real workers (store, fan-out, HTTP and admin ports) on the emptied
    session Valkey; settings overrides as dotted keys."""
    stack: list[Worker] = []

    async def make(**overrides: Any) -> Worker:
        settings = api_settings(valkey_url, **{"server.ws_port": 0, "server.http_port": 0,
                                               **overrides})
        w = Worker(settings, valkey_url, reuse_port=False)
        await w.__aenter__()
        stack.append(w)
        return w

    try:
        yield make
    finally:
        for w in reversed(stack):
            await w.__aexit__(None, None, None)


async def _closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await reader.read()


async def test_partial_headers_are_closed_and_connections_capped(
        worker: Callable[..., Any]) -> None:
    """Connections that send half a request head are closed within api.header_timeout_s;
    past api.max_connections a new connection gets a 503 and is closed at once, and the
    port serves again once the slow ones are gone."""
    w = await worker(**{"api.header_timeout_s": 1.0, "api.max_connections": 20})
    conns = []
    for _ in range(20):
        reader, writer = await asyncio.open_connection("127.0.0.1", w.http_port)
        writer.write(b"GET /v1/markets HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        conns.append((reader, writer))
    _wait_open = time.monotonic() + 5
    while w.listener.open < 20:
        assert time.monotonic() < _wait_open, w.listener.open
        await asyncio.sleep(0.01)
    reader, writer = await asyncio.open_connection("127.0.0.1", w.http_port)
    async with asyncio.timeout(5):
        refused = await _closed(reader)
    writer.close()
    assert refused.startswith(b"HTTP/1.1 503 ")
    assert b"Retry-After: 1" in refused
    started = time.monotonic()
    async with asyncio.timeout(5):
        leftovers = await asyncio.gather(*(_closed(r) for r, _ in conns))
    assert time.monotonic() - started < 3.0  # 1 s deadline, with slack for a busy machine
    assert all(b"200 OK" not in data for data in leftovers)
    for _, wr in conns:
        wr.close()
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{w.http_port}/healthz") as r:
        assert r.status == 200


async def test_slow_body_is_408(worker: Callable[..., Any]) -> None:
    """A body that stops arriving is answered 408 within api.body_timeout_s and nothing
    is written."""
    w = await worker(**{"api.body_timeout_s": 0.5})
    reader, writer = await asyncio.open_connection("127.0.0.1", w.http_port)
    writer.write(b"PUT /v1/markets/m1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer " + mint().encode() + b"\r\n"
                 b"Content-Length: 500\r\n\r\n{\"event\": ")
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    assert head.startswith(b"HTTP/1.1 408 ")
    assert await w.store.get("m1") is None


async def test_metrics_on_the_admin_port_only_and_no_banner(worker: Callable[..., Any]) -> None:
    """With an admin port, /metrics and /openapi.json answer there (loopback by default) and
    404 on the API port, and no response names a library or version in Server."""
    w = await worker(**{"server.admin_port": 0})
    assert w.settings.server.admin_host == "127.0.0.1"
    assert w.admin_port not in (0, w.http_port)
    api, admin = f"http://127.0.0.1:{w.http_port}", f"http://127.0.0.1:{w.admin_port}"
    async with aiohttp.ClientSession() as http:
        for path in ("/metrics", "/openapi.json"):
            async with http.get(api + path) as r:
                assert r.status == 404
                assert r.headers["Server"] == "oddsfeed"
            async with http.get(admin + path) as r:
                assert r.status == 200
                assert r.headers["Server"] == "oddsfeed"
        for path in ("/healthz", "/v1/markets", "/nope"):
            async with http.get(api + path) as r:
                assert r.headers["Server"] == "oddsfeed", path


async def test_metrics_on_the_api_port_by_default(worker: Callable[..., Any]) -> None:
    """Without an admin port, /metrics answers on the API port, where the contract lists it."""
    w = await worker()
    assert w.settings.server.admin_port is None
    assert w.admin_port == w.http_port
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{w.http_port}/metrics") as r:
        assert r.status == 200
        assert r.headers["Server"] == "oddsfeed"


async def test_admin_port_equal_to_http_port_serves_metrics_there(
        worker: Callable[..., Any]) -> None:
    """An operator who sets server.admin_port to server.http_port gets /metrics on the API
    port (as protocol.md's contract table lists it) and no second listener."""
    port = free_port()
    w = await worker(**{"server.http_port": port, "server.admin_port": port})
    assert w.admin_port == w.http_port == port
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{port}/metrics") as r:
        assert r.status == 200
        assert "oddsfeed_http_requests_total" in await r.text()


@pytest.mark.parametrize("raw", [b"GARBAGE\r\n\r\n",
                                 b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",
                                 b"GET / HTTP/1.1\r\nX: " + b"b" * 9000 + b"\r\n\r\n"])
async def test_malformed_requests_get_400_without_banner_or_traceback(
        worker: Callable[..., Any], raw: bytes, caplog: pytest.LogCaptureFixture) -> None:
    """A malformed request line, an overlong one or an overlong header gets aiohttp's 400
    with Server: oddsfeed, and is logged as a warning, never an error with a traceback."""
    w = await worker()
    caplog.set_level(logging.WARNING)
    reader, writer = await asyncio.open_connection("127.0.0.1", w.http_port)
    writer.write(raw)
    async with asyncio.timeout(5):
        answer = await reader.read()
    writer.close()
    assert answer.split(b" ", 2)[1] == b"400"
    assert b"\r\nServer: oddsfeed\r\n" in answer
    assert b"aiohttp" not in answer
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_validation_cap_answers_503_with_retry_after(worker: Callable[..., Any]) -> None:
    """With api.max_validations in-play validations held for their bet delay, one more is
    503 with Retry-After (nothing queued), and a slip is accepted again once they answer."""
    w = await worker(**{"api.max_validations": 2})
    base = f"http://127.0.0.1:{w.http_port}"
    headers = {"Authorization": f"Bearer {mint()}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.put(f"{base}/v1/markets/live", json={
                **BODY, "in_play": True, "bet_delay_ms": 4000}) as r:
            assert r.status == 201
        async with http.put(f"{base}/v1/markets/pre", json=BODY) as r:
            assert r.status == 201

        async def validate(market: str) -> tuple[int, Any, str | None]:
            async with http.post(f"{base}/v1/bets/validate", json={"legs": [
                    {"market": market, "selection": "h", "price": 3.5}]}) as r:
                return r.status, await r.json(), r.headers.get("Retry-After")

        # Three held at once: whichever arrives third finds two in progress, in any order.
        answers = await asyncio.gather(*(validate("live") for _ in range(3)))
        assert sorted(status for status, _, _ in answers) == [200, 200, 503]
        _, body, retry = next(a for a in answers if a[0] == 503)
        assert retry == "1"
        assert body["title"] == "too many validations"
        assert (await validate("pre"))[0] == 200


async def test_markets_are_paginated(worker: Callable[..., Any]) -> None:
    """GET /v1/markets pages with limit and cursor: every market once, in id order, a
    next_cursor on every page but the last; a limit over api.max_page_size, 0, a
    non-ASCII digit or a bad cursor is 400."""
    w = await worker(**{"api.max_page_size": 10})
    base = f"http://127.0.0.1:{w.http_port}"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {mint()}"}) as http:
        ids = [f"m{i:02d}" for i in range(25)]
        for mid in ids:
            async with http.put(f"{base}/v1/markets/{mid}", json=BODY) as r:
                assert r.status == 201
        got, cursor, pages = [], None, 0
        while True:
            params = {"limit": "7", **({"cursor": cursor} if cursor else {})}
            async with http.get(f"{base}/v1/markets", params=params) as r:
                page = await r.json()
            pages += 1
            got += [m["id"] for m in page["markets"]]
            cursor = page.get("next_cursor")
            if cursor is None:
                break
        assert (got, pages) == (ids, 4)
        async with http.get(f"{base}/v1/markets") as r:  # default: the max page
            page = await r.json()
        assert (len(page["markets"]), page["next_cursor"]) == (10, "m09")
        for bad in ({"limit": "11"}, {"limit": "0"}, {"limit": "²"}, {"cursor": "a b"}):
            async with http.get(f"{base}/v1/markets", params=bad) as r:
                assert r.status == 400, bad
