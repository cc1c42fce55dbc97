"""Idempotency records of the HTTP writes: one key per request scope
(``of:idem:<sha256>``) with a TTL, so a retry on any worker finds the first answer.

A record is ``{"state": "pending", "digest"}`` while its first run is in flight and
``{"state": "done", "digest", "status", "body"}`` once answered. Every redis failure is
raised as :class:`IdempotencyStoreError`."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, cast

from redis.exceptions import RedisError

from ..core.errors import StoreError

if TYPE_CHECKING:
    from .redis_store import Store

__all__ = ["IdempotencyRecord", "IdempotencyStoreError", "record_key"]

KEY_PREFIX = "of:idem:"


class IdempotencyStoreError(StoreError):
    """The store failed an idempotency record call (a 503 to the client, like any store
    failure)."""


def record_key(scope_digest: str) -> str:
    """The store key of the record whose request scope hashes to ``scope_digest``."""
    return KEY_PREFIX + scope_digest


class IdempotencyRecord:
    """The record of one request scope in the store, held ``ttl_s`` seconds."""

    def __init__(self, store: Store, key: str, ttl_s: int) -> None:
        self.client, self.key, self.ttl_s = store.client, key, ttl_s

    async def _do(self, call: Awaitable[Any]) -> Any:
        try:
            return await call
        except (RedisError, OSError) as exc:
            raise IdempotencyStoreError(f"idempotency record: {exc}") from None

    async def claim(self, digest: str) -> bool:
        """Claim the key for a run (SET NX with a placeholder); False if someone has it."""
        rec = json.dumps({"state": "pending", "digest": digest})
        return bool(await self._do(self.client.set(self.key, rec, nx=True, ex=self.ttl_s)))

    async def get(self) -> dict[str, Any] | None:
        """The record, or None when there is none (released or expired)."""
        raw = await self._do(self.client.get(self.key))
        return None if raw is None else cast(dict[str, Any], json.loads(raw))

    async def done(self, digest: str, status: int, body: Any) -> None:
        """Store the first answer for retries."""
        rec = {"state": "done", "digest": digest, "status": status, "body": body}
        await self._do(self.client.set(self.key, json.dumps(rec), ex=self.ttl_s))

    async def release(self) -> None:
        """Drop the record so a retry runs again."""
        await self._do(self.client.delete(self.key))
