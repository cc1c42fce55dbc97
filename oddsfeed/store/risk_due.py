"""The beat queue in Valkey: accepted legs waiting for their beat window to end.

Keys: ``of:{rdue:<shard>}`` for shard 0..shards-1, a sorted set per shard (the hash tag
puts the shards in different cluster slots, so they spread over the primaries); member =
msgpack ``[sub, market, selection, price, version, at_ms, due_ms, nonce]`` (the nonce keeps
two equal legs apart), score = ``due_ms``. A push adds to one shard (round robin) only while
it holds fewer than ``max_due // shards`` legs: a full shard refuses the new legs (counted
by the caller), the old ones stay. A pop takes the due legs of every shard, each shard's
in one atomic script that reads and removes them, so one leg is judged by exactly one
worker. A leg popped by a worker that dies before adding its count is lost (at most once).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from typing import Any

import msgpack
from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from ..core.errors import StoreError
from ..core.risk import DueLeg

_PUSH = """
-- KEYS: 1 the shard; ARGV: 1 the cap, then (due_ms, member) pairs. Returns how many fit.
local room = tonumber(ARGV[1]) - redis.call('ZCARD', KEYS[1])
local n = 0
for i = 2, #ARGV, 2 do
  if n >= room then break end
  redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1])
  n = n + 1
end
return n
"""
_POP = """
-- KEYS: 1 the shard; ARGV: 1 now (ms), 2 the most legs to take. Returns the legs taken.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #due > 0 then redis.call('ZREM', KEYS[1], unpack(due)) end
return due
"""


def due_key(shard: int) -> str:
    return f"of:{{rdue:{shard}}}"


async def eval_many(client: Redis | RedisCluster, script: Any,
                    calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
    """Run ``script`` (from ``register_script``) once per ``(key, args)`` in one pipelined
    round trip (a second one only for the calls a server answered NOSCRIPT: those did not
    run, so retrying them cannot apply anything twice). Raises StoreError."""
    results: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    try:
        for attempt in range(2):
            pipe = client.pipeline(transaction=False)
            for i in todo:
                key, args = calls[i]
                pipe.evalsha(script.sha, 1, key, *args)
            replies = await pipe.execute(raise_on_error=False)
            missing = []
            for i, reply in zip(todo, replies, strict=True):
                if isinstance(reply, redis_errors.NoScriptError) and attempt == 0:
                    missing.append(i)
                elif isinstance(reply, Exception):
                    raise StoreError(f"risk script failed: {reply}")
                else:
                    results[i] = reply
            if not missing:
                break
            await client.script_load(script.script)
            todo = missing
    except (redis_errors.RedisError, OSError) as exc:
        raise StoreError(f"risk script failed: {exc}") from None
    return results


class DueQueue:
    """The beat queue adapter (one per process); ``max_due`` bounds all shards together."""

    def __init__(self, client: Redis | RedisCluster, *, shards: int, max_due: int) -> None:
        if shards < 1 or max_due < shards:
            raise ValueError(f"shards {shards} must be >= 1 and <= max_due {max_due}")
        self.client = client
        self.shards = shards
        self.per_shard = max_due // shards
        self._push = client.register_script(_PUSH)
        self._pop = client.register_script(_POP)
        self._shard = itertools.count(int.from_bytes(os.urandom(2), "big"))
        self._nonces = itertools.count()
        self._nonce = int.from_bytes(os.urandom(4), "big") << 32

    async def push(self, legs: Sequence[DueLeg]) -> int:
        """Queue ``legs`` (one shard per call, round robin) in one round trip; returns how
        many a full shard refused. Raises StoreError."""
        if not legs:
            return 0
        shard = next(self._shard) % self.shards
        args: list[Any] = [self.per_shard]
        for leg in legs:
            nonce = self._nonce | (next(self._nonces) & 0xFFFFFFFF)
            args += [leg.due_ms, msgpack.packb([leg.sub, leg.market, leg.selection, leg.price,
                                                leg.version, leg.at_ms, leg.due_ms, nonce])]
        (added,) = await eval_many(self.client, self._push, [(due_key(shard), args)])
        return len(legs) - int(added)

    async def pop(self, now_ms: int, limit: int) -> list[DueLeg]:
        """Take (and remove) up to ``limit`` legs per shard whose window ended by
        ``now_ms``, from every shard in one round trip. Raises StoreError."""
        replies = await eval_many(self.client, self._pop,
                                  [(due_key(s), [now_ms, limit]) for s in range(self.shards)])
        out = []
        for reply in replies:
            for raw in reply or []:
                sub, market, selection, price, version, at_ms, due_ms, _ = msgpack.unpackb(raw)
                out.append(DueLeg(sub, market, selection, price, version, at_ms, due_ms))
        return out

    async def size(self) -> int:
        """Legs queued in every shard (tests, metrics). Raises StoreError."""
        try:
            pipe = self.client.pipeline(transaction=False)
            for s in range(self.shards):
                pipe.zcard(due_key(s))
            return sum(int(n) for n in await pipe.execute())
        except (redis_errors.RedisError, OSError) as exc:
            raise StoreError(f"risk due size failed: {exc}") from None
