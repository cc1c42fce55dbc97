"""WebSocket auth (protocol.md section 5) and the validate op (section 4) over the socket."""

from __future__ import annotations

import time
from collections.abc import Callable

import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from oddsfeed.core.model import MarketUpdate
from oddsfeed.settings import Settings
from oddsfeed.worker import Worker

from .builders import create, price
from .conftest import SECRET, WorkerFactory, mint_token, ws_url
from .mirror import Mirror, wait_until

CLOSED = {"anonymous_read": False}


async def handshake_status(url: str, **kwargs: object) -> int:
    try:
        async with connect(url, **kwargs):  # type: ignore[arg-type]
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


async def test_tokens_at_the_handshake(start_worker: WorkerFactory) -> None:
    """Without anonymous reading: no token, a bad, expired, wrongly signed or unsigned token
    is refused with 401 at the handshake; a good one is accepted by query or header."""
    async with start_worker(**{"auth.anonymous_read": False}) as w:
        s = w.settings
        good = mint_token(s, "odds:read")
        now = int(time.time())
        expired = jwt.encode({"sub": "x", "exp": now - 10, "scope": "odds:read"}, SECRET,
                             algorithm="HS256")
        foreign = jwt.encode({"sub": "x", "exp": now + 600, "scope": "odds:read"},
                             "another-secret-that-is-long-enough-0123456789", algorithm="HS256")
        unsigned = jwt.encode({"sub": "x", "exp": now + 600, "scope": "odds:read"}, None,
                              algorithm="none")
        assert await handshake_status(ws_url(w)) == 401
        for bad in ("not-a-token", expired, foreign, unsigned):
            assert await handshake_status(ws_url(w, bad)) == 401, bad
        assert await handshake_status(ws_url(w, good)) == 101
        assert await handshake_status(ws_url(w),
                                      additional_headers={"Authorization": f"Bearer {good}"}) == 101


async def test_scopes_gate_ops(start_worker: WorkerFactory) -> None:
    """A token without odds:read is accepted but its subscribe gets forbidden; validate
    without bets:validate gets forbidden; the connection stays usable."""
    async with start_worker(**{"auth.anonymous_read": False}) as w:
        await w.store.apply(create("m1"))
        s: Settings = w.settings
        c = await Mirror.open(ws_url(w, mint_token(s, "bets:validate")))
        reply = await c.request({"op": "subscribe", "markets": ["m1"]})
        assert reply["op"] == "error"
        assert reply["code"] == "forbidden"
        assert (await c.request({"op": "ping"}))["op"] == "pong"
        ok = await c.request({"op": "validate", "legs": [
            {"market": "m1", "selection": "h", "price": 2.5}]})
        assert ok["op"] == "validation"
        await c.close()
        r = await Mirror.open(ws_url(w, mint_token(s, "odds:read")))
        reply = await r.request({"op": "validate", "legs": [
            {"market": "m1", "selection": "h", "price": 2.5}]})
        assert reply["op"] == "error"
        assert reply["code"] == "forbidden"
        sub = await r.request({"op": "subscribe", "markets": ["m1"]})
        assert sub["op"] == "subscribed"
        await wait_until(lambda: "m1" in r.markets)
        await r.close()


async def test_anonymous_reader_cannot_validate(worker: Worker) -> None:
    """With anonymous reading on, a connection without a token may subscribe but not
    validate."""
    c = await Mirror.open(ws_url(worker))
    assert (await c.request({"op": "subscribe", "markets": ["m1"]}))["op"] == "subscribed"
    reply = await c.request({"op": "validate", "legs": [
        {"market": "m1", "selection": "h", "price": 2.5}]})
    assert reply["code"] == "forbidden"
    await c.close()


async def test_expiring_token_closes_4001(start_worker: WorkerFactory) -> None:
    """When a connection's token expires the server closes it with 4001 within a second."""
    async with start_worker(**{"auth.anonymous_read": False}) as w:
        token = mint_token(w.settings, "odds:read", ttl_s=1)
        exp = jwt.decode(token, options={"verify_signature": False})["exp"]
        c = await Mirror.open(ws_url(w, token))
        await wait_until(lambda: c.done.is_set(), max(0.0, exp - time.time()) + 1.5,
                         "close after expiry")
        assert c.close_code == 4001
        assert time.time() >= exp - 0.05


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_validate_op(worker: Worker, mint: Callable[..., str], encoding: str) -> None:
    """validate replies validation: accepted at the current price, price_changed at an old
    price under exact (with the current price and version), accepted under better/any,
    unknown markets and suspended markets named."""
    store = worker.store
    await store.apply(create("m1", h=25000, a=30000))
    await store.apply(price("m1", 26000))
    await store.apply(create("m2"))
    await store.apply(MarketUpdate(market="m2", fields={"status": "suspended"}))
    c = await Mirror.open(ws_url(worker, mint("odds:read", "bets:validate")), encoding)

    async def validate(legs: list[dict[str, object]], accept: str | None = None
                       ) -> dict[str, object]:
        msg: dict[str, object] = {"op": "validate", "legs": legs}
        if accept:
            msg["accept"] = accept
        reply = await c.request(msg)
        assert reply["op"] == "validation", reply
        return reply

    cur = await validate([{"market": "m1", "selection": "h", "price": 2.6}])
    assert cur["ok"] is True
    assert cur["legs"] == [{"market": "m1", "selection": "h", "ok": True, "price": 2.6,
                            "version": 2}]
    frac = await validate([{"market": "m1", "selection": "h", "price": "8/5"}])
    assert frac["ok"] is True
    old = await validate([{"market": "m1", "selection": "h", "price": 2.5}])
    assert old["ok"] is False
    assert old["legs"][0]["reason"] == "price_changed"  # type: ignore[index]
    assert old["legs"][0]["price"] == 2.6  # type: ignore[index]
    assert old["legs"][0]["version"] == 2  # type: ignore[index]
    assert (await validate([{"market": "m1", "selection": "h", "price": 2.5}], "better"))["ok"]
    assert (await validate([{"market": "m1", "selection": "h", "price": 3.0}], "any"))["ok"]
    worse = await validate([{"market": "m1", "selection": "h", "price": 3.0}], "better")
    assert worse["legs"][0]["reason"] == "price_changed"  # type: ignore[index]
    multi = await validate([{"market": "m1", "selection": "a", "price": 3.0},
                            {"market": "nope", "selection": "h", "price": 2.0},
                            {"market": "m2", "selection": "h", "price": 2.5}])
    assert multi["ok"] is False
    assert [leg.get("reason") for leg in multi["legs"]] == [  # type: ignore[attr-defined,union-attr]
        None, "unknown_market", "market_suspended"]
    assert multi["legs"][1]["price"] is None  # type: ignore[index]
    await c.close()
