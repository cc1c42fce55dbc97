"""Hostile HTTP input: deep nesting, bad If-Match values, conditional DELETE and the
contract's required fields; every case is a 4xx problem, no traceback, nothing changed."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from tests.api.conftest import BODY, Api

DEEP = b"[" * 30_000 + b"]" * 30_000
DEEP_OBJ = b'{"a":' * 5000 + b"1" + b"}" * 5000


async def _state(api: Api) -> object:
    market = await api.store.get("m1")
    return market.to_wire() if market else None


@pytest.mark.parametrize("path", ["/v1/markets/m1", "/v1/bets/validate", "/v1/odds"])
@pytest.mark.parametrize("raw", [DEEP, DEEP_OBJ, b'{"updates":' + b"[" * 40 + b"]" * 40 + b"}",
                                 b'{"name": "\\ud800"}', b'{"ts": 1' + b"0" * 5000 + b"}"],
                         ids=["array", "object", "depth-41", "surrogate", "5000-digit"])
async def test_hostile_json_bodies_are_400(api: Api, path: str, raw: bytes) -> None:
    """Deeply nested, lone-surrogate and 5,000-digit bodies on PUT, validate and /v1/odds
    answer 400 problem+json, log no traceback and leave the store as it was."""
    await api.call("PUT", "/v1/markets/m1", BODY)
    before = await _state(api)
    method = "PUT" if path.startswith("/v1/markets") else "POST"
    with capture_logs() as logs:
        st, prob, h = await api.call(method, path, raw=raw)
    assert st == 400, prob
    assert h["Content-Type"].startswith("application/problem+json")
    assert not [e for e in logs if e["log_level"] in ("error", "critical")]
    assert await _state(api) == before


@pytest.mark.parametrize("value", ['"x:²"', '"x:' + "9" * 5000 + '"', '"x:-1"', '"x:1e3"',
                                   '"x:9007199254740993"', '"x"', "W/", ""])
@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
async def test_malformed_if_match_is_400(api: Api, method: str, value: str) -> None:
    """An If-Match with a non-ASCII digit, 5,000 digits, a sign, an exponent, a version
    past 2^53 or no version is a 400 naming If-Match, on every conditional write."""
    await api.call("PUT", "/v1/markets/m1", BODY)
    before = await _state(api)
    body = {"status": "suspended"} if method == "PATCH" else BODY if method == "PUT" else None
    st, prob, _ = await api.call(method, "/v1/markets/m1", body,
                                 headers={"If-Match": value.encode().decode("latin-1")})
    assert st == 400, prob
    assert prob["errors"][0]["path"] == "If-Match"
    assert await _state(api) == before


async def test_delete_honours_if_match(api: Api) -> None:
    """DELETE with a stale If-Match is 412 with the current market and deletes nothing; with
    the current one it deletes (204); on a missing market it is 412 with current null."""
    _, m, _ = await api.call("PUT", "/v1/markets/m1", BODY)
    await api.call("PATCH", "/v1/markets/m1", {"status": "suspended"})
    stale = {"If-Match": f'"{m["epoch"]}:1"'}
    st, prob, _ = await api.call("DELETE", "/v1/markets/m1", headers=stale)
    assert st == 412
    assert prob["current"]["version"] == 2
    assert await api.store.get("m1") is not None
    st, _, _ = await api.call("DELETE", "/v1/markets/m1",
                              headers={"If-Match": f'"{m["epoch"]}:2"'})
    assert st == 204
    assert await api.store.get("m1") is None
    st, prob, _ = await api.call("DELETE", "/v1/markets/m1", headers=stale)
    assert (st, prob["current"]) == (412, None)


async def test_put_without_selections_is_400(api: Api) -> None:
    """A PUT without ``selections`` is a 400 naming it and creates nothing; an empty map is
    still a valid (empty) market."""
    body = {k: v for k, v in BODY.items() if k != "selections"}
    st, prob, _ = await api.call("PUT", "/v1/markets/m1", body)
    assert st == 400
    assert [e["path"] for e in prob["errors"]] == ["selections"]
    assert await api.store.get("m1") is None
    assert (await api.call("PUT", "/v1/markets/m1", {**body, "selections": {}}))[0] == 201


async def test_unknown_selection_leg_has_null_price_and_version(api: Api) -> None:
    """A validation leg for an unknown selection of a known market answers price and
    version null (protocol.md section 4)."""
    await api.call("PUT", "/v1/markets/m1", BODY)
    st, res, _ = await api.call("POST", "/v1/bets/validate",
                                {"legs": [{"market": "m1", "selection": "zz", "price": 2}]})
    assert st == 200
    leg = res["legs"][0]
    assert (leg["reason"], leg["price"], leg["version"]) == ("unknown_selection", None, None)
