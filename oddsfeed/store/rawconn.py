"""What the store's plain asyncio connections share (the pub/sub bus's shards and the read
connection): RESP packing, opening the stream, and the AUTH command from redis-py's own
connection settings, so both authenticate exactly as the store's client does."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, cast

import hiredis

__all__ = ["auth_command", "open_stream", "pack"]


def pack(args: tuple[Any, ...]) -> bytes:
    """One command in RESP (str as UTF-8, int in decimal)."""
    return cast(bytes, hiredis.pack_command(args))


async def open_stream(protocol: asyncio.Protocol, *, host: str, port: int, path: str = "",
                      ssl_context: ssl.SSLContext | None = None, limit_s: float) -> None:
    """Connect ``protocol`` to the unix socket ``path`` when set, else to ``host:port``
    (over TLS with ``ssl_context``); raises TimeoutError past ``limit_s`` seconds."""
    loop = asyncio.get_running_loop()
    connect: Any
    if path:
        connect = loop.create_unix_connection(lambda: protocol, path)
    else:
        connect = loop.create_connection(lambda: protocol, host, port, ssl=ssl_context)
    await asyncio.wait_for(connect, limit_s)


async def auth_command(username: str | None, password: str | None,
                       provider: Any = None) -> tuple[str, ...] | None:
    """The AUTH command for these settings (a credential provider's answer first), or None
    when there is no password."""
    if provider is not None:
        creds = await provider.get_credentials_async()
        username, password = (creds[0], creds[1]) if len(creds) == 2 else (None, creds[0])
    if password is None:
        return None
    return ("AUTH", username, password) if username else ("AUTH", password)
