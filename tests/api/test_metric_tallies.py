"""The hot routes count into in-process tallies flushed into the Prometheus metrics: the
scraped values are exact, and they reach the registry within about a second unscraped."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import REGISTRY

from oddsfeed.api.admin import build_admin_app
from oddsfeed.core.model import MarketUpdate

from .conftest import Api, serve

VALIDATE = "/v1/bets/validate"


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _seed(api: Api) -> None:
    await api.store.apply(MarketUpdate(
        market="t1", fields={"event": "e", "sport": "s", "name": "n"},
        selections={"h": {"name": "H", "price": 25000}}, create=True))


def _snapshot() -> dict[str, float]:
    return {
        "ok_legs": _sample("oddsfeed_validations_total", result="accepted", reason=""),
        "unknown_legs": _sample("oddsfeed_validations_total", result="rejected",
                                reason="unknown_market"),
        "slips_ok": _sample("oddsfeed_bet_slips_total", result="accepted"),
        "slips_bad": _sample("oddsfeed_bet_slips_total", result="rejected"),
        "requests": _sample("oddsfeed_http_requests_total", route=VALIDATE, method="POST",
                            status="200"),
        "latency_count": _sample("oddsfeed_http_request_seconds_count", route=VALIDATE),
        "latency_inf": _sample("oddsfeed_http_request_seconds_bucket", route=VALIDATE,
                               le="+Inf"),
        "seconds_count": _sample("oddsfeed_validation_seconds_count", delayed="false"),
    }


async def _validate(api: Api, n_ok: int, n_bad: int) -> None:
    ok = {"legs": [{"market": "t1", "selection": "h", "price": 2.5}] * 2}
    bad = {"legs": [{"market": "t1", "selection": "h", "price": 2.5},
                    {"market": "nope", "selection": "h", "price": 2}]}
    replies = await asyncio.gather(*(api.call("POST", VALIDATE, ok) for _ in range(n_ok)),
                                   *(api.call("POST", VALIDATE, bad) for _ in range(n_bad)))
    assert [r[1]["ok"] for r in replies] == [True] * n_ok + [False] * n_bad


async def test_scraped_counts_are_exact(make_api: Any) -> None:
    """A scrape right after 37 validations shows exactly their legs, slips, requests and
    latency observations, however few of them a timed flush had already carried."""
    api = await make_api()
    await _seed(api)
    before = _snapshot()
    await _validate(api, 25, 12)
    admin, port = await serve(build_admin_app())
    try:
        async with api.session.get(f"http://127.0.0.1:{port}/metrics") as r:
            text = await r.text()
    finally:
        await admin.cleanup()
    assert "oddsfeed_validations_total" in text
    after = _snapshot()
    grew = {k: after[k] - before[k] for k in after}
    assert grew == {"ok_legs": 25 * 2 + 12, "unknown_legs": 12, "slips_ok": 25,
                    "slips_bad": 12, "requests": 37, "latency_count": 37, "latency_inf": 37,
                    "seconds_count": 37}


async def test_tallies_reach_the_registry_unscraped(make_api: Any) -> None:
    """Without a scrape the counts reach the registry within a couple of seconds, the
    histogram's buckets cumulative and its sum the sum of what was observed."""
    api = await make_api()
    await _seed(api)
    before = _snapshot()
    sum_before = _sample("oddsfeed_validation_seconds_sum", delayed="false")
    started = time.perf_counter()
    await _validate(api, 9, 0)
    elapsed = time.perf_counter() - started
    deadline = time.monotonic() + 5
    while _snapshot()["slips_ok"] - before["slips_ok"] < 9:
        assert time.monotonic() < deadline, "the tallies were not flushed within 5 s"
        await asyncio.sleep(0.05)
    after = _snapshot()
    assert after["requests"] - before["requests"] == 9
    assert after["seconds_count"] - before["seconds_count"] == 9
    grew_sum = _sample("oddsfeed_validation_seconds_sum", delayed="false") - sum_before
    assert 0 < grew_sum <= 9 * elapsed
    low = _sample("oddsfeed_validation_seconds_bucket", delayed="false", le="0.0005")
    high = _sample("oddsfeed_validation_seconds_bucket", delayed="false", le="61.0")
    assert low <= high == after["seconds_count"]
