"""Hostile WebSocket frames, on both subprotocols, against a real worker and store: each gets
``error`` ``bad_request`` echoing nothing it could not encode (or a valid reply, if it
happens to be a valid request), the connection stays open (no 1011, no close at all), no
ERROR or traceback is logged, and the store is unchanged (protocol.md section 2)."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator

import msgpack
import pytest
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection

from oddsfeed.core import wire
from oddsfeed.core.errors import ProtocolViolation
from oddsfeed.worker import Worker
from tests.fanout.builders import create

from .ws_frames import ERROR_CODES, JSON_FRAMES, MSGPACK_FRAMES, REPLY_OPS, nested
from .ws_support import (
    errors_logged,
    exchange,
    make_settings,
    mint_token,
    raw_connect,
    store_digest,
    worker_on,
)

#: (encoding, frame): each must get exactly one error bad_request
BAD: list[tuple[str, str | bytes]] = [
    ("json", '{"op":"ping","id":"\\ud800"}'),
    ("json", '{"op":"subscribe","id":"m\\udfff","markets":["m1"]}'),
    ("json", '{"op":"ping","id":1000000000000000000000000000000}'),
    ("json", '{"op":"ping","id":-9007199254740993}'),
    ("json", '{"op":"ping","id":' + "9" * 5000 + "}"),
    ("json", nested(30_000)),
    ("json", '{"op":"subscribe","markets":' + "[" * 20_000 + "]" * 20_000 + "}"),
    ("json", '{"op":"\\ud800","id":1}'),
    ("json", '{"op":"ping","\\ud800":1}'),
    ("json", '{"op":["ping"]}'),
    ("json", '{"op":"ping","id":true}'),
    ("json", '{"op":"subscribe","markets":["m1\\n"]}'),
    ("json", '{"op":"unsubscribe","events":[{"a":1}]}'),
    ("json", '{"op":"subscribe","markets":["m1"],"from":{"m1":{"epoch":"e","version":1e400}}}'),
    ("json", '{"op":"validate","legs":[{"market":"m1","selection":"h","price":{"decimal":[[]]}}]}'),
    ("json", '{"op":"validate","legs":[{"market":"m1","selection":"h","price":2,'
             '"version":1000000000000000000000000000000}]}'),
    ("json", '{"op":"validate","legs":[{"market":"m1","selection":"h","price":2,'
             '"epoch":"\\ud800"}]}'),
    ("json", '{"op":"validate","legs":[{"market":"m1","selection":"h","price":2}],"accept":5}'),
    ("msgpack", '{"op":"ping","id":"\\ud800"}'),  # JSON text frames are read there too
    ("msgpack", '{"op":"ping","id":1000000000000000000000000000000}'),
    ("msgpack", msgpack.packb({"op": "ping", "id": 2**64 - 1})),
    ("msgpack", msgpack.packb({"op": "ping", "id": -(2**63)})),
    ("msgpack", b"\x81\xa2id" + b"\x91" * 3000 + b"\xc0"),
    ("msgpack", b"\x82\xa2op\xa4ping\xa2id\xa2\xed\xa0"),  # an encoded lone surrogate
    ("msgpack", b"\x81\x91\x01\x02"),  # a list as a map key
    ("msgpack", msgpack.packb({"op": "ping", "id": msgpack.ExtType(5, b"x")})),
    ("msgpack", msgpack.packb({"op": "subscribe", "markets": ["m1"],
                               "from": {"m1": {"epoch": b"bytes", "version": 1}}})),
    ("msgpack", msgpack.packb({"op": "subscribe", "markets": ["m1"],
                               "from": {"m1": {"epoch": "e", "version": float("nan")}}})),
    ("msgpack", msgpack.packb({1: 2})),
]


@pytest.fixture
async def frames_worker(valkey_url: str, redis_client: redis.asyncio.Redis
                        ) -> AsyncIterator[tuple[Worker, str]]:
    """A worker with two markets, and a token that may read and validate."""
    overrides = {"auth.anonymous_read": False}
    async with worker_on(valkey_url, **overrides) as w:
        await w.store.apply_many([create("m1"), create("m2", "e2")])
        token = mint_token(make_settings(valkey_url, **overrides), "odds:read", "bets:validate")
        yield w, token


async def test_bad_frames_get_bad_request(frames_worker: tuple[Worker, str], valkey_url: str,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """Each frame of BAD (lone surrogates, 10^30 and 2^64 ids, deep nesting, wrong types)
    gets one ``error`` ``bad_request`` carrying no id it could not encode, on a connection
    that stays open; nothing is logged at ERROR and the store is unchanged."""
    w, token = frames_worker
    before = await store_digest(valkey_url)
    conns: dict[str, ClientConnection] = {}
    for n, (encoding, frame) in enumerate(BAD):
        ws = conns.get(encoding) or await raw_connect(w, encoding, token)
        conns[encoding] = ws
        seen = await exchange(ws, encoding, frame, marker=n)
        assert [m["op"] for m in seen] == ["error"], (frame, seen)
        assert seen[0]["code"] == "bad_request", (frame, seen)
        assert seen[0].get("id") in (None, 1), (frame, seen)  # only a valid id is echoed
        json.dumps(seen[0], ensure_ascii=False).encode()  # printable as it is
    for ws in conns.values():
        assert ws.close_code is None
        await ws.close()
    assert await store_digest(valkey_url) == before
    assert not errors_logged(caplog)


_marker = itertools.count(10_000)


async def check_frames(w: Worker, token: str, encoding: str, frames: list[str | bytes]) -> None:
    """The invariant on one connection: every frame gets replies of documented ops and
    codes only, and the connection stays open."""
    ws = await raw_connect(w, encoding, token)
    try:
        for frame in frames:
            seen = await exchange(ws, encoding, frame, marker=next(_marker))
            for m in seen:
                assert m.get("op") in REPLY_OPS, (frame, m)
                if m["op"] == "error":
                    assert m["code"] in ERROR_CODES, (frame, m)
        assert ws.close_code is None
    finally:
        await ws.close()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(json_frames=st.lists(JSON_FRAMES, min_size=1, max_size=5),
       msgpack_frames=st.lists(MSGPACK_FRAMES, min_size=1, max_size=5))
async def test_hostile_frames_invariant(frames_worker: tuple[Worker, str], valkey_url: str,
                                        caplog: pytest.LogCaptureFixture,
                                        json_frames: list[str | bytes],
                                        msgpack_frames: list[str | bytes]) -> None:
    """Whatever the frames (hypothesis: hostile values in every field, nesting, huge
    integers, lone surrogates, random bytes; both encodings): no close (so no 1011), only
    documented replies and error codes, no ERROR or traceback logged, the store unchanged."""
    w, token = frames_worker
    before = await store_digest(valkey_url)
    await check_frames(w, token, "json", json_frames)
    await check_frames(w, token, "msgpack", msgpack_frames)
    assert await store_digest(valkey_url) == before
    assert not errors_logged(caplog)
    # what it subscribed went with its connection
    assert not w.hub.clients or all(not c.pending for c in w.hub.clients)


@settings(max_examples=300, deadline=None)
@given(frame=JSON_FRAMES | MSGPACK_FRAMES, encoding=st.sampled_from(["json", "msgpack"]))
def test_decode_request_accepts_or_refuses_cleanly(frame: str | bytes, encoding: str) -> None:
    """The codec alone (no I/O): any frame decodes to a request or raises ProtocolViolation,
    and the reply to it (the error, or a pong echoing the id) encodes in both encodings."""
    try:
        req = wire.decode_request(frame, encoding)
    except ProtocolViolation as exc:
        out = wire.error(exc.code, exc.message, exc.request_id)
    else:
        out = wire.reply("pong", req.id)
    out.payload("json")
    out.payload("msgpack")


def test_an_unknown_leg_field_with_a_lone_surrogate_is_refused_cleanly() -> None:
    """A leg's unknown field named by a lone surrogate (a JSON escape) is refused with an
    error that encodes in both encodings."""
    frame = '{"op": "validate", "id": 1, "legs": [{"\\ud800": 1}]}'
    with pytest.raises(ProtocolViolation) as caught:
        wire.decode_request(frame, "json")
    assert "unknown field" in caught.value.message
    out = wire.error(caught.value.code, caught.value.message, caught.value.request_id)
    assert json.loads(out.payload("json"))["code"] == caught.value.code
    out.payload("msgpack")


def test_reply_to_every_valid_id_encodes() -> None:
    """Every request id the decoder accepts can be echoed in both encodings."""
    for rid in (2**53, -(2**53), "x" * 128, "\u00e9\U0001f600", 0):
        for encoding in ("json", "msgpack"):
            req = wire.decode_request(json.dumps({"op": "ping", "id": rid}), encoding)
            assert isinstance(req, wire.Ping)
            wire.reply("pong", req.id).payload(encoding)
