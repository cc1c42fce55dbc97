"""The HTTP API routes against a real server and a real store (protocol.md sections 3 and 5)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import jwt
import pytest
from structlog.testing import capture_logs

from oddsfeed.api.admin import build_admin_app
from oddsfeed.api.app import build_app
from oddsfeed.api.openapi import openapi_document
from oddsfeed.embedded import EmbeddedValkey
from oddsfeed.store import Store

from .conftest import ALL, BODY, Api, api_settings, mint, serve


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
    assert p2["version"] == 2  # a no-op: same version, the market shown
    st, lst, _ = await api.call("GET", "/v1/markets?event=e1&status=suspended")
    assert st == 200
    assert [x["id"] for x in lst["markets"]] == ["m1"]
    assert "selections" not in lst["markets"][0]
    assert (await api.call("GET", "/v1/markets?sport=tennis"))[1] == {"markets": []}
    st, rep, _ = await api.call("PUT", "/v1/markets/m1", {**BODY, "selections": {
        "h": {"name": "Home", "price": 2}}})
    assert st == 200
    assert set(rep["selections"]) == {"h"}
    assert rep["status"] == "open"  # left out: back to its default
    assert rep["epoch"] == m["epoch"]
    st, _, _ = await api.call("DELETE", "/v1/markets/m1")
    assert st == 204
    st, _prob, h = await api.call("GET", "/v1/markets/m1")
    assert st == 404
    assert h["Content-Type"].startswith("application/problem+json")
    assert (await api.call("DELETE", "/v1/markets/m1"))[0] == 404


async def test_every_price_shape_is_accepted_and_returned_canonical(api: Api) -> None:
    """Numbers, decimal/fractional/American strings and one-key objects all become
    canonical decimal numbers."""
    shapes = {"a": 2.5, "b": "2.5", "c": "5/2", "d": "evens", "e": "+150", "f": "-200",
              "g": {"decimal": 2.5}, "h": {"fractional": "5/2"}, "i": {"american": -200},
              "j": {"hk": 1.5}, "k": {"malay": -0.5}, "l": {"indo": -2.0}, "m": 2.123456}
    sels = {k: {"name": k, "price": v} for k, v in shapes.items()}
    st, m, _ = await api.call("PUT", "/v1/markets/m1", {**BODY, "selections": sels})
    assert st == 201, m
    got = {k: v["price"] for k, v in m["selections"].items()}
    assert got == {"a": 2.5, "b": 2.5, "c": 3.5, "d": 2.0, "e": 2.5, "f": 1.5, "g": 2.5,
                   "h": 3.5, "i": 1.5, "j": 2.5, "k": 3.0, "l": 1.5, "m": 2.1235}


@pytest.mark.parametrize(("body", "path"), [
    ({**BODY, "bogus": 1}, "bogus"),
    ({**BODY, "selections": {"h": {"name": "H", "price": 1.0}}}, "selections.h.price"),
    ({**BODY, "selections": {"h": {"name": "H", "price": "abc"}}}, "selections.h.price"),
    ({**BODY, "selections": {"h": {"name": "H", "price": {"decimal": 2, "hk": 1}}}},
     "selections.h.price"),
    ({**BODY, "selections": {"h": {"name": "H", "price": -1e36}}}, "selections.h.price"),
    ({**BODY, "selections": {"h": {"name": "H", "price": {"hk": -1e36}}}}, "selections.h.price"),
    ({**BODY, "selections": {"h": {"name": "H", "price": 2, "x": 1}}}, "selections.h.x"),
    ({**BODY, "selections": {"h": {"price": 2}}}, "selections.h.name"),
    ({**BODY, "status": "paused"}, "status"),
    ({**BODY, "bet_delay_ms": 999999}, "bet_delay_ms"),
    ({**BODY, "in_play": "yes"}, "in_play"),
    ({**BODY, "event": "bad id"}, "event"),
    ({**BODY, "ts": -1}, "ts"),
    ({"sport": "soccer", "name": "x"}, "event"),
    ({**BODY, "kind": None}, "kind"),
    ({**BODY, "selections": {"h": {"name": "H", "price": None}}}, "selections.h.price"),
])
async def test_bad_bodies_name_the_field(api: Api, body: dict[str, Any], path: str) -> None:
    """Invalid bodies are 400 problems naming the field, and nothing is written."""
    st, prob, h = await api.call("PUT", "/v1/markets/m1", body)
    assert st == 400, prob
    assert h["Content-Type"].startswith("application/problem+json")
    assert {"type", "title", "status", "detail"} <= set(prob)
    assert path in [e["path"] for e in prob["errors"]], prob
    assert await api.store.get("m1") is None


async def test_nulls_and_lines(api: Api) -> None:
    """An explicit null is a 400 naming the field, except a selection's point: null clears
    the line."""
    sels = {"o": {"name": "Over", "price": 1.9, "point": 2.5}}
    st, m, _ = await api.call("PUT", "/v1/markets/m1", {**BODY, "kind": "totals",
                                                       "selections": sels})
    assert (st, m["selections"]["o"]["point"]) == (201, 2.5)
    st, prob, _ = await api.call("PATCH", "/v1/markets/m1", {"status": None})
    assert (st, prob["errors"][0]["path"]) == (400, "status")
    st, m, _ = await api.call("PATCH", "/v1/markets/m1", {"selections": {"o": {"point": None}}})
    assert st == 200
    assert "point" not in m["selections"]["o"]
    assert m["version"] == 2


async def test_auth_errors(api: Api) -> None:
    """Missing, garbage, expired, foreign-key and alg-none tokens are 401; a missing scope
    is 403."""
    assert (await api.call("GET", "/v1/markets", token=None))[0] == 401
    assert (await api.call("GET", "/v1/markets", token="garbage"))[0] == 401
    assert (await api.call("GET", "/v1/markets", token=mint("odds:read", ttl=-10)))[0] == 401
    assert (await api.call("GET", "/v1/markets",
                           token=mint("odds:read", secret="another-key-" * 4)))[0] == 401
    none_tok = jwt.encode({"sub": "x", "exp": int(time.time()) + 60, "scope": ALL}, None,
                          algorithm="none")
    assert (await api.call("GET", "/v1/markets", token=none_tok))[0] == 401
    st, _, h = await api.call("GET", "/v1/markets", headers={"Authorization": "Basic eDp5"},
                              token=None)
    assert st == 401
    assert (await api.call("PUT", "/v1/markets/m1", BODY, token=mint("odds:read")))[0] == 403
    assert (await api.call("DELETE", "/v1/markets/m1", token=mint("odds:read")))[0] == 403
    assert (await api.call("POST", "/v1/odds", {"updates": []},
                           token=mint("bets:validate")))[0] == 403
    assert (await api.call("POST", "/v1/bets/validate", {"legs": []},
                           token=mint("odds:read")))[0] == 403
    assert (await api.call("GET", "/v1/markets", token=mint("odds:write")))[0] == 403
    assert await api.store.get("m1") is None


async def test_anonymous_reading_only_when_configured(make_api: Any) -> None:
    """With anonymous_read, reads need no token but writes and validation still do."""
    api = await make_api(**{"auth.anonymous_read": True})
    assert (await api.call("GET", "/v1/markets", token=None))[0] == 200
    assert (await api.call("GET", "/v1/markets/zz", token=None))[0] == 404
    assert (await api.call("PUT", "/v1/markets/m1", BODY, token=None))[0] == 401
    assert (await api.call("POST", "/v1/bets/validate", {"legs": [
        {"market": "m", "selection": "h", "price": 2}]}, token=None))[0] == 401
    assert (await api.call("GET", "/v1/markets", token="garbage"))[0] == 401


async def test_status_codes(api: Api) -> None:
    """404, 409, 412, 413, 415 and 400 for malformed JSON, as the contract says."""
    assert (await api.call("PATCH", "/v1/markets/m1", {"name": "x"}))[0] == 404
    assert (await api.call("GET", "/v1/markets/bad%20id"))[0] == 400
    assert (await api.call("GET", "/v1/nothing"))[0] == 404
    assert (await api.call("POST", "/v1/markets"))[0] == 405
    st, m, _ = await api.call("PUT", "/v1/markets/m1", BODY)
    st, prob, _ = await api.call("PUT", "/v1/markets/m1", {**BODY, "sport": "tennis"})
    assert st == 409
    assert prob["status"] == 409
    st, prob, _ = await api.call("PATCH", "/v1/markets/m1", {"name": "y"},
                                 headers={"If-Match": f'"{m["epoch"]}:7"'})
    assert st == 412
    assert prob["current"]["version"] == 1
    assert prob["current"]["selections"]["h"]["price"] == 3.5
    st, prob, _ = await api.call("PATCH", "/v1/markets/m1", {"name": "y"},
                                 headers={"If-Match": '"another-epoch:1"'})
    assert st == 412
    assert (await api.call("PATCH", "/v1/markets/m1", {"name": "y"},
                           headers={"If-Match": "nonsense"}))[0] == 400
    st, ok, _ = await api.call("PATCH", "/v1/markets/m1", {"name": "y"},
                               headers={"If-Match": f'"{m["epoch"]}:1"'})
    assert st == 200
    assert ok["version"] == 2
    st, ok, _ = await api.call("PUT", "/v1/markets/m1", BODY,
                               headers={"If-Match": f'"{m["epoch"]}:2"'})
    assert (st, ok["version"]) == (200, 3)
    st, prob, h = await api.call("PUT", "/v1/markets/m1", raw=b"x" * 70000)
    assert st == 413
    assert h["Content-Type"].startswith("application/problem+json")
    assert (await api.call("PUT", "/v1/markets/m1", raw=b"{}", ctype="text/plain"))[0] == 415
    assert (await api.call("PATCH", "/v1/markets/m1", raw=b"{}", ctype="x-www-form"))[0] == 415
    assert (await api.call("PUT", "/v1/markets/m1", raw=b"{nope"))[0] == 400
    assert (await api.call("PUT", "/v1/markets/m1", raw=b'{"ts": NaN}'))[0] == 400
    assert (await api.call("PUT", "/v1/markets/m1", raw=b"[1, 2]"))[0] == 400
    await api.call("PATCH", "/v1/markets/m1", {"status": "settled"})
    st, prob, _ = await api.call("PATCH", "/v1/markets/m1", {"name": "z"})
    assert st == 409
    assert (await api.call("PUT", "/v1/markets/m1", BODY))[0] == 409
    assert (await api.store.get("m1")).version == 4  # type: ignore[union-attr]


async def test_query_parameters_are_checked(api: Api) -> None:
    """An unknown query parameter or status filter is a 400 naming it."""
    st, prob, _ = await api.call("GET", "/v1/markets?colour=red")
    assert st == 400
    assert prob["errors"][0]["path"] == "colour"
    st, prob, _ = await api.call("GET", "/v1/markets?status=paused")
    assert (st, prob["errors"][0]["path"]) == (400, "status")


async def test_idempotency_key(api: Api) -> None:
    """A retried write with the same Idempotency-Key returns the first result, applied once;
    the same key with another body is 422."""
    await api.call("PUT", "/v1/markets/m1", BODY)
    body = {"selections": {"h": {"price": 9}}}
    first = await api.call("PATCH", "/v1/markets/m1", body, headers={"Idempotency-Key": "k1"})
    await api.call("PATCH", "/v1/markets/m1", {"selections": {"h": {"price": 8}}})
    again = await api.call("PATCH", "/v1/markets/m1", body, headers={"Idempotency-Key": "k1"})
    assert first[0] == again[0] == 200
    assert first[1] == again[1]
    assert again[2].get("Idempotent-Replayed") == "true"
    assert (await api.store.get("m1")).version == 3  # type: ignore[union-attr]
    assert (await api.call("PATCH", "/v1/markets/m1", {"name": "q"},
                           headers={"Idempotency-Key": "k1"}))[0] == 422
    # another principal's identical key is its own request
    other = await api.call("PATCH", "/v1/markets/m1", body, token=mint(sub="desk2"),
                           headers={"Idempotency-Key": "k1"})
    assert other[1]["version"] == 4
    ttl = await api.store.client.ttl(next(iter(await api.store.client.keys("of:idem:*"))))
    assert 0 < ttl <= 300


async def test_idempotency_concurrent_retries_apply_once(make_api: Any) -> None:
    """The same keyed write sent at once to two app instances (two workers) applies once
    and both get the same answer."""
    a, b = await make_api(), await make_api()
    await a.call("PUT", "/v1/markets/m1", BODY)
    body = {"updates": [{"market": "m1", "selections": {"h": {"price": 7}}},
                        {"market": "m1", "selections": {"d": {"price": 7}}}]}
    res = await asyncio.gather(*(x.call("POST", "/v1/odds", body,
                                        headers={"Idempotency-Key": "batch-1"})
                                 for x in (a, b, a, b)))
    assert {json.dumps(r[1], sort_keys=True) for r in res} == {json.dumps(res[0][1],
                                                                          sort_keys=True)}
    assert [r["version"] for r in res[0][1]["results"]] == [2, 3]
    assert (await a.store.get("m1")).version == 3  # type: ignore[union-attr]


async def test_idempotent_create_and_delete(api: Api) -> None:
    """A retried PUT answers 201 again without a new version; a retried DELETE answers 204
    again; an error answer is kept too."""
    h = {"Idempotency-Key": "create-1"}
    first = await api.call("PUT", "/v1/markets/m1", BODY, headers=h)
    again = await api.call("PUT", "/v1/markets/m1", BODY, headers=h)
    assert first[0] == again[0] == 201
    assert first[1] == again[1]
    h = {"Idempotency-Key": "del-1"}
    assert (await api.call("DELETE", "/v1/markets/m1", headers=h))[0] == 204
    assert (await api.call("DELETE", "/v1/markets/m1", headers=h))[0] == 204
    h = {"Idempotency-Key": "patch-missing"}
    assert (await api.call("PATCH", "/v1/markets/m1", {"name": "n"}, headers=h))[0] == 404
    await api.call("PUT", "/v1/markets/m1", BODY)
    assert (await api.call("PATCH", "/v1/markets/m1", {"name": "n"}, headers=h))[0] == 404
    assert (await api.store.get("m1")).name == "A v B"  # type: ignore[union-attr]


async def test_reads_answer_every_change(api: Api) -> None:
    """GET of an unchanged market answers the same body and ETag each time, and after each
    change (PATCH, POST /v1/odds, a change back to earlier prices) the new version's."""
    _, created, _ = await api.call("PUT", "/v1/markets/m1", BODY)
    answers = [await api.call("GET", "/v1/markets/m1") for _ in range(3)]
    assert all(a[:2] == (200, created) for a in answers)
    assert {a[2]["ETag"] for a in answers} == {f'"{created["epoch"]}:1"'}
    for version, change in enumerate([("PATCH", "/v1/markets/m1", {"selections": {"h": {"price": 4}}}),
                                      ("POST", "/v1/odds", {"updates": [
                                          {"market": "m1", "selections": {"h": {"price": 3.5}}}]}),
                                      ("PATCH", "/v1/markets/m1", {"status": "suspended"})],
                                     start=2):
        await api.call(*change)
        st, got, h = await api.call("GET", "/v1/markets/m1")
        assert st == 200
        assert got["version"] == version
        assert h["ETag"] == f'"{created["epoch"]}:{version}"'
    assert got["status"] == "suspended"
    assert got["selections"]["h"]["price"] == 3.5


