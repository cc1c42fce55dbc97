"""Auto-pipelining: the commands that callers issue within one event-loop turn go to the
store as one pipeline (one per node in cluster mode), so N concurrent requests cost one
round trip and one client call instead of N. The Store uses one instance for applies
(EVALSHA of the apply script) and one for market reads where those do not have a
connection of their own (:mod:`.readconn`: a cluster, or TLS); on a single server a read
batch is one MGET.

Each caller still reaches the store after it asked (a batch is sent only after its last
caller joined, and never answered from an earlier batch), gets its own replies in its own
order, and fails alone when one of its commands fails. In cluster mode a batch is split by
node and each node's part sent on its own, in parallel: a node that fails fails only the
callers with a command on it. When a node's part fails as a whole (the store is down, a
connection drops), every caller in it gets a StoreError at once; nothing is retried here
beyond what the client itself does for one call, except a script the server lost
(NOSCRIPT), which is loaded and the refused commands sent again, in their order.

On a single server, consecutive calls of a script that takes a batch (``batched``: the
apply script) go as one call carrying every item (at most ``BATCH_ITEMS``), whose reply is
the list of the items' replies: the client packs and parses one command instead of N and
the server runs the script once. Each item still gets its own reply, an error included
(the script answers an item's failure in its place). A cluster keeps one call per item
(a script's keys must share a slot there).

An ``ordered`` pipeline (the applies) keeps the order of each key: a caller whose commands
touch a key of a batch still in flight (or of a caller already waiting for one) waits, with
the callers after it that touch the same keys, until that batch came back, so the commands
on a key reach the server in the order they were issued (a later batch never overtakes one
still in flight on a shared key). Callers on other keys go in the next batch at once, up to
``max_in_flight`` batches out together (1: one batch at a time). Reads may be bounded too
(``max_in_flight``) for larger batches under load: a read then waits at most for the
batches in flight to come back before it is sent, and is still sent after it was issued.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from ..core.errors import StoreError

# One command as ``execute_command`` takes it, and the key that routes it to its node.
Command = tuple[Any, ...]

# Items of a batched script per call: bounds how long one call holds the server.
BATCH_ITEMS = 64

# On a single server an ordered pipeline (the applies) sends a batch as soon as it holds
# this many commands, without waiting for the end of the loop turn, while fewer than
# ``max_in_flight`` are out: the server then runs one batch's script call while the client
# still packs the next, instead of the two taking turns on one large batch. (A cluster,
# with one call per item and the items spread over nodes already, does not gain by it.)
SPLIT_ITEMS = 32


@dataclass(slots=True)
class _Call:
    commands: Sequence[Command]
    keys: Sequence[str]
    what: str
    future: asyncio.Future[list[Any]]


class AutoPipeline:
    """Batches the commands of concurrent callers; one per Store (and so per event loop).

    ``scripts`` maps the SHA1 of each script sent with EVALSHA to its source, loaded again
    when a server answers NOSCRIPT. ``batched`` maps the SHA1 of each script that takes a
    batch to its item's shape, (keys, arguments): called with several items' keys and then
    their arguments, in the items' order, it answers the list of their replies.
    """

    def __init__(self, client: Redis | RedisCluster, *, ordered: bool = False,
                 max_in_flight: int = 0, scripts: Mapping[Any, Any] | None = None,
                 batched: Mapping[Any, tuple[int, int]] | None = None) -> None:
        self._client = client
        self._cluster = isinstance(client, RedisCluster)
        # Batches sent and not yet answered, and how many may be (0: any number).
        self._ordered = ordered
        self._limit = max(max_in_flight, 1) if ordered else max(max_in_flight, 0)
        self._in_flight = 0
        self._busy: dict[str, int] = {}  # ordered: key -> its batches in flight
        self._due = False  # a flush is scheduled
        self._scripts = dict(scripts or {})
        self._batched = {} if self._cluster else dict(batched or {})
        self._open: list[_Call] | None = None
        self._open_items = 0  # commands in self._open
        self._split = SPLIT_ITEMS if ordered and not self._cluster else 0
        self._sending: set[asyncio.Task[None]] = set()
        self._closed = False

    async def get(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of ``keys`` (None where absent), read in the next batch.

        Raises StoreError when the store fails this caller's commands or the whole batch.
        """
        return await self.run([("GET", k) for k in keys], keys, "read")

    async def run(self, commands: Sequence[Command], keys: Sequence[str], what: str
                  ) -> list[Any]:
        """The replies to ``commands`` (``keys[i]`` routes ``commands[i]``), sent in the next
        batch, in order. Raises StoreError ("<what> failed ...") when the store fails one of
        them or the whole batch."""
        if self._closed:
            raise StoreError("the store is closed")
        loop = asyncio.get_running_loop()
        call = _Call(commands, keys, what, loop.create_future())
        if self._open is None:
            self._open = []
        self._open.append(call)
        self._open_items += len(commands)
        free = not self._limit or self._in_flight < self._limit
        if free and (len(commands) >= BATCH_ITEMS
                     or 0 < self._split <= self._open_items):
            # A batch that is full enough gains nothing from waiting for the turn's other
            # callers: it goes now, with the calls issued before it, so that batches overlap
            # (an ingest lane's own, or those of many concurrent applies) instead of moving
            # in lockstep with the server.
            self._flush()
        elif free and not self._due:
            # Runs after every callback already ready in this turn, so every request the
            # loop resumed in this turn joins the batch before it is sent.
            self._due = True
            loop.call_soon(self._flush)
        return await call.future

    def _flush(self) -> None:
        self._due = False
        batch, self._open = self._open, None
        self._open_items = 0
        if not batch:
            return
        keys: list[str] = []
        if self._ordered and self._busy:
            # Callers on a key in flight wait, and so do the callers after them on their keys.
            held: list[_Call] = []
            blocked: set[str] = set()
            sent: list[_Call] = []
            for call in batch:
                if any(k in self._busy or k in blocked for k in call.keys):
                    held.append(call)
                    blocked.update(call.keys)
                else:
                    sent.append(call)
            self._open = held or None  # _open_items counts only the calls joining after
            # them (so a long wait on a busy key is scanned again once per SPLIT_ITEMS
            # joining calls at most): the held ones go when their keys come back (_sent)
            batch = sent
            if not batch:
                return  # sent when a batch in flight comes back (_sent)
        if self._ordered:
            for call in batch:
                keys.extend(call.keys)
            for k in keys:
                self._busy[k] = self._busy.get(k, 0) + 1
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(lambda t: self._sent(t, keys))

    def _sent(self, task: asyncio.Task[None], keys: list[str]) -> None:
        self._sending.discard(task)
        self._in_flight -= 1
        for k in keys:
            n = self._busy[k] - 1
            if n:
                self._busy[k] = n
            else:
                del self._busy[k]
        if self._limit and self._open and not self._closed and not self._due:
            self._flush()  # the callers that gathered (or waited) while a batch was out

    async def _send(self, batch: list[_Call]) -> None:
        calls = [c for c in batch if not c.future.done()]  # cancelled callers drop out
        if not calls:
            return
        # (call index, command index) of each command, grouped by the node it goes to.
        groups: dict[str, list[tuple[int, int]]] = {}
        replies: list[list[Any]] = [[None] * len(c.commands) for c in calls]
        failed: dict[int, str] = {}
        try:
            if self._cluster:
                for ci, call in enumerate(calls):
                    for k, key in enumerate(call.keys):
                        groups.setdefault(self._node_of(key), []).append((ci, k))
            else:
                groups[""] = [(ci, k) for ci, call in enumerate(calls)
                              for k in range(len(call.keys))]
            outcomes: list[Any]
            if len(groups) == 1:  # one node: no task of its own
                (where,) = groups.values()
                try:
                    outcomes = [await self._send_group(
                        [calls[ci].commands[k] for ci, k in where])]
                except Exception as exc:
                    outcomes = [exc]
            else:
                outcomes = await asyncio.gather(
                    *(self._send_group([calls[ci].commands[k] for ci, k in where])
                      for where in groups.values()), return_exceptions=True)
        except BaseException as exc:  # no node known, or cancelled: nobody waits forever
            for call in calls:
                if not call.future.done():
                    call.future.set_exception(StoreError(f"{call.what} failed: {exc!r}"))
            if not isinstance(exc, Exception):
                raise
            return
        for where, got in zip(groups.values(), outcomes):
            if isinstance(got, BaseException):
                for ci, _ in where:
                    failed.setdefault(ci, f"{calls[ci].what} failed: {got}")
                continue
            for (ci, k), reply in zip(where, got):
                replies[ci][k] = reply
                if isinstance(reply, Exception) and ci not in failed:
                    failed[ci] = f"{calls[ci].what} of {calls[ci].keys[k]} failed: {reply}"
        for ci, call in enumerate(calls):
            if call.future.done():
                continue
            if ci in failed:
                call.future.set_exception(StoreError(failed[ci]))
            else:
                call.future.set_result(replies[ci])

    def _node_of(self, key: str) -> str:
        if not isinstance(self._client, RedisCluster):
            return ""
        node = self._client.get_node_from_key(key)
        return node.name if node is not None else ""

    async def _send_group(self, commands: list[Command]) -> list[Any]:
        """The replies of one node's commands, in order; raises when the pipeline fails."""
        if not self._cluster and all(c[0] == "GET" for c in commands):
            # One MGET instead of N GETs: one reply to parse (the client's per-reply cost
            # is most of a pipeline's); a cluster keeps GETs (MGET's keys must share a slot).
            (values,) = await self._pipeline([("MGET", *(c[1] for c in commands))])
            if not isinstance(values, list):
                return [values] * len(commands)
            # MGET answers nil for a key of another type too: the keys it says are absent
            # are read again with GET, which answers nil only for a missing key and fails a
            # wrongly typed one for its caller (a key written since reads as it is now).
            absent = [i for i, v in enumerate(values) if v is None]
            if absent:
                again = await self._pipeline([commands[i] for i in absent])
                for i, reply in zip(absent, again):
                    values[i] = reply
            return values
        wire, items = self._merge(commands) if self._batched else (commands, [])
        replies = await self._pipeline(wire)
        lost = [i for i, r in enumerate(replies) if isinstance(r, redis_errors.NoScriptError)]
        if lost:
            for sha in {wire[i][1] for i in lost}:
                if sha in self._scripts:
                    await self._client.script_load(self._scripts[sha])
            again = await self._pipeline([wire[i] for i in lost])
            for i, reply in zip(lost, again):
                replies[i] = reply
        if not items:
            return replies
        out: list[Any] = []
        for reply, n in zip(replies, items):
            if n == 1:
                out.append(reply)
            elif type(reply) is list and len(reply) == n:
                out.extend(reply)
            else:  # the call failed as a whole: each of its items fails with it
                if not isinstance(reply, Exception):
                    reply = redis_errors.ResponseError(f"a batch of {n} answered {reply!r}")
                out.extend([reply] * n)
        return out

    def _merge(self, commands: list[Command]) -> tuple[list[Command], list[int]]:
        """``commands`` as sent: each run of calls of one batched script as one call (of at
        most BATCH_ITEMS items), and how many commands each sent one stands for."""
        wire: list[Command] = []
        items: list[int] = []
        i = 0
        while i < len(commands):
            head = commands[i]
            shape = self._batched.get(head[1]) if head[0] == "EVALSHA" else None
            if shape is None or head[2] != shape[0] or len(head) != 3 + shape[0] + shape[1]:
                wire.append(head)
                items.append(1)
                i += 1
                continue
            j = i + 1
            while (j < len(commands) and j - i < BATCH_ITEMS and commands[j][0] == "EVALSHA"
                   and commands[j][1] == head[1] and commands[j][2] == head[2]
                   and len(commands[j]) == len(head)):
                j += 1
            if j - i == 1:
                wire.append(head)
            else:
                nk = 3 + shape[0]
                run = commands[i:j]
                wire.append(("EVALSHA", head[1], shape[0] * len(run),
                             *(k for c in run for k in c[3:nk]),
                             *(a for c in run for a in c[nk:])))
            items.append(j - i)
            i = j
        return wire, items

    async def _pipeline(self, commands: list[Command]) -> list[Any]:
        try:
            if len(commands) == 1 and not self._cluster:
                # One command (an MGET, a batch of applies): no pipeline object to build.
                try:
                    return [await self._client.execute_command(*commands[0])]
                except redis_errors.ResponseError as exc:
                    return [exc]  # an error reply, as a pipeline hands it back
            pipe = self._client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            return list(await pipe.execute(raise_on_error=False))
        except (redis_errors.RedisError, OSError) as exc:
            raise _GroupFailed(str(exc)) from None

    async def close(self) -> None:
        """Fail the callers not sent yet, wait for the batches in flight."""
        self._closed = True
        batch, self._open = self._open, None
        for call in batch or []:
            if not call.future.done():
                call.future.set_exception(StoreError("the store is closed"))
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)


class _GroupFailed(Exception):
    """One node's pipeline failed as a whole (its text is the client's error)."""
