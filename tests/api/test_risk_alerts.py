"""The risk threshold alert through the real HTTP API on a real Valkey: one log event and
one webhook POST (to a real local HTTP receiver) per crossing, failures counted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from oddsfeed.api.risk import K_RISK
from oddsfeed.clock import now_ms
from oddsfeed.freeport import free_port

from .conftest import Api, mint, serve
from .test_risk import seed

STALE = {"legs": [{"market": "m1", "selection": "h", "price": 3.5, "version": 1}]}
STALE_V2 = {"legs": [{"market": "m1", "selection": "h", "price": 2.6, "version": 2}]}
FRESH = {"legs": [{"market": "m1", "selection": "h", "price": 2.6}]}


async def until(check: Callable[[], bool], seconds: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def validate(api: Api, sub: str, slip: dict[str, Any], n: int) -> None:
    token = mint(sub=sub)
    replies = await asyncio.gather(*(api.call("POST", "/v1/bets/validate", slip, token=token)
                                     for _ in range(n)))
    assert all(status == 200 for status, _, _ in replies)


async def settle(api: Api) -> None:
    """Wait until every slip so far is recorded and its accounts checked."""
    assert api.app is not None
    queue = api.app[K_RISK].queue
    await queue.drain()
    assert queue.watch is not None
    await queue.watch.tick(now_ms() + 10_000)


async def test_a_crossing_logs_and_posts_once_until_the_score_falls_back(
        make_api: Callable[..., Any]) -> None:
    """An account chasing a moved price crosses the threshold: one risk_threshold_crossed
    event and one POST with its sub, window, score and counts; more stale slips post
    nothing more; once its score was seen under the threshold, a new crossing posts again.
    An account under the threshold never posts."""
    posts: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        posts.append(await request.json())
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/hook", receive)
    runner, port = await serve(receiver)
    try:
        api = await make_api(**{"risk.webhook_url": f"http://127.0.0.1:{port}/hook",
                                "risk.threshold": 10, "risk.windows_s": [60],
                                "risk.threshold_check_ms": 1})
        await seed(api)
        with capture_logs() as logs:
            await validate(api, "normal", FRESH, 20)
            await validate(api, "normal", STALE, 1)
            await validate(api, "sharp", STALE, 10)
            await settle(api)
            await until(lambda: len(posts) == 1)
        crossed = [e for e in logs if e["event"] == "risk_threshold_crossed"]
        assert [(e["sub"], e["window_s"]) for e in crossed] == [("sharp", 60)]
        assert crossed[0]["counts"]["rejected_price_changed"] == 10
        assert posts[0]["event"] == "risk_threshold_crossed"
        assert (posts[0]["sub"], posts[0]["window_s"]) == ("sharp", 60)
        assert posts[0]["score"] == crossed[0]["score"] >= 10
        assert posts[0]["counts"]["legs"] == 10
        await validate(api, "sharp", STALE, 10)
        await settle(api)
        await validate(api, "sharp", FRESH, 200)
        await validate(api, "sharp", STALE, 1)  # checked: at most 21/226 = 9.3 < 10 now
        await settle(api)
        assert len(posts) == 1
        status, _, _ = await api.call("PATCH", "/v1/markets/m1",
                                      {"selections": {"h": {"price": 2.7}}})
        assert status == 200
        await validate(api, "sharp", STALE_V2, 60)  # fresh again: >= 0.4 x 60 more
        await settle(api)
        await until(lambda: len(posts) == 2)
        assert posts[1]["sub"] == "sharp"
    finally:
        await runner.cleanup()


async def test_a_failing_webhook_is_counted_and_never_blocks_validation(
        make_api: Callable[..., Any]) -> None:
    """With nothing listening at the webhook URL every slip is still answered 200, and the
    failed POST is counted."""
    def failed() -> float:
        return REGISTRY.get_sample_value("oddsfeed_risk_webhook_total",
                                         {"outcome": "failed"}) or 0.0

    before = failed()
    api = await make_api(**{"risk.webhook_url": f"http://127.0.0.1:{free_port()}/hook",
                            "risk.threshold": 30, "risk.threshold_check_ms": 1,
                            "risk.webhook_timeout_s": 1})
    await seed(api)
    await validate(api, "sharp", STALE, 10)
    await settle(api)
    await until(lambda: failed() > before)
