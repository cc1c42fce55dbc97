"""Bet-slip validation against the real store, over HTTP and through the shared service
(protocol.md section 4): reasons, policies, the price race and the in-play delay."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from oddsfeed.core.model import MarketUpdate
from oddsfeed.core.wire import Leg
from oddsfeed.services.validation import validate_slip

from .conftest import BODY, Api

VALIDATION_TABLE = [
    ({"market": "zz", "selection": "h", "price": 2.5}, "exact", "unknown_market"),
    ({"market": "m1", "selection": "zz", "price": 2.5}, "exact", "unknown_selection"),
    ({"market": "m1", "selection": "gone", "price": 2.0}, "exact", "unknown_selection"),
    ({"market": "m1", "selection": "h", "price": 3.5}, "exact", None),
    ({"market": "m1", "selection": "h", "price": "5/2"}, "exact", None),
    ({"market": "m1", "selection": "h", "price": {"american": 250}}, "exact", None),
    ({"market": "m1", "selection": "h", "price": 3.0}, "exact", "price_changed"),
    ({"market": "m1", "selection": "h", "price": 4.0}, "exact", "price_changed"),
    ({"market": "m1", "selection": "h", "price": 3.0}, "better", None),
    ({"market": "m1", "selection": "h", "price": 3.5}, "better", None),
    ({"market": "m1", "selection": "h", "price": 4.0}, "better", "price_changed"),
    ({"market": "m1", "selection": "h", "price": 4.0}, "any", None),
    ({"market": "m1", "selection": "h", "price": 3.5, "epoch": "old"}, "exact", "market_changed"),
    ({"market": "m1", "selection": "h", "price": 3.5, "version": 1}, "exact", "market_changed"),
    ({"market": "m1", "selection": "h", "price": 9.0, "version": 1}, "any", "market_changed"),
    ({"market": "m1", "selection": "h", "price": 3.5, "version": 3}, "exact", None),
    ({"market": "m1", "selection": "h", "price": 3.5, "version": 4}, "exact", None),
    ({"market": "m1", "selection": "s", "price": 2.0}, "any", "selection_suspended"),
    ({"market": "m2", "selection": "h", "price": 2.0}, "any", "market_suspended"),
    ({"market": "m3", "selection": "h", "price": 2.0}, "any", "market_closed"),
    ({"market": "m4", "selection": "h", "price": 2.0}, "any", "market_closed"),
]


async def _table_markets(api: Api) -> None:
    sels = {**BODY["selections"], "s": {"name": "S", "price": 2, "status": "suspended"},
            "gone": {"name": "G", "price": 2}}
    await api.call("PUT", "/v1/markets/m1", {**BODY, "selections": sels})  # v1
    await api.call("PATCH", "/v1/markets/m1", {"status": "suspended"})  # v2
    await api.call("PATCH", "/v1/markets/m1", {"status": "open"})  # v3
    await api.call("PATCH", "/v1/markets/m1", {"selections": {"gone": {"status": "removed"}}})
    for mid, status in (("m2", "suspended"), ("m3", "closed"), ("m4", "settled")):
        await api.call("PUT", f"/v1/markets/{mid}", {**BODY, "status": status, "selections": {
            "h": {"name": "H", "price": 2}}})


@pytest.mark.parametrize(("leg", "accept", "reason"), VALIDATION_TABLE)
async def test_validation_table(api: Api, leg: dict[str, Any], accept: str,
                                reason: str | None) -> None:
    """Each reason and accept policy of section 4, checked against the store over HTTP."""
    await _table_markets(api)
    st, res, _ = await api.call("POST", "/v1/bets/validate", {"legs": [leg], "accept": accept})
    assert st == 200
    out = res["legs"][0]
    assert out.get("reason") == reason
    assert out["ok"] is (reason is None)
    assert res["ok"] is out["ok"]
    assert (out["market"], out["selection"]) == (leg["market"], leg["selection"])
    if reason in ("unknown_market", "unknown_selection"):
        assert out["price"] is None
        assert out["version"] is None
    else:
        assert isinstance(out["price"], float)
        assert out["version"] == (4 if leg["market"] == "m1" else 1)


async def test_slip_reply_shape_and_default_policy(api: Api) -> None:
    """A multi-leg slip answers 200 with a verdict per leg in order; accept defaults to
    exact; a bad leg is a 400 naming it."""
    await _table_markets(api)
    st, res, _ = await api.call("POST", "/v1/bets/validate", {"legs": [
        {"market": "m1", "selection": "h", "price": 3.5},
        {"market": "m1", "selection": "d", "price": 3.0}]})
    assert st == 200
    assert res["ok"] is False
    assert [(x["ok"], x.get("reason")) for x in res["legs"]] == [(True, None),
                                                                (False, "price_changed")]
    assert res["legs"][1]["price"] == 3.4
    for body, path in (({"legs": []}, "legs"),
                       ({"legs": [{"market": "m1", "selection": "h", "price": 0.2}]},
                        "legs.0.price"),
                       ({"legs": [{"market": "m 1", "selection": "h", "price": 2}]},
                        "legs.0.market"),
                       ({"legs": [{"market": "m1", "selection": "h"}]}, "legs.0.price"),
                       ({"legs": [{"market": "m1", "selection": "h", "price": 2, "x": 1}]},
                        "legs.0.x"),
                       ({"legs": [{"market": "m1", "selection": "h", "price": 2,
                                   "version": -1}]}, "legs.0.version"),
                       ({"legs": [{"market": "m1", "selection": "h", "price": 2}],
                         "accept": "maybe"}, "accept")):
        st, prob, _ = await api.call("POST", "/v1/bets/validate", body)
        assert st == 400, body
        assert path in [e["path"] for e in prob["errors"]], prob


async def test_price_race_never_accepts_old_price(api: Api) -> None:
    """A price change landing between building and validating a slip is never accepted
    at the old price under exact."""
    await api.call("PUT", "/v1/markets/m1", BODY)
    accepted = rejected = 0
    for i in range(30):
        old, nxt = round(3.5 + i / 100, 2), round(3.5 + (i + 1) / 100, 2)
        new = {"selections": {"h": {"price": nxt}}}
        res = await asyncio.gather(
            api.call("POST", "/v1/bets/validate", {"legs": [
                {"market": "m1", "selection": "h", "price": old}]}),
            api.call("PATCH", "/v1/markets/m1", new))
        leg = res[0][1]["legs"][0]
        if leg["ok"]:
            accepted += 1
            assert leg["price"] == old
            assert leg["version"] == i + 1
        else:
            rejected += 1
            assert leg["reason"] == "price_changed"
            assert leg["price"] == nxt
            assert leg["version"] == i + 2
    # a slip built at the old price and validated after the change: always refused
    st, res, _ = await api.call("POST", "/v1/bets/validate", {"legs": [
        {"market": "m1", "selection": "h", "price": 3.79}]})
    assert res["legs"][0]["reason"] == "price_changed"
    assert accepted + rejected == 30


async def _get_calls(api: Api) -> int:
    stats = await api.store.client.info("commandstats")
    # A single server's batched reads are MGETs, a cluster's (and unbatched ones) GETs.
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("get", "mget"))


async def _until(cond: Any, timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.002)


async def test_in_play_delay_over_http(api: Api) -> None:
    """In play with a delay: no change -> accepted no earlier than the delay; a suspension
    and reopening inside the window -> market_changed; still suspended -> market_suspended."""
    await api.call("PUT", "/v1/markets/m1", {**BODY, "in_play": True, "bet_delay_ms": 400})
    leg = {"market": "m1", "selection": "h", "price": 3.5}
    loop = asyncio.get_running_loop()
    started = loop.time()
    st, res, _ = await api.call("POST", "/v1/bets/validate", {"legs": [leg]})
    assert (st, res["ok"]) == (200, True)
    assert loop.time() - started >= 0.4
    for changes, reason in (([{"status": "suspended"}, {"status": "open"}], "market_changed"),
                            ([{"status": "suspended"}], "market_suspended"),
                            ([{"status": "open"}, {"selections": {"h": {"price": 3.6}}}],
                             "price_changed")):
        if reason == "price_changed":  # reopen first, and let the suspension age out
            for c in changes[:1]:
                await api.call("PATCH", "/v1/markets/m1", c)
            changes = changes[1:]
            leg = {**leg, "version": (await api.store.get("m1")).version}  # type: ignore[union-attr]
        before = await _get_calls(api)
        slip = asyncio.create_task(api.call("POST", "/v1/bets/validate", {"legs": [leg]}))
        # the arrival read has happened once the server issued its GET
        await _until(lambda before=before: _is_after(api, before))
        for c in changes:
            assert (await api.call("PATCH", "/v1/markets/m1", c))[0] == 200
        assert not slip.done()  # still inside the delay
        _st, res, _ = await slip
        assert res["legs"][0]["reason"] == reason, res


async def _is_after(api: Api, before: int) -> bool:
    return await _get_calls(api) > before


async def test_in_play_delay_service_is_exact_about_the_window(api: Api) -> None:
    """The shared service (used by HTTP and the WebSocket op) decides from the store's
    suspension record: a suspend+reopen during the wait is caught without polling, and an
    unrelated change is not; the wait is exactly the longest in-play delay."""
    store = api.store
    for mid, delay in (("a", 300), ("b", 1200)):
        await api.call("PUT", f"/v1/markets/{mid}", {**BODY, "in_play": True,
                                                       "bet_delay_ms": delay})
    await api.call("PUT", "/v1/markets/c", BODY)
    legs = (Leg("a", "h", 35000), Leg("b", "h", 35000), Leg("c", "h", 35000))
    waited: list[float] = []

    async def flicker(seconds: float) -> None:
        waited.append(seconds)
        await store.apply(MarketUpdate(market="b", fields={"status": "suspended"}))
        await store.apply(MarketUpdate(market="b", fields={"status": "open"}))
        await store.apply(MarketUpdate(market="a", fields={"name": "renamed"}))

    body = await validate_slip(store, legs, "exact", sleep=flicker)
    assert waited == [1.2]
    assert [(x["ok"], x.get("reason")) for x in body["legs"]] == [
        (True, None), (False, "market_changed"), (True, None)]
    assert body["legs"][0]["version"] == 2
    assert body["ok"] is False

    async def calm(seconds: float) -> None:
        waited.append(seconds)

    body = await validate_slip(store, legs, "exact", sleep=calm)
    assert body["ok"] is True

    async def delete_and_recreate(seconds: float) -> None:
        await store.delete("a")
        await api.call("PUT", "/v1/markets/a", {**BODY, "in_play": True, "bet_delay_ms": 300})

    body = await validate_slip(store, legs[:1], "exact", sleep=delete_and_recreate)
    assert body["legs"][0]["reason"] == "market_changed"  # new epoch

    async def lengthen(seconds: float) -> None:
        await store.apply(MarketUpdate(market="a", selections={"h": {"price": 36000}}))

    assert (await validate_slip(store, legs[:1], "better", sleep=lengthen))["ok"] is True

    async def shorten(seconds: float) -> None:
        await store.apply(MarketUpdate(market="a", selections={"h": {"price": 34000}}))

    body = await validate_slip(store, (Leg("a", "h", 36000),), "better", sleep=shorten)
    assert (body["legs"][0]["reason"], body["legs"][0]["price"]) == ("price_changed", 3.4)

    async def never(seconds: float) -> None:
        raise AssertionError("no in-play leg: no wait")

    await validate_slip(store, legs[2:], "exact", sleep=never)


async def test_leg_refused_on_arrival_stays_refused(api: Api) -> None:
    """A leg refused when the slip arrives is not accepted after the delay even if the
    market changed to match it meanwhile."""
    await api.call("PUT", "/v1/markets/m1", {**BODY, "in_play": True, "bet_delay_ms": 100})
    store = api.store

    async def match(seconds: float) -> None:
        await store.apply(MarketUpdate(market="m1", selections={"h": {"price": 50000}}))

    body = await validate_slip(store, (Leg("m1", "h", 50000),), "exact", sleep=match)
    assert body["legs"][0]["reason"] == "price_changed"
    assert body["legs"][0]["price"] == 5.0