async def test_batch_odds(api: Api) -> None:
    """POST /v1/odds answers per item; a bad item never fails the others."""
    await api.call("PUT", "/v1/markets/m1", BODY)
    st, res, _ = await api.call("POST", "/v1/odds", {"updates": [
        {"market": "m1", "selections": {"h": {"price": "2/1"}}},
        {"market": "m1", "selections": {"h": {"price": 0.5}}},
        {"market": "nope", "name": "x"},
        {"market": "m1", "bogus": True},
        {"market": "bad id", "name": "x"},
        "not an object",
        {"market": "m1", "selections": {"d": {"price": 3.3}}},
        {"market": "m1", "selections": {"d": {"price": 3.3}}},
    ]})
    assert st == 200
    oks = [r["ok"] for r in res["results"]]
    assert oks == [True, False, False, False, False, False, True, True]
    assert [r.get("version") for r in res["results"]] == [2, None, None, None, None, None, 3, 3]
    assert res["results"][1]["error"]["errors"][0]["path"] == "updates.1.selections.h.price"
    assert res["results"][2]["error"]["status"] == 404
    assert res["results"][3]["error"]["errors"][0]["path"] == "updates.3.bogus"
    assert res["results"][5]["error"]["status"] == 400
    assert (await api.call("POST", "/v1/odds", {"updates": {}}))[0] == 400
    assert (await api.call("POST", "/v1/odds", {"items": []}))[0] == 400


