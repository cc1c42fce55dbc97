"""Fuzzing the HTTP API: schemathesis cases from /openapi.json (valid and invalid) and
hypothesis-made bodies, against a real server. Invariant (h11's style): every request gets
a documented answer below 500, and a rejected request (4xx) changes nothing in the store."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from oddsfeed.api.app import build_app
from oddsfeed.api.openapi import openapi_document
from oddsfeed.store import Store

from .conftest import ALL, BODY, api_settings, mint, serve

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck),
                database=None)


class ServerThread:
    """The real app on its own event loop in a thread, so sync fuzzers can call it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        self.store, self.runner, self.port = asyncio.run_coroutine_threadsafe(
            self._start(), self.loop).result(10)
        return self

    async def _start(self) -> tuple[Store, Any, int]:
        store = await Store.connect(self.url)
        settings_ = api_settings(self.url, **{"api.max_body_bytes": 16384})
        runner, port = await serve(build_app(settings_, store))
        return store, runner, port

    async def _stop(self) -> None:
        await self.runner.cleanup()
        await self.store.close()

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def snapshot(r: redis.Redis) -> dict[bytes, Any]:
    """Every key and value of the store, except idempotency records and the risk signals
    (not market state; the risk recorder writes them a moment after an earlier validation's
    answer, so they may land during a later request)."""
    out: dict[bytes, Any] = {}
    for key in sorted(r.keys("*")):
        if key.startswith((b"of:idem:", b"of:risk:", b"of:{rdue:")):
            continue
        kind = r.type(key)
        out[key] = {b"string": r.get, b"hash": r.hgetall, b"set": r.smembers,
                    b"stream": lambda k: r.xrange(k)}[kind](key)
    return out


@pytest.fixture
def server(valkey_url: str) -> Iterator[tuple[ServerThread, redis.Redis, requests.Session]]:
    """A running app on an emptied Valkey, a sync Redis client and an authorised session."""
    r = redis.Redis.from_url(valkey_url)
    r.flushall()
    with ServerThread(valkey_url) as srv, requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {mint(ALL)}"
        yield srv, r, http
    r.close()


def _seed(http: requests.Session, base: str) -> None:
    """Keep a market m1 (in play, so validations exercise the delay path cheaply)."""
    if http.get(f"{base}/v1/markets/m1").status_code == 404:
        res = http.put(f"{base}/v1/markets/m1", json={**BODY, "bet_delay_ms": 0})
        assert res.status_code == 201, res.text


def _checked(status: int, before: dict[bytes, Any], r: redis.Redis, what: Any) -> None:
    assert status < 500, what
    if status >= 400:
        assert snapshot(r) == before, what


def test_schemathesis_cases_from_the_openapi_document(
        server: tuple[ServerThread, redis.Redis, requests.Session]) -> None:
    """Valid and invalid cases generated from /openapi.json never get a 5xx, answers match
    their documented status, content type and schema, and a 4xx changes nothing."""
    srv, r, http = server
    base = f"http://127.0.0.1:{srv.port}"
    assert http.get(f"{base}/openapi.json").status_code == 404  # admin port only
    doc = json.loads(json.dumps(openapi_document()))
    for path in ("/metrics", "/openapi.json", "/v1/demo/token"):
        del doc["paths"][path]  # not on the API port (demo: only under `oddsfeed run`)
    schema = schemathesis.openapi.from_dict(doc)
    auth = {"Authorization": http.headers["Authorization"]}
    strategy = (schema.as_strategy(GenerationMode.POSITIVE, headers=auth)
                | schema.as_strategy(GenerationMode.NEGATIVE, headers=auth)
                | schema.as_strategy(GenerationMode.POSITIVE, headers=auth,
                                     path_parameters={"id": "m1"})
                | schema.as_strategy(GenerationMode.NEGATIVE, headers=auth,
                                     path_parameters={"id": "m1"}))
    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance]

    @FUZZ
    @given(case=strategy)
    def run(case: Any) -> None:
        _seed(http, base)
        before = snapshot(r)
        response = case.call(base_url=base, session=http, timeout=10)
        _checked(response.status_code, before, r, case.as_curl_command())
        case.validate_response(response, checks=checks)

    run()


SCALARS = (st.none() | st.booleans() | st.integers(-(10**20), 10**20)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
           | st.sampled_from(["5/2", "+150", "-200", "evens", "open", "settled", "removed",
                              "m1", "h", "exact", "better", "any"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["name", "price", "point", "status", "h", "a", "decimal", "malay", "market",
                     "selection", "legs", "accept", "updates", "event", "sport", "in_play",
                     "bet_delay_ms", "selections", "ts", "kind", "version", "epoch", "x"]),
    inner, max_size=5), max_leaves=15)
NEAR_VALID = st.fixed_dictionaries({}, optional={
    "event": SCALARS, "sport": SCALARS, "name": SCALARS, "status": SCALARS,
    "in_play": SCALARS, "bet_delay_ms": SCALARS, "ts": SCALARS,
    "selections": st.dictionaries(st.sampled_from(["h", "a", "bad id", ""]), VALUES,
                                  max_size=3)})
ROUTES = st.sampled_from([("PUT", "/v1/markets/m1"), ("PATCH", "/v1/markets/m1"),
                          ("PUT", "/v1/markets/m2"), ("POST", "/v1/odds"),
                          ("POST", "/v1/bets/validate"), ("PUT", "/v1/markets/bad%20id"),
                          ("DELETE", "/v1/markets/zz")])


def test_hypothesis_bodies(server: tuple[ServerThread, redis.Redis, requests.Session]) -> None:
    """Random JSON bodies (and raw bytes) on every write and validation route never get a
    5xx, and a 4xx leaves the store exactly as it was."""
    srv, r, http = server
    base = f"http://127.0.0.1:{srv.port}"
    wrapped = st.one_of(NEAR_VALID, VALUES,
                        st.builds(lambda u: {"updates": u}, st.lists(NEAR_VALID | VALUES,
                                                                     max_size=3)),
                        st.builds(lambda legs, a: {"legs": legs, "accept": a},
                                  st.lists(VALUES, max_size=3), SCALARS))
    raw = st.binary(max_size=64).map(lambda b: ("raw", b))

    @FUZZ
    @given(route=ROUTES, body=wrapped | raw, key=st.none() | st.sampled_from(["k1", "k2"]))
    def run(route: tuple[str, str], body: Any, key: str | None) -> None:
        _seed(http, base)
        before = snapshot(r)
        data = body[1] if isinstance(body, tuple) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Idempotency-Key"] = key
        res = http.request(route[0], base + route[1], data=data, headers=headers, timeout=10)
        _checked(res.status_code, before, r, (route, body, res.text[:300]))
        if res.status_code >= 400:
            assert res.headers["Content-Type"].startswith("application/problem+json")
            assert res.json()["status"] == res.status_code

    run()
