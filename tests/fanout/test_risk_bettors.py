"""The simulated bettors against a real worker: they see the markets over the public
WebSocket and bet through the real validation API, each under its own token subject."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from oddsfeed.auth import Authenticator
from oddsfeed.worker import Worker
from oddsfeed_ingest.bettors import BettorsConfig, run_bettors

from .builders import create, price
from .conftest import mint_token


async def test_a_sharp_bettor_chases_a_move_within_250ms_and_normal_ones_bet(
        worker: Worker) -> None:
    """Normal bettors bet the open market's prices; when the price moves, the sharp bettor
    bets the old price at once: rejected price_changed, stale under 250 ms, under its own
    subject."""
    await worker.store.apply(create("m1", h=25000, a=30000))
    auth = Authenticator(worker.settings.auth)

    def token_for(sub: str) -> str:
        return auth.mint(sub, ["odds:read", "bets:validate"], ttl_s=600, now_s=int(time.time()))

    config = BettorsConfig(sharps=1, normals=2, seed=3, chase_chance=1.0, take_chance=0.0,
                           normal_every_s=0.05, human_delay_s=(0.0, 0.01),
                           discover_every_s=0.05)
    stop = asyncio.Event()
    bettors = asyncio.create_task(run_bettors(
        f"http://127.0.0.1:{worker.http_port}", f"ws://127.0.0.1:{worker.ws_port}/ws",
        token_for, config, stop=stop))
    headers = {"Authorization": f"Bearer {mint_token(worker.settings, 'risk:read')}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            async def counts(sub: str) -> dict[str, Any]:
                url = f"http://127.0.0.1:{worker.http_port}/v1/risk/accounts/{sub}"
                async with http.get(url) as r:
                    assert r.status == 200
                    return dict((await r.json())["counts"])

            async def until(check: Callable[[dict[str, Any]], bool], sub: str) -> None:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 10
                while not check(await counts(sub)):
                    assert loop.time() < deadline, f"{sub} did not bet in time"
                    await asyncio.sleep(0.02)

            await until(lambda c: c["accepted"] >= 1, "punter-0")
            await until(lambda c: c["accepted"] >= 1, "punter-1")
            await worker.store.apply(price("m1", 26000))
            await until(lambda c: c["rejected_price_changed"] >= 1, "sharp-0")
            sharp = await counts("sharp-0")
            assert sharp["stale_lt250ms"] == sharp["rejected_price_changed"]
    finally:
        stop.set()
        stats = await asyncio.wait_for(bettors, 10)
    assert stats.sent["sharp-0"] >= 1
    assert stats.failed == 0
