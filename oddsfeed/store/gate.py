"""The event gate a market's creation passes so that an event bet stop misses no market.

A bet stop runs, in the event's slot and atomically, "bump the record, then list the
event's markets and the ones being created"; a creation runs, in the same slot and
atomically, "announce the id as being created, then read the record", and passes the record
to the apply script. Whichever of the two runs first, the other sees it: either the bet
stop lists the new id (and writes its record into that market's slot before answering) or
the creation reads the new record; the apply script keeps the newer of the two by ``gen``.
The announcement is withdrawn once the market is indexed in the event set (or the creation
failed), so one of the two lists holds the id at every moment in between.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from .codec import bet_stop_key, creating_key

# KEYS: 1 bet-stop record, 2 creating hash; ARGV: 1 market id. Returns '<gen>:<on>'.
ENTER = """
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
local r = redis.call('HMGET', KEYS[1], 'gen', 'on')
return (r[1] or '0') .. ':' .. (r[2] or '0')
"""
# KEYS: 1 creating hash; ARGV: 1 market id.
LEAVE = """
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"""
# KEYS: 1 event set, 2 bet-stop record, 3 creating hash; ARGV: 1 '1' stop, '0' start.
# Returns {gen, ids}: the new record's gen and every market id of the event, listed or
# being created.
SWITCH = """
local gen = redis.call('HINCRBY', KEYS[2], 'gen', 1)
redis.call('HSET', KEYS[2], 'on', ARGV[1])
local ids = redis.call('SMEMBERS', KEYS[1])
local new = redis.call('HGETALL', KEYS[3])
for i = 1, #new, 2 do table.insert(ids, new[i]) end
return {gen, ids}
"""


async def enter(client: Redis | RedisCluster, pairs: Iterable[tuple[str, str]]
                ) -> list[str]:
    """Announce each (event, market) as being created; the event's record for each, in order
    (one pipelined round trip)."""
    pipe: Any = client.pipeline(transaction=False)
    for event, mid in pairs:
        pipe.execute_command("EVAL", ENTER, 2, bet_stop_key(event), creating_key(event), mid)
    return [x.decode() if isinstance(x, bytes) else str(x) for x in await pipe.execute()]


def queue_leave(pipe: Any, pairs: Iterable[tuple[str, str]]) -> None:
    """Queue on ``pipe`` the withdrawal of the announcements of :func:`enter` (after the
    commands indexing the markets, so one of the two always lists them)."""
    for event, mid in pairs:
        pipe.execute_command("EVAL", LEAVE, 1, creating_key(event), mid)


async def leave(client: Redis | RedisCluster, pairs: Iterable[tuple[str, str]]) -> None:
    """Withdraw the announcements of :func:`enter` (one pipelined round trip)."""
    pipe: Any = client.pipeline(transaction=False)
    queue_leave(pipe, pairs)
    await pipe.execute()
