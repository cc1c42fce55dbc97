"""The WebSocket handshake: the response names the server without a version, and the
principal it authenticated rides on the server's connection object."""

from __future__ import annotations

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from oddsfeed.fanout.wsinternals import Connection

from .conftest import WorkerFactory, mint_token, ws_url
from .mirror import wait_until


async def test_the_handshake_response_carries_no_version_banner(
        start_worker: WorkerFactory) -> None:
    """The 101 and the refusals (401, 404) say ``Server: oddsfeed`` and nothing more."""
    async with start_worker(**{"auth.anonymous_read": False}) as w:
        token = mint_token(w.settings, "odds:read")
        async with connect(ws_url(w, token)) as ws:
            assert ws.response is not None
            assert ws.response.headers["Server"] == "oddsfeed"
        refused = {ws_url(w): 401, f"ws://127.0.0.1:{w.ws_port}/elsewhere?token={token}": 404}
        for url, status in refused.items():
            with pytest.raises(InvalidStatus) as info:
                async with connect(url):
                    pass
            assert info.value.response.status_code == status
            assert info.value.response.headers["Server"] == "oddsfeed"


async def test_the_principal_is_set_on_the_connection(start_worker: WorkerFactory) -> None:
    """The token's subject and scopes are the ``principal`` of the server's connection."""
    async with start_worker(**{"auth.anonymous_read": False}) as w:
        token = mint_token(w.settings, "odds:read", "bets:validate", sub="alice")
        async with connect(ws_url(w, token)):
            await wait_until(lambda: len(w.hub.clients) == 1, 5, "the connection")
            (client,) = w.hub.clients
            conn = client.conn
            assert isinstance(conn, Connection)
            assert conn.principal.sub == "alice"
            assert conn.principal.scopes == {"odds:read", "bets:validate"}
