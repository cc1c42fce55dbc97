"""The risk signals through the real HTTP API on a real Valkey: recorder off the answer's
path, exact per-account counts under concurrent validations, the risk:read routes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from oddsfeed.api.risk import K_RISK
from oddsfeed.core.wire import Leg
from oddsfeed.services.risk import RiskQueue
from oddsfeed.store import RiskCounts, Store
from tests.riskports import RiskMetrics

from .conftest import ALL, BODY, Api, mint

RISK = "risk:read"


async def seed(api: Api) -> None:
    """m1 created with h at 5/2 (3.5), then h moved to 2.6 (version 2)."""
    assert (await api.call("PUT", "/v1/markets/m1", BODY))[0] == 201
    status, _, _ = await api.call("PATCH", "/v1/markets/m1", {"selections": {"h": {"price": 2.6}}})
    assert status == 200


SLIPS: list[dict[str, Any]] = [
    {"legs": [{"market": "m1", "selection": "h", "price": 2.6}]},  # accepted
    {"legs": [{"market": "m1", "selection": "h", "price": 3.5, "version": 1}]},  # stale
    {"legs": [{"market": "m1", "selection": "h", "price": 3.5},
              {"market": "zz", "selection": "h", "price": 2.5}]},  # stale + unknown market
]


async def test_counts_are_exact_under_concurrent_validations(
        make_api: Callable[..., Any]) -> None:
    """Many concurrent validations from several subjects are all counted, exactly, per
    subject; the account chasing the moved price ranks first."""
    api = await make_api()
    await seed(api)
    plan = {"sharp": [1, 2] * 15, "normal": [0] * 27 + [2] * 3, "other": [0, 0, 1] * 10}
    tokens = {sub: mint(sub=sub) for sub in plan}
    replies = await asyncio.gather(*(
        api.call("POST", "/v1/bets/validate", SLIPS[i], token=tokens[sub])
        for sub, picks in plan.items() for i in picks))
    assert all(status == 200 for status, _, _ in replies)
    assert api.app is not None
    await api.app[K_RISK].queue.drain()
    status, body, _ = await api.call("GET", "/v1/risk/accounts?window=1m&limit=10",
                                     token=mint(RISK))
    assert status == 200
    got = {a["sub"]: a for a in body["accounts"]}
    assert set(got) == set(plan)
    for sub, picks in plan.items():
        legs = [len(SLIPS[i]["legs"]) for i in picks]
        c = got[sub]["counts"]
        assert (c["slips"], c["legs"]) == (len(picks), sum(legs))
        assert c["accepted"] == picks.count(0)
        assert c["rejected_price_changed"] == picks.count(1) + picks.count(2)
        assert c["rejected_unknown_market"] == picks.count(2)
        fresh = c["stale_lt250ms"] + c["stale_lt1s"] + c["stale_lt5s"]
        assert fresh == c["rejected_price_changed"]  # the move was seconds ago at most
    assert body["accounts"][0]["sub"] == "sharp"
    assert body["accounts"][0]["score"] > got["normal"]["score"]
    status, one, _ = await api.call("GET", "/v1/risk/accounts/sharp?window=60",
                                    token=mint(RISK))
    assert status == 200
    assert (one["sub"], one["counts"], one["score"]) == ("sharp", got["sharp"]["counts"],
                                                         got["sharp"]["score"])


async def test_routes_need_the_risk_read_scope(make_api: Callable[..., Any]) -> None:
    """Without a token 401, with every other scope 403, with risk:read 200; a bad window,
    limit or query parameter is 400; an account without slips scores 0."""
    api = await make_api()
    for path in ("/v1/risk/accounts", "/v1/risk/accounts/desk1"):
        assert (await api.call("GET", path, token=None))[0] == 401
        assert (await api.call("GET", path, token=mint(ALL)))[0] == 403
        assert (await api.call("GET", path, token=mint(RISK)))[0] == 200
    for query in ("window=90", "window=1y", "limit=0", "limit=1001", "other=1"):
        status, body, _ = await api.call("GET", f"/v1/risk/accounts?{query}", token=mint(RISK))
        assert status == 400, query
        assert body["errors"]
    status, body, _ = await api.call("GET", "/v1/risk/accounts/nobody?window=24h",
                                     token=mint(RISK))
    assert (status, body["window_s"], body["score"], body["counts"]["slips"]) == (200, 86400,
                                                                                 0, 0)


async def test_answers_are_the_same_with_the_recorder_on_or_off(
        make_api: Callable[..., Any]) -> None:
    """Every slip gets the same validation body with risk signals on and off; off, the risk
    routes are 404."""
    on = await make_api()
    off = await make_api(**{"risk.enabled": False})
    await seed(on)
    for slip in SLIPS:
        a = await on.call("POST", "/v1/bets/validate", slip)
        b = await off.call("POST", "/v1/bets/validate", slip)
        assert (a[0], a[1]) == (b[0], b[1])
    assert (await off.call("GET", "/v1/risk/accounts", token=mint(RISK)))[0] == 404


async def test_a_full_queue_drops_and_counts_instead_of_waiting(valkey_url: str,
                                                                redis_client: Any) -> None:
    """offer never waits: past max_pending a slip is dropped and counted; the queued ones
    are recorded once the worker runs."""
    store = await Store.connect(valkey_url)
    try:
        counts = RiskCounts(store.client, windows_s=[60], buckets=12, max_accounts=10,
                            history_scan=10)
        metrics = RiskMetrics()
        queue = RiskQueue(counts, metrics, max_pending=2)
        body = {"ok": False, "legs": [{"ok": False, "reason": "unknown_market"}]}
        for _ in range(5):
            queue.offer("s1", [Leg("zz", "h", 25000)], body, 1_000)
        assert metrics.why == ["queue_full"] * 3
        queue.start()
        await asyncio.wait_for(queue.drain(), 5)
        await queue.stop()
        assert metrics.slips == 2
    finally:
        await store.close()