async def test_batch_odds_result_market_is_a_string_or_null(api: Api) -> None:
    """An item whose market is not a string answers market null, as the result schema says
    (schemathesis found a number echoed back)."""
    st, res, _ = await api.call("POST", "/v1/odds", {"updates": [{"market": 7, "name": "x"},
                                                                 {"market": ["m"]}]})
    assert st == 200
    assert [(r["market"], r["ok"]) for r in res["results"]] == [(None, False), (None, False)]


async def test_writes_are_audit_logged(api: Api) -> None:
    """Every write logs who, which market, old -> new version and what changed."""
    with capture_logs() as logs:
        await api.call("PUT", "/v1/markets/m1", BODY)
        await api.call("PATCH", "/v1/markets/m1", {"selections": {"h": {"price": 4}}})
        await api.call("PATCH", "/v1/markets/m1", {"selections": {"h": {"price": 4}}})
        await api.call("DELETE", "/v1/markets/m1")
    audit = [e for e in logs if e["event"].startswith("market.")]
    assert [e.get("outcome", "delete") for e in audit] == [
        "created", "changed", "noop", "delete"]
    assert all(e["who"] == "desk1" for e in audit)
    created, changed, noop, _ = audit
    assert (created["old_version"], created["new_version"]) == (None, 1)
    assert (changed["old_version"], changed["new_version"]) == (1, 2)
    assert changed["changed"] == {"sel": {"h": {"price": 4.0}}}
    assert changed["source"] == "desk:desk1"
    assert (noop["old_version"], noop["new_version"], noop["changed"]) == (2, 2, None)


