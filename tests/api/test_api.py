"""The HTTP API against a real worker and a real store (protocol.md sections 3-5)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import jwt
import pytest

from oddsfeed.model import MarketUpdate
from oddsfeed.worker import Worker

from ..ws.conftest import SECRET, make_settings

BODY = {"event": "e1", "sport": "soccer", "name": "A v B", "kind": "1x2",
        "selections": {"h": {"name": "Home", "price": "5/2"}, "d": {"name": "Draw", "price": 3.4},
                       "a": {"name": "Away", "price": {"american": 150}}}}


class Api:
    def __init__(self, session: aiohttp.ClientSession, port: int, token: str) -> None:
        self.s, self.base, self.token = session, f"http://127.0.0.1:{port}", token

    async def call(self, method: str, path: str, body: Any = None, *, token: str | None = "",
                   headers: dict[str, str] | None = None, raw: bytes | None = None,
                   ctype: str = "application/json") -> tuple[int, Any, Any]:
        h = dict(headers or {})
        tok = self.token if token == "" else token
        if tok:
            h["Authorization"] = f"Bearer {tok}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            h["Content-Type"] = ctype
        async with self.s.request(method, self.base + path, data=data, headers=h) as r:
            text = await r.text()
            parsed = json.loads(text) if text and r.content_type.endswith("json") else text
            return r.status, parsed, r.headers


def mint(scope: str, ttl: int = 600, secret: str = SECRET, **extra: Any) -> str:
    now = int(time.time())
    claims = {"sub": "desk1", "scope": scope, "exp": now + ttl, "iat": now, **extra}
    return jwt.encode(claims, secret, algorithm="HS256")


ALL = "odds:read odds:write bets:validate"


@pytest.fixture
async def api(valkey_url: str, redis_client: Any) -> Any:
    settings = make_settings(valkey_url, **{"auth.anonymous_read": False,
                                            "api.max_body_bytes": 65536})
    async with Worker(settings, valkey_url, reuse_port=False) as w, aiohttp.ClientSession() as s:
        a = Api(s, w.http_port, mint(ALL))
        a.worker = w  # type: ignore[attr-defined]
        yield a


async def test_put_get_patch_delete(api: Api) -> None:
    """PUT creates (201) with canonical prices, GET reads, PATCH changes, DELETE removes."""
    st, m, h = await api.call("PUT", "/v1/markets/m1", BODY)
    assert st == 201
    assert m["version"] == 1
    assert {k: v["price"] for k, v in m["selections"].items()} == {"h": 3.5, "d": 3.4, "a": 2.5}
    assert h["ETag"] == f'"{m["epoch"]}:1"'
    st, got, _ = await api.call("GET", "/v1/markets/m1")
    assert st == 200
    assert got == m
    st, p, _ = await api.call("PATCH", "/v1/markets/m1",
                              {"status": "suspended", "selections": {"h": {"price": "+300"}}})
    assert st == 200
    assert p["version"] == 2
    assert p["selections"]["h"]["price"] == 4.0
    st, p2, _ = await api.call("PATCH", "/v1/markets/m1", {"status": "suspended"})
    assert st == 200
    assert p2["version"] == 2
    st, lst, _ = await api.call("GET", "/v1/markets?event=e1&status=suspended")
    assert st == 200
    assert [x["id"] for x in lst["markets"]] == ["m1"]
    assert "selections" not in lst["markets"][0]
    st, rep, _ = await api.call("PUT", "/v1/markets/m1", {**BODY, "selections": {
        "h": {"name": "Home", "price": 2}}})
    assert st == 200
    assert set(rep["selections"]) == {"h"}
    assert rep["status"] == "open"
    assert rep["epoch"] == m["epoch"]
    st, _, _ = await api.call("DELETE", "/v1/markets/m1")
    assert st == 204
    st, _prob, h = await api.call("GET", "/v1/markets/m1")
    assert st == 404
    assert h["Content-Type"].startswith("application/problem+json")


@pytest.mark.parametrize(("body", "path"), [
    ({**BODY, "bogus": 1}, "bogus"),
    ({**BODY, "selections": {"h": {"name": "H", "price": 1.0}}}, "selections.h.price"),
    ({**BODY, "selections": {"h": {"name": "H", "price": "abc"}}}, "selections.h.price"),
    ({**BODY, "status": "paused"}, "status"),
    ({**BODY, "bet_delay_ms": 999999}, "bet_delay_ms"),
    ({**BODY, "in_play": "yes"}, "in_play"),
    ({"sport": "soccer", "name": "x"}, "event"),
])
async def test_bad_bodies_name_the_field(api: Api, body: dict[str, Any], path: str) -> None:
    """Invalid bodies are 400 problems naming the field, and nothing is written."""
    st, prob, _ = await api.call("PUT", "/v1/markets/m1", body)
    assert st == 400, prob
    assert path in [e["path"] for e in prob["errors"]], prob
    st, _, _ = await api.call("GET", "/v1/markets/m1")
    assert st == 404


async def test_status_codes(api: Api) -> None:
    """401, 403, 404, 409, 412, 413 and 415 as the contract says."""
    assert (await api.call("GET", "/v1/markets", token=None))[0] == 401
    assert (await api.call("GET", "/v1/markets", token="garbage"))[0] == 401
    assert (await api.call("GET", "/v1/markets", token=mint("odds:read", ttl=-10)))[0] == 401
    assert (await api.call("GET", "/v1/markets", token=mint("odds:read", secret="x" * 40)))[0] == 401
    none_tok = jwt.encode({"sub": "x", "exp": int(time.time()) + 60, "scope": ALL}, None,
                          algorithm="none")
    assert (await api.call("GET", "/v1/markets", token=none_tok))[0] == 401
    assert (await api.call("PUT", "/v1/markets/m1", BODY, token=mint("odds:read")))[0] == 403
    assert (await api.call("PATCH", "/v1/markets/m1", {"name": "x"}))[0] == 404
    st, m, _ = await api.call("PUT", "/v1/markets/m1", BODY)
    assert (await api.call("PUT", "/v1/markets/m1", {**BODY, "sport": "tennis"}))[0] == 409
    st, prob, _ = await api.call("PATCH", "/v1/markets/m1", {"name": "y"},
                                 headers={"If-Match": f'"{m["epoch"]}:7"'})
    assert st == 412
    assert prob["current"]["version"] == 1
    st, ok, _ = await api.call("PATCH", "/v1/markets/m1", {"name": "y"},
                               headers={"If-Match": f'"{m["epoch"]}:1"'})
    assert st == 200
    assert ok["version"] == 2
    assert (await api.call("PUT", "/v1/markets/m1", raw=b"x" * 70000))[0] == 413
    assert (await api.call("PUT", "/v1/markets/m1", raw=b"{}", ctype="text/plain"))[0] == 415
    assert (await api.call("PUT", "/v1/markets/m1", raw=b"{nope"))[0] == 400
    await api.call("PATCH", "/v1/markets/m1", {"status": "settled"})
    assert (await api.call("PATCH", "/v1/markets/m1", {"name": "z"}))[0] == 409


async def test_idempotency_key(api: Api) -> None:
    """A retried write with the same Idempotency-Key returns the first result, applied once."""
    await api.call("PUT", "/v1/markets/m1", BODY)
    body = {"selections": {"h": {"price": 9}}}
    first = await api.call("PATCH", "/v1/markets/m1", body, headers={"Idempotency-Key": "k1"})
    await api.call("PATCH", "/v1/markets/m1", {"selections": {"h": {"price": 8}}})
    again = await api.call("PATCH", "/v1/markets/m1", body, headers={"Idempotency-Key": "k1"})
    assert first[0] == again[0] == 200
    assert first[1] == again[1]
    assert again[2].get("Idempotent-Replayed") == "true"
    _st, now, _ = await api.call("GET", "/v1/markets/m1")
    assert now["version"] == 3
    assert (await api.call("PATCH", "/v1/markets/m1", {"name": "q"},
                           headers={"Idempotency-Key": "k1"}))[0] == 422


async def test_batch_odds(api: Api) -> None:
    """POST /v1/odds answers per item; a bad item never fails the others."""
    await api.call("PUT", "/v1/markets/m1", BODY)
    st, res, _ = await api.call("POST", "/v1/odds", {"updates": [
        {"market": "m1", "selections": {"h": {"price": "2/1"}}},
        {"market": "m1", "selections": {"h": {"price": 0.5}}},
        {"market": "nope", "name": "x"},
        {"market": "m1", "bogus": True},
        {"market": "m1", "selections": {"d": {"price": 3.3}}},
    ]})
    assert st == 200
    oks = [r["ok"] for r in res["results"]]
    assert oks == [True, False, False, False, True]
    assert res["results"][4]["version"] == 3
    assert res["results"][1]["error"]["errors"][0]["path"] == "updates.1.selections.h.price"
    assert res["results"][2]["error"]["status"] == 404


VALIDATION_TABLE = [
    ({"market": "zz", "selection": "h", "price": 2.5}, "exact", "unknown_market"),
    ({"market": "m1", "selection": "zz", "price": 2.5}, "exact", "unknown_selection"),
    ({"market": "m1", "selection": "h", "price": 3.5}, "exact", None),
    ({"market": "m1", "selection": "h", "price": 3.0}, "exact", "price_changed"),
    ({"market": "m1", "selection": "h", "price": 3.0}, "better", None),
    ({"market": "m1", "selection": "h", "price": 4.0}, "better", "price_changed"),
    ({"market": "m1", "selection": "h", "price": 4.0}, "any", None),
    ({"market": "m1", "selection": "h", "price": 3.5, "epoch": "old"}, "exact", "market_changed"),
    ({"market": "m1", "selection": "h", "price": 3.5, "version": 1}, "exact", "market_changed"),
    ({"market": "m1", "selection": "h", "price": 3.5, "version": 3}, "exact", None),
    ({"market": "m1", "selection": "s", "price": 2.0}, "any", "selection_suspended"),
    ({"market": "m2", "selection": "h", "price": 2.0}, "any", "market_suspended"),
    ({"market": "m3", "selection": "h", "price": 2.0}, "any", "market_closed"),
]


@pytest.mark.parametrize(("leg", "accept", "reason"), VALIDATION_TABLE)
async def test_validation_table(api: Api, leg: dict[str, Any], accept: str,
                                reason: str | None) -> None:
    """Each reason and accept policy of section 4, checked against the store."""
    sels = {**BODY["selections"], "s": {"name": "S", "price": 2, "status": "suspended"}}
    await api.call("PUT", "/v1/markets/m1", {**BODY, "selections": sels})
    await api.call("PATCH", "/v1/markets/m1", {"status": "suspended"})  # v2
    await api.call("PATCH", "/v1/markets/m1", {"status": "open"})  # v3
    for mid, status in (("m2", "suspended"), ("m3", "closed")):
        await api.call("PUT", f"/v1/markets/{mid}", {**BODY, "status": status, "selections": {
            "h": {"name": "H", "price": 2}}})
    st, res, _ = await api.call("POST", "/v1/bets/validate", {"legs": [leg], "accept": accept})
    assert st == 200
    out = res["legs"][0]
    assert out.get("reason") == reason
    assert out["ok"] is (reason is None)
    assert res["ok"] is out["ok"]
    if reason not in ("unknown_market", "unknown_selection"):
        assert out["version"] is not None
        assert isinstance(out["price"], float)


async def test_price_race_never_accepts_old_price(api: Api) -> None:
    """A price change landing between building and validating a slip is never accepted
    at the old price under exact."""
    await api.call("PUT", "/v1/markets/m1", BODY)
    for i in range(20):
        old = 3.5 + i / 100
        new = {"selections": {"h": {"price": 3.5 + (i + 1) / 100}}}
        res = await asyncio.gather(
            api.call("POST", "/v1/bets/validate", {"legs": [
                {"market": "m1", "selection": "h", "price": old}]}),
            api.call("PATCH", "/v1/markets/m1", new))
        leg = res[0][1]["legs"][0]
        if leg["ok"]:
            assert leg["price"] == old
        else:
            assert leg["reason"] == "price_changed"
            assert leg["price"] != old


async def test_in_play_delay(api: Api) -> None:
    """In play with a delay: a suspension and reopening inside the window rejects the leg;
    with no change the leg is accepted no earlier than the delay."""
    await api.call("PUT", "/v1/markets/m1", {**BODY, "in_play": True, "bet_delay_ms": 600})
    loop = asyncio.get_running_loop()
    started = loop.time()
    st, res, _ = await api.call("POST", "/v1/bets/validate", {"legs": [
        {"market": "m1", "selection": "h", "price": 3.5}]})
    assert res["ok"] is True
    assert loop.time() - started >= 0.6
    slip = asyncio.create_task(api.call("POST", "/v1/bets/validate", {"legs": [
        {"market": "m1", "selection": "h", "price": 3.5}]}))
    await asyncio.sleep(0.1)
    await api.call("PATCH", "/v1/markets/m1", {"status": "suspended"})
    await api.call("PATCH", "/v1/markets/m1", {"status": "open"})
    _st, res, _ = await slip
    assert res["legs"][0]["reason"] == "market_changed"


async def test_operations_and_openapi(api: Api) -> None:
    """healthz, readyz and metrics answer; every registered route is in the OpenAPI document."""
    assert (await api.call("GET", "/healthz", token=None))[0] == 200
    assert (await api.call("GET", "/readyz", token=None))[0] == 200
    st, text, _ = await api.call("GET", "/metrics", token=None)
    assert st == 200
    assert "oddsfeed_http_requests_total" in text
    st, doc, _ = await api.call("GET", "/openapi.json", token=None)
    assert st == 200
    assert doc["openapi"].startswith("3.1")
    w = api.worker  # type: ignore[attr-defined]
    from oddsfeed.api.app import build_app

    app = build_app(w.settings, w.store)
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        assert path in doc["paths"], path
        assert route.method.lower() in doc["paths"][path], (route.method, path)


async def test_writes_reach_websocket_subscribers(api: Api) -> None:
    """A desk write goes through the same store path: the store holds it with source desk."""
    st, _m, _ = await api.call("PUT", "/v1/markets/m1", BODY)
    w = api.worker  # type: ignore[attr-defined]
    out = await w.store.apply(MarketUpdate(market="m1", selections={"h": {"price": 40000}}))
    _st, got, _ = await api.call("GET", "/v1/markets/m1")
    assert got["selections"]["h"]["price"] == 4.0
    assert got["version"] == 2
    del out
