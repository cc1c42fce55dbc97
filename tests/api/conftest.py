"""Fixtures for the HTTP API tests: the real app (build_app) on a real aiohttp server on
127.0.0.1 port 0, over a real Store on the session's embedded Valkey."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
import jwt
import pytest
from aiohttp import web
from websockets.asyncio.client import connect

from oddsfeed.api.app import build_app
from oddsfeed.settings import Settings, load_settings
from oddsfeed.store import Store
from oddsfeed.worker import Worker

SECRET = "api-test-secret-0123456789-0123456789-abcdef"
ALL = "odds:read odds:write bets:validate"
BODY: dict[str, Any] = {
    "event": "e1", "sport": "soccer", "name": "A v B", "kind": "1x2",
    "selections": {"h": {"name": "Home", "price": "5/2"}, "d": {"name": "Draw", "price": 3.4},
                   "a": {"name": "Away", "price": {"american": 150}}}}


def api_settings(url: str, **overrides: Any) -> Settings:
    """Test settings: the given Valkey, the test secret, no anonymous reading."""
    base: dict[str, Any] = {"redis.url": url, "auth.hs256_secret": SECRET,
                            "auth.anonymous_read": False, "api.max_body_bytes": 65536}
    base.update(overrides)
    return load_settings(None, {}, base)


def mint(scope: str = ALL, ttl: int = 600, secret: str = SECRET, sub: str = "desk1",
         **extra: Any) -> str:
    """An HS256 token with the given scopes (any claim can be overridden)."""
    now = int(time.time())
    claims = {"sub": sub, "scope": scope, "exp": now + ttl, "iat": now, **extra}
    return jwt.encode(claims, secret, algorithm="HS256")


@dataclass
class Api:
    """A client of one running app; ``call`` returns (status, parsed body, headers)."""

    session: aiohttp.ClientSession
    base: str
    store: Store
    settings: Settings
    token: str = field(default_factory=mint)
    app: web.Application | None = None  # the running aiohttp app (its keys, e.g. K_RISK)

    async def call(self, method: str, path: str, body: Any = None, *, token: str | None = "",
                   headers: dict[str, str] | None = None, raw: bytes | None = None,
                   ctype: str = "application/json") -> tuple[int, Any, Any]:
        h = dict(headers or {})
        tok = self.token if token == "" else token
        if tok:
            h["Authorization"] = f"Bearer {tok}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else None)
        if data is not None:
            h["Content-Type"] = ctype
        async with self.session.request(method, self.base + path, data=data, headers=h) as r:
            text = await r.text()
            parsed = json.loads(text) if text and r.content_type.endswith("json") else text
            return r.status, parsed, r.headers


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    """Run ``app`` on 127.0.0.1, port 0; returns the runner (clean it up) and the port."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server: Any = site._server
    return runner, int(server.sockets[0].getsockname()[1])


@pytest.fixture
async def make_api(valkey_url: str, redis_client: Any) -> AsyncIterator[Callable[..., Any]]:
    """A factory of running apps on the (emptied) session Valkey, with settings overrides;
    everything it started is stopped after the test."""
    stack: list[Any] = []

    async def make(readiness: Callable[[], bool] | None = None, **overrides: Any) -> Api:
        settings = api_settings(valkey_url, **overrides)
        store = await Store.connect(valkey_url)
        app = build_app(settings, store, readiness=readiness)
        runner, port = await serve(app)
        session = aiohttp.ClientSession()
        stack.append((session, runner, store))
        return Api(session, f"http://127.0.0.1:{port}", store, settings, app=app)

    try:
        yield make
    finally:
        for session, runner, store in reversed(stack):
            await session.close()
            await runner.cleanup()
            await store.close()


@pytest.fixture
async def api(make_api: Callable[..., Any]) -> Api:
    """One running app, anonymous reading off, a token with every scope."""
    return cast(Api, await make_api())


@dataclass
class Live:
    """A whole worker's HTTP base URL, an HTTP session and a JSON WebSocket, both holding a
    token with every scope."""

    base: str
    http: aiohttp.ClientSession
    ws: Any
    store: Store


@contextlib.asynccontextmanager
async def live_worker(valkey_url: str) -> AsyncIterator[Live]:
    """A Worker (fan-out and API) on free ports over ``valkey_url``, its ``hello`` read."""
    settings = api_settings(valkey_url, **{"server.ws_port": 0, "server.http_port": 0})
    token = mint()
    async with Worker(settings, valkey_url, reuse_port=False) as w, \
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http, \
            connect(f"ws://127.0.0.1:{w.ws_port}/ws?token={token}",
                    subprotocols=["oddsfeed.v1.json"]) as ws:  # type: ignore[list-item]
        await next_op(ws, "hello")
        yield Live(f"http://127.0.0.1:{w.http_port}", http, ws, w.store)


async def next_op(ws: Any, op: str) -> dict[str, Any]:
    """The next message ``op`` on ``ws`` (inside batches too), skipping others; fails after
    10 s naming what came instead."""
    seen: list[str] = []
    try:
        async with asyncio.timeout(10):
            while True:
                msg = json.loads(await ws.recv())
                for m in msg["items"] if msg["op"] == "batch" else [msg]:
                    if m["op"] == op:
                        return dict(m)
                    seen.append(m["op"])
    except TimeoutError:
        raise AssertionError(f"no {op} within 10 s; got {seen}") from None
