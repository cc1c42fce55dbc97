"""Auto-pipelining of market reads: the GETs that callers issue within one event-loop turn
go to the store as one pipeline, so N concurrent requests cost one round trip and one
client call instead of N.

Each caller still reads the store after it asked (a batch is sent only after its last
caller joined, and never answered from an earlier batch), gets its own replies in its own
order, and fails alone when one of its commands fails. When the whole batch fails (the
store is down, a connection drops), every caller in it gets a StoreError at once; nothing
is retried here beyond what the client itself does for one call. In cluster mode the
client's cluster pipeline splits a batch by node and sends each node's part as one
pipeline, in parallel.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from ..core.errors import StoreError


@dataclass(slots=True)
class _Call:
    keys: Sequence[str]
    future: asyncio.Future[list[bytes | None]]


@dataclass(slots=True)
class _Batch:
    calls: list[_Call] = field(default_factory=list)


class AutoPipeline:
    """Batches ``GET``s of concurrent callers; one per Store (and so per event loop)."""

    def __init__(self, client: Redis | RedisCluster) -> None:
        self._client = client
        self._open: _Batch | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._closed = False

    async def get(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of ``keys`` (None where absent), read in the next batch.

        Raises StoreError when the store fails this caller's commands or the whole batch.
        """
        if self._closed:
            raise StoreError("the store is closed")
        loop = asyncio.get_running_loop()
        if self._open is None:
            self._open = _Batch()
            # Runs after every callback already ready in this turn, so every request the
            # loop resumed in this turn joins the batch before it is sent.
            loop.call_soon(self._flush)
        call = _Call(keys, loop.create_future())
        self._open.calls.append(call)
        return await call.future

    def _flush(self) -> None:
        batch, self._open = self._open, None
        if batch is None:
            return
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: _Batch) -> None:
        calls = [c for c in batch.calls if not c.future.done()]  # cancelled callers drop out
        if not calls:
            return
        pipe = self._client.pipeline(transaction=False)
        for call in calls:
            for key in call.keys:
                pipe.get(key)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except (redis_errors.RedisError, OSError) as exc:
            error = f"read failed: {exc}"
            for call in calls:
                if not call.future.done():
                    call.future.set_exception(StoreError(error))
            return
        except BaseException as exc:  # cancelled (the store closes): nobody waits forever
            for call in calls:
                if not call.future.done():
                    call.future.set_exception(StoreError(f"read failed: {exc!r}"))
            raise
        at = 0
        for call in calls:
            mine = replies[at:at + len(call.keys)]
            at += len(call.keys)
            if call.future.done():
                continue
            bad = next(((k, r) for k, r in zip(call.keys, mine) if isinstance(r, Exception)),
                       None)
            if bad is not None:
                call.future.set_exception(StoreError(f"read of {bad[0]} failed: {bad[1]}"))
            else:
                call.future.set_result(list(mine))

    async def close(self) -> None:
        """Fail the callers not sent yet, wait for the batches in flight."""
        self._closed = True
        batch, self._open = self._open, None
        for call in batch.calls if batch else []:
            if not call.future.done():
                call.future.set_exception(StoreError("the store is closed"))
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
