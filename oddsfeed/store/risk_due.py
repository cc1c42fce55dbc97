"""The beat queue in Valkey: accepted legs waiting for their beat window to end.

Keys: ``of:{rdue:<shard>}`` for shard 0..shards-1, a sorted set per shard (the hash tag
puts the shards in different cluster slots, so they spread over the primaries), and beside
it ``of:{rdue:<shard>}:n``, the legs it holds. One member per push (one recorder batch):
``<legs>|`` then msgpack ``[nonce, [[market, selection, price, version, window_ms, [[sub,
[at_ms, ...]], ...]], ...]]`` (legs grouped by market version, selection and price, then by
account; a leg is due at ``at_ms + window_ms``; the nonce keeps two equal batches apart),
score = the latest due time in it. (A pop also reads the earlier form, ``[..., version,
[[sub, at_ms, due_ms], ...]]``, that a worker of the previous release may have queued.)
A push goes to one shard (round robin) and only if the shard then holds at most
``max_due // shards`` legs: a push past that is refused whole (its legs counted by the
caller), the queued ones stay. A pop takes the due members of every shard, each shard's in
one atomic script that reads and removes them, so one leg is judged by exactly one worker.
Legs popped by a worker that dies before adding their counts are lost (at most once).
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
from ..core.risk import DueGroup

_PUSH = """
-- KEYS: 1 the shard, 2 its leg count; ARGV: 1 the cap (legs), 2 legs, 3 due_ms, 4 member.
-- Returns 1 when queued, 0 when it would take the shard past the cap.
local legs = tonumber(ARGV[2])
if tonumber(redis.call('GET', KEYS[2]) or '0') + legs > tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('INCRBY', KEYS[2], legs)
return 1
"""
_POP = """
-- KEYS: 1 the shard, 2 its leg count; ARGV: 1 now (ms), 2 the most members to take.
-- Returns the members taken.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #due > 0 then
  redis.call('ZREM', KEYS[1], unpack(due))
  local legs = 0
  for _, m in ipairs(due) do legs = legs + tonumber(string.match(m, '^(%d+)|')) end
  redis.call('DECRBY', KEYS[2], legs)
end
return due
"""


def due_key(shard: int) -> str:
    return f"of:{{rdue:{shard}}}"


def count_key(shard: int) -> str:
    return f"of:{{rdue:{shard}}}:n"


async def eval_many(client: Redis | RedisCluster, script: Any,
                    calls: Sequence[tuple[Sequence[str], Sequence[Any]]]) -> list[Any]:
    """Run ``script`` (from ``register_script``) once per ``(keys, args)`` in one pipelined
    round trip (a second one only for the calls a server answered NOSCRIPT: those did not
    run, so retrying them cannot apply anything twice). Raises StoreError."""
    results: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    try:
        for attempt in range(2):
            pipe = client.pipeline(transaction=False)
            for i in todo:
                keys, args = calls[i]
                pipe.evalsha(script.sha, len(keys), *keys, *args)
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

    async def push(self, groups: Sequence[DueGroup]) -> int:
        """Queue ``groups`` as one member of one shard (round robin) in one round trip;
        returns how many legs a full shard refused (all or none). Raises StoreError."""
        legs = sum(g.size() for g in groups)
        if not legs:
            return 0
        shard = next(self._shard) % self.shards
        nonce = self._nonce | (next(self._nonces) & 0xFFFFFFFF)
        member = b"%d|" % legs + msgpack.packb([nonce, groups])  # tuples pack as arrays
        due = max(g.due_ms() for g in groups if g.accepted)
        (added,) = await eval_many(self.client, self._push, [(
            (due_key(shard), count_key(shard)), (self.per_shard, legs, due, member))])
        return 0 if int(added) == 1 else legs

    async def pop(self, now_ms: int, limit: int) -> list[DueGroup]:
        """Take (and remove) up to ``limit`` members per shard whose latest window ended
        by ``now_ms``, from every shard in one round trip; returns their groups. Raises
        StoreError."""
        replies = await eval_many(self.client, self._pop, [
            ((due_key(s), count_key(s)), (now_ms, limit)) for s in range(self.shards)])
        out = []
        for reply in replies:
            for raw in reply or []:
                _, groups = msgpack.unpackb(raw[raw.index(b"|") + 1:])
                for g in groups:
                    if len(g) == 6:
                        out.append(DueGroup(*g))
                    else:  # the earlier form: one (sub, at_ms, due_ms) per leg
                        market, selection, price, version, legs = g
                        out += [DueGroup(market, selection, price, version, due - at,
                                         [(sub, [at])]) for sub, at, due in legs]
        return out

    async def size(self) -> int:
        """Legs queued in every shard (tests, metrics). Raises StoreError."""
        try:
            pipe = self.client.pipeline(transaction=False)
            for s in range(self.shards):
                pipe.get(count_key(s))
            return sum(int(n or 0) for n in await pipe.execute())
        except (redis_errors.RedisError, OSError) as exc:
            raise StoreError(f"risk due size failed: {exc}") from None