async def test_batch_odds_writes_are_audit_logged_as_patches(api: Api) -> None:
    """POST /v1/odds (short store replies) audits each item's versions and change exactly
    as a PATCH of the same change."""
    await api.call("PUT", "/v1/markets/m1", BODY)
    with capture_logs() as logs:
        await api.call("PATCH", "/v1/markets/m1", {"selections": {"h": {"price": 4}}})
        await api.call("POST", "/v1/odds", {"updates": [
            {"market": "m1", "selections": {"h": {"price": 5}}},
            {"market": "m1", "selections": {"h": {"price": 5}}}]})
    patched, posted, repeated = [e for e in logs if e["event"] == "market.write"]
    assert (patched["old_version"], patched["new_version"]) == (1, 2)
    assert (posted["old_version"], posted["new_version"], posted["outcome"]) == (2, 3, "changed")
    assert posted["changed"] == {"sel": {"h": {"price": 5.0}}}
    assert {k: posted[k] for k in ("who", "source", "market", "epoch")} == {
        k: patched[k] for k in ("who", "source", "market", "epoch")}
    assert (repeated["old_version"], repeated["new_version"], repeated["outcome"],
            repeated["changed"]) == (3, 3, "noop", None)


async def test_cors(make_api: Any) -> None:
    """Allowed origins get CORS headers and preflights; other origins get none."""
    api = await make_api(**{"api.cors_origins": ["https://book.example"]})
    await api.call("PUT", "/v1/markets/m1", BODY)
    _, _, h = await api.call("GET", "/v1/markets/m1", headers={"Origin": "https://book.example"})
    assert h["Access-Control-Allow-Origin"] == "https://book.example"
    assert "ETag" in h["Access-Control-Expose-Headers"]
    _, _, h = await api.call("GET", "/v1/markets/m1", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in h
    st, _, h = await api.call("OPTIONS", "/v1/markets/m1", token=None, headers={
        "Origin": "https://book.example", "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "authorization, if-match"})
    assert st == 204
    assert "PATCH" in h["Access-Control-Allow-Methods"]
    assert "If-Match" in h["Access-Control-Allow-Headers"]


async def test_health_ready_and_metrics(make_api: Any) -> None:
    """healthz always answers; readyz follows the readiness hook; metrics count requests
    by route and status and validations by result and reason."""
    flag = {"ready": True}
    api = await make_api(readiness=lambda: flag["ready"])
    assert (await api.call("GET", "/healthz", token=None))[0] == 200
    assert (await api.call("GET", "/readyz", token=None))[0] == 200
    flag["ready"] = False
    assert (await api.call("GET", "/readyz", token=None))[0] == 503
    await api.call("POST", "/v1/bets/validate", {"legs": [
        {"market": "nope", "selection": "h", "price": 2}]})
    assert (await api.call("GET", "/metrics", token=None))[0] == 404  # admin port only
    admin, port = await serve(build_admin_app())
    try:
        async with api.session.get(f"http://127.0.0.1:{port}/metrics") as r:
            st, text, h = r.status, await r.text(), r.headers
    finally:
        await admin.cleanup()
    assert st == 200
    assert h["Content-Type"].startswith("text/plain")
    assert 'oddsfeed_http_requests_total{method="GET",route="/readyz",status="503"}' in text
    assert 'oddsfeed_validations_total{reason="unknown_market",result="rejected"}' in text
    assert "oddsfeed_http_request_seconds_bucket" in text
    assert "oddsfeed_validation_seconds_bucket" in text


async def test_readyz_is_503_while_the_store_is_down(valkey_url: str) -> None:
    """/readyz answers 503 once the store stops answering, and reads are 503 problems."""
    with EmbeddedValkey() as own:
        store = await Store.connect(own.url)
        runner, port = await serve(build_app(api_settings(own.url), store))
        try:
            import aiohttp

            async with aiohttp.ClientSession() as s:
                base = f"http://127.0.0.1:{port}"
                async with s.get(base + "/readyz") as r:
                    assert r.status == 200
                own.stop()
                async with s.get(base + "/readyz") as r:
                    assert r.status == 503
                async with s.get(base + "/v1/markets/m1",
                                 headers={"Authorization": f"Bearer {mint()}"}) as r:
                    assert r.status == 503
                    assert r.content_type == "application/problem+json"
        finally:
            await runner.cleanup()
            await store.close()


async def test_openapi_describes_every_route(api: Api) -> None:
    """Every registered route (method and path) is in /openapi.json, and every request
    body route names its schema."""
    assert (await api.call("GET", "/openapi.json", token=None))[0] == 404  # admin port only
    doc = openapi_document()
    assert doc["openapi"].startswith("3.1")
    app = build_app(api.settings, api.store, demo_token="t")
    seen = 0
    for route in [*app.router.routes(), *build_admin_app().router.routes()]:
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if route.method == "HEAD":
            continue  # aiohttp adds HEAD for every GET
        assert path in doc["paths"], path
        op = doc["paths"][path][route.method.lower()]
        assert op["responses"], path
        if route.method in ("PUT", "PATCH", "POST"):
            ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.rsplit("/", 1)[1] in doc["components"]["schemas"]
        seen += 1
    assert seen == sum(len(ops) for ops in doc["paths"].values())
    assert doc["components"]["schemas"]["MarketPut"]["additionalProperties"] is False


async def test_static_and_index(api: Api) -> None:
    """GET / serves the demo page; /static/ serves its files and refuses paths."""
    st, text, _ = await api.call("GET", "/", token=None)
    assert st == 200
    assert "<html" in text.lower()
    assert (await api.call("GET", "/static/..%2Fapp.py", token=None))[0] == 404
    assert (await api.call("GET", "/static/.hidden", token=None))[0] == 404
