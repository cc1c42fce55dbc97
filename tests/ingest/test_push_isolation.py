"""The push endpoint under hostile or failing conditions: a second pusher with a huge seq
cannot freeze a market for another, an update not applied says so (result and metrics),
deeply nested bodies are a 400, and a store that is down is a fast 503 with Retry-After."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import REGISTRY

from oddsfeed.auth import Authenticator
from oddsfeed.embedded import EmbeddedValkey
from oddsfeed.freeport import free_port
from oddsfeed.settings import Settings, load_settings
from oddsfeed.store import Store
from oddsfeed_ingest.main import run_adapter

from .conftest import until

SECRET = "push-isolation-secret-0123456789abcdef"
CREATE = {"market": "iso1", "event": "e", "sport": "s", "name": "n",
          "selections": {"h": {"name": "H", "price": 2.0}}}


def _settings(tmp_path: Path) -> Settings:
    return load_settings(None, {}, {"auth.hs256_secret": SECRET,
                                    "ingest.mapping_file": str(tmp_path / "none.toml")})


def _token(settings: Settings, sub: str) -> str:
    return Authenticator(settings.auth).mint(sub, ["odds:write"], ttl_s=600,
                                             now_s=int(time.time()))


async def _push_endpoint(store: Store, settings: Settings, feed_id: str
                         ) -> AsyncIterator[str]:
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(run_adapter("push", {"port": port, "feed_id": feed_id}, store,
                                           settings, stop=stop))
    url = f"http://127.0.0.1:{port}/v1/push"

    async def up() -> bool:
        try:
            async with aiohttp.ClientSession() as s, s.post(url) as r:
                return r.status == 401
        except aiohttp.ClientError:
            return False

    await until(up, what="push endpoint up")
    try:
        yield url
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def _post(s: aiohttp.ClientSession, url: str, token: str, body: Any
                ) -> tuple[int, Any, float, str | None]:
    """(status, JSON body, seconds taken, Retry-After) of one POST."""
    t0 = time.monotonic()
    async with s.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as r:
        return (r.status, (await r.json()), time.monotonic() - t0,
                r.headers.get("Retry-After"))


def _metric(source: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("oddsfeed_ingest_messages_total",
                                     {"source": source, "outcome": outcome}) or 0.0


async def test_a_pusher_with_a_huge_seq_cannot_freeze_another(store: Store,
                                                              tmp_path: Path) -> None:
    """Pusher A creates a market and then pushes seq 2^62; pusher B's later seq 5 still
    applies, while A's own seq 10 answers ok: false (out of order, last_seq 2^62) and is
    counted as out_of_order in the metrics."""
    settings = _settings(tmp_path)
    a, b = _token(settings, "desk-a"), _token(settings, "desk-b")
    huge = 2**62
    before = _metric("push:iso", "out_of_order")
    gen = _push_endpoint(store, settings, "iso")
    url = await anext(gen)
    try:
        async with aiohttp.ClientSession() as s:
            status, body, *_ = await _post(s, url, a, {"messages": [
                {**CREATE, "seq": 1},
                {"market": "iso1", "selections": {"h": {"price": 3.0}}, "seq": huge}]})
            assert status == 200
            assert [r["ok"] for r in body["results"]] == [True, True]
            status, body, *_ = await _post(s, url, b, {"messages": [
                {"market": "iso1", "selections": {"h": {"price": 4.0}}, "seq": 5}]})
            assert body["results"] == [{"ok": True, "outcome": "changed"}]
            status, body, *_ = await _post(s, url, a, {"messages": [
                {"market": "iso1", "selections": {"h": {"price": 5.0}}, "seq": 10}]})
            [res] = body["results"]
            assert res["ok"] is False
            assert res["outcome"] == "outoforder"
            assert res["last_seq"] == huge
            assert "out of order" in res["error"]
    finally:
        await gen.aclose()
    m = await store.get("iso1")
    assert m is not None
    assert m.selections["h"].price == 40000
    assert _metric("push:iso", "out_of_order") == before + 1


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000,
                                  b'{"messages": [' + b"{\"a\":" * 50_000 + b"1" + b"}" * 50_000
                                  + b"]}"])
async def test_deeply_nested_json_is_a_400(store: Store, tmp_path: Path, body: bytes) -> None:
    """A body nested too deeply to parse answers 400 (problem JSON), not 500."""
    settings = _settings(tmp_path)
    gen = _push_endpoint(store, settings, "deep")
    url = await anext(gen)
    try:
        async with aiohttp.ClientSession() as s, s.post(url, data=body, headers={
                "Authorization": f"Bearer {_token(settings, 'p')}",
                "Content-Type": "application/json"}) as r:
            assert r.status == 400
            assert (await r.json())["status"] == 400
    finally:
        await gen.aclose()


async def test_store_down_is_a_fast_503_with_retry_after(tmp_path: Path) -> None:
    """With the real Valkey stopped the push endpoint answers 503 with Retry-After within
    a second; once the store is back the same batch applies."""
    server = EmbeddedValkey().start()
    port = int(server.url.rsplit(":", 1)[1])
    store = await Store.connect(server.url, socket_timeout=1.0)
    settings = _settings(tmp_path)
    tok = _token(settings, "p")
    gen = _push_endpoint(store, settings, "down")
    url = await anext(gen)
    try:
        async with aiohttp.ClientSession() as s:
            status, *_ = await _post(s, url, tok, {"messages": [{**CREATE, "seq": 1}]})
            assert status == 200
            server.stop()
            batch = {"messages": [{"market": "iso1", "selections": {"h": {"price": 3.0}},
                                   "seq": 2}]}
            for _ in range(2):
                status, body, took, retry_after = await _post(s, url, tok, batch)
                assert (status, body["status"], retry_after) == (503, 503, "1")
                assert took < 1.0
            server = EmbeddedValkey(port=port).start()
            status, body, *_ = await _post(s, url, tok, {"messages": [{**CREATE, "seq": 3}]})
            assert status == 200
            assert body["results"][0]["ok"] is True
    finally:
        await gen.aclose()
        await store.close()
        server.stop()
