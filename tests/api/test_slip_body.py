"""The validation route's body read (plumbing.whole_json_body): a body that arrived whole and
one that arrives in pieces get the same answers, and the size bound and media type hold."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from .conftest import Api

SLIPS: list[Any] = [
    {"legs": [{"market": "m1", "selection": "h", "price": 2.5}]},
    {"legs": [{"market": "m1", "selection": "h", "price": 2.5},
              {"market": "nope", "selection": "h", "price": 2.5}], "accept": "any"},
    {"legs": []},
    {"legs": [{"market": "m1", "selection": "h", "price": "x"}]},
    [1, 2],
]


async def _pieces(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 7):
        yield data[i:i + 7]
        await asyncio.sleep(0.002)  # separate writes, so the body trails the headers


async def _post(api: Api, data: Any, ctype: str = "application/json") -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {api.token}", "Content-Type": ctype}
    async with api.session.post(api.base + "/v1/bets/validate", data=data,
                                headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def test_whole_and_trickled_bodies_get_the_same_answers(api: Api) -> None:
    """Each slip (accepted, rejected, invalid) is answered alike when its body comes with
    the headers and when it trickles in 7-byte chunked pieces."""
    await api.call("PUT", "/v1/markets/m1", {
        "event": "e", "sport": "s", "name": "n", "status": "open",
        "selections": {"h": {"name": "H", "price": 2.5}}})
    for slip in SLIPS:
        raw = json.dumps(slip).encode()
        whole = await _post(api, raw)
        trickled = await _post(api, _pieces(raw))
        assert whole == trickled, slip
    assert (await _post(api, json.dumps(SLIPS[0]).encode()))[0] == 200


async def test_the_size_bound_and_media_type_hold(make_api: Callable[..., Any]) -> None:
    """A body past api.max_body_bytes is 413 whole or in pieces; a body under it with the
    wrong Content-Type is 415; an empty body is 400."""
    api: Api = await make_api(**{"api.max_body_bytes": 200})
    big = json.dumps({"legs": [{"market": "m1", "selection": "h", "price": 2.5}] * 6}).encode()
    assert len(big) > 200
    for data in (big, _pieces(big)):
        status, problem = await _post(api, data)
        assert status == 413
        assert problem["title"] == "request body too large"
    ok = json.dumps(SLIPS[0]).encode()
    assert (await _post(api, ok, ctype="text/plain"))[0] == 415
    status, problem = await _post(api, b"")
    assert status == 400
    assert problem["title"] == "invalid json"


async def test_a_body_with_a_content_length_past_the_bound(make_api: Callable[..., Any]
                                                           ) -> None:
    """A raw request whose whole body is in the first packet and past the bound is 413."""
    api: Api = await make_api(**{"api.max_body_bytes": 100})
    body = b'{"legs": [' + b" " * 200 + b"]}"
    host, port = api.base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /v1/bets/validate HTTP/1.1\r\nHost: x\r\n"
                 b"Authorization: Bearer " + api.token.encode() + b"\r\n"
                 b"Content-Type: application/json\r\nConnection: close\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 413 ")
