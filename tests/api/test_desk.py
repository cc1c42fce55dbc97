"""The desk's event bet stop and bet start over HTTP, on the 3-node cluster: the answer
comes after every shard applied it, and no validation accepts a leg of the event after."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from oddsfeed.api.app import build_app
from oddsfeed.embedded import EmbeddedCluster
from oddsfeed.store import Store
from oddsfeed.store.codec import state_key

from .conftest import BODY, Api, api_settings, mint, serve


@pytest.fixture
async def cluster_api(valkey_cluster: EmbeddedCluster) -> AsyncIterator[Api]:
    """The real app over a Store on the emptied 3-primary cluster."""
    store = await Store.connect(valkey_cluster.url, cluster=True)
    await store.client.flushall(target_nodes="primaries")  # type: ignore[call-arg]
    settings = api_settings(valkey_cluster.url)
    runner, port = await serve(build_app(settings, store))
    session = aiohttp.ClientSession()
    try:
        yield Api(session, f"http://127.0.0.1:{port}", store, settings)
    finally:
        await session.close()
        await runner.cleanup()
        await store.close()


def ids_on_every_shard(store: Store, per_shard: int) -> list[str]:
    """Market ids whose hash slots put ``per_shard`` of them on each primary."""
    by_node: dict[str, list[str]] = {}
    i = 0
    while len(by_node) < 3 or min(len(v) for v in by_node.values()) < per_shard:
        node = store.client.get_node_from_key(state_key(f"g{i}"))  # type: ignore[union-attr]
        by_node.setdefault(node.name, []).append(f"g{i}")
        i += 1
    return sorted(mid for ids in by_node.values() for mid in ids[:per_shard])


async def put(api: Api, mid: str, event: str = "e1", status: str = "open") -> int:
    """Create one market of ``event``; its version."""
    st, body, _ = await api.call("PUT", f"/v1/markets/{mid}",
                                 {**BODY, "event": event, "status": status})
    assert st == 201, body
    return int(body["version"])


async def validate(api: Api, legs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The legs' verdicts of one bet-slip validation."""
    st, body, _ = await api.call("POST", "/v1/bets/validate", {"legs": legs})
    assert st == 200, body
    return list(body["legs"])


async def test_no_validation_accepted_after_bet_stop_answers(cluster_api: Api) -> None:
    """Of the validations sent (4 at a time) once bet-stop has answered, 0 of at least 60
    legs on the event's markets (3 per shard) are accepted; after bet-start the old versions
    give market_changed and the fresh ones are accepted."""
    api = cluster_api
    ids = ids_on_every_shard(api.store, 3)
    versions = {mid: await put(api, mid) for mid in ids}
    await put(api, "own", status="suspended")
    legs = [{"market": mid, "selection": "h", "price": 3.5, "version": v}
            for mid, v in versions.items()]
    assert all(leg["ok"] for leg in await validate(api, legs))

    answered = asyncio.Event()
    late: list[bool] = []  # the verdicts of slips sent after bet-stop answered

    async def keep_validating() -> None:
        while len(late) < 60:
            sent_after = answered.is_set()
            verdicts = await validate(api, legs)
            if sent_after:
                late.extend(v["ok"] for v in verdicts)

    workers = [asyncio.create_task(keep_validating()) for _ in range(4)]
    st, res, _ = await api.call("POST", "/v1/events/e1/bet-stop")
    answered.set()
    assert st == 200
    assert res["status"] == "stopped"
    assert res["event"] == "e1"
    assert sorted(m["market"] for m in res["markets"]) == sorted([*ids, "own"])
    async with asyncio.timeout(20):
        await asyncio.gather(*workers)
    assert len(late) >= 60
    assert sum(late) == 0
    after = await asyncio.gather(*(validate(api, [leg]) for leg in legs * 5))
    assert {v["reason"] for slip in after for v in slip} == {"market_suspended"}

    st, res, _ = await api.call("POST", "/v1/events/e1/bet-start", {"ts": 5})
    assert st == 200
    assert res["status"] == "started"
    reopened = await validate(api, legs)
    assert {v["reason"] for v in reopened} == {"market_changed"}
    fresh = [{**leg, "version": v["version"]} for leg, v in zip(legs, reopened)]
    assert all(v["ok"] for v in await validate(api, fresh))
    st, own, _ = await api.call("GET", "/v1/markets/own")
    assert own["status"] == "suspended"  # suspended by the desk for its own reason


async def test_market_created_during_bet_stop_over_http(cluster_api: Api) -> None:
    """A market PUT while its event is stopped is created suspended and bet-start opens it."""
    api = cluster_api
    st, res, _ = await api.call("POST", "/v1/events/e2/bet-stop", {})
    assert st == 200
    assert res["markets"] == []
    await put(api, "late", event="e2")
    st, body, _ = await api.call("GET", "/v1/markets/late")
    assert body["status"] == "suspended"
    st, res, _ = await api.call("POST", "/v1/events/e2/bet-start")
    assert res["markets"] == [{"market": "late", "version": 2}]
    st, body, _ = await api.call("GET", "/v1/markets/late")
    assert body["status"] == "open"


@pytest.mark.parametrize(("body", "token", "status"), [
    ({"ts": 1, "extra": 1}, None, 400), ({"ts": -1}, None, 400), ({"ts": "1"}, None, 400),
    (None, mint("odds:read"), 403), (None, "", 200)])
async def test_bet_stop_requests(cluster_api: Api, body: Any, token: str | None,
                                 status: int) -> None:
    """Unknown fields and bad ts are 400, a token without odds:write is 403."""
    st, res, _ = await cluster_api.call("POST", "/v1/events/e3/bet-stop", body,
                                        token=token if token is not None else "")
    assert st == status, res


async def test_bet_stop_is_idempotent_per_key(cluster_api: Api) -> None:
    """A repeated Idempotency-Key replays the first answer instead of stopping again."""
    api = cluster_api
    await put(api, "i1", event="e4")
    h = {"Idempotency-Key": "k1"}
    first = await api.call("POST", "/v1/events/e4/bet-stop", headers=h)
    again = await api.call("POST", "/v1/events/e4/bet-stop", headers=h)
    assert first[0] == again[0] == 200
    assert first[1] == again[1]
    st, body, _ = await api.call("GET", "/v1/markets/i1")
    assert body["version"] == 2
