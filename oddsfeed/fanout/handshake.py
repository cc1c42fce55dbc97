"""The WebSocket handshake: path, per-address connect rate, authentication, per-address and
per-subject caps, subprotocol. Refusals are HTTP answers (404, 401, 429); an accepted
connection carries its principal (:attr:`Connection.principal`), set here the way
websockets' ``basic_auth`` sets ``username``."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from ..auth import ANONYMOUS, Authenticator, AuthError
from ..bearer import bearer_token
from ..core import wire
from . import metrics
from .admission import Admission
from .wsinternals import Connection

ProcessRequest = Callable[[ServerConnection, Request], Response | None]


def peer_ip(connection: ServerConnection) -> str:
    """The peer's address as the admission caps count it."""
    return str(connection.remote_address[0]) if connection.remote_address else "?"


def _token(request: Request) -> str:
    """The token of ``?token=`` or, without one, of an ``Authorization: Bearer`` header."""
    token = (parse_qs(urlsplit(request.path).query).get("token") or [""])[0]
    return token or bearer_token(request.headers.get("Authorization", "")) or ""


def process_request(auth: Authenticator, admission: Admission) -> ProcessRequest:
    """websockets' ``process_request`` for ``/ws``: refuse with an HTTP answer, or accept
    and set ``connection.principal`` (a :class:`~oddsfeed.fanout.wsinternals.Connection`)."""

    def check(connection: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path != "/ws":
            return connection.respond(HTTPStatus.NOT_FOUND, "not found: use /ws\n")
        ip = peer_ip(connection)
        if not admission.rate_ok(ip, time.monotonic()):
            return connection.respond(HTTPStatus.TOO_MANY_REQUESTS, "too many connections\n")
        token = _token(request)
        if token:
            try:
                principal = auth.verify(token)
            except AuthError as exc:
                return connection.respond(HTTPStatus.UNAUTHORIZED, f"unauthorized: {exc}\n")
        elif auth.anonymous_read:
            principal = ANONYMOUS
        else:
            return connection.respond(HTTPStatus.UNAUTHORIZED, "unauthorized: token required\n")
        refused = admission.refusal(ip, principal)
        if refused:
            metrics.CONNECTIONS_REFUSED.labels(refused).inc()
            what = "address" if refused == "ip" else "token subject"
            return connection.respond(HTTPStatus.TOO_MANY_REQUESTS,
                                      f"too many connections for this {what}\n")
        assert isinstance(connection, Connection)  # the server's create_connection
        connection.principal = principal
        return None

    return check


def select_subprotocol(connection: ServerConnection, subprotocols: Sequence[str]) -> Any:
    """The encoding subprotocol the client offered first that the server speaks, if any."""
    name, _ = wire.parse_subprotocols(subprotocols)
    return name
