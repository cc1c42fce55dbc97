"""Risk signals in Valkey: the history reads that date a stale leg, and per-account rolling
counts in expiring, capped bucket hashes (docs/operations.md states the memory bound).

Keys: ``of:risk:<window_s>:<bucket>`` is a hash, field = token subject, value = msgpack
array of counts (``oddsfeed.core.risk.FIELDS``); ``bucket`` = ``at_ms // bucket_ms`` with
``bucket_ms = window_s * 1000 // buckets``. A window's counts are the sum of its last
``buckets`` buckets (the current one included). Each add is one atomic script on one key, so
concurrent adds from many workers are exact; each bucket holds at most ``max_accounts``
accounts and expires once no window reads it. ``of:risk:flag:<window_s>:<sub>`` marks an
account whose score is over the alert threshold (expires with the window).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from importlib import resources
from typing import Any

import msgpack
from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from ..core.errors import StoreError
from ..core.risk import Counts, HistoryEntry, add
from . import codec
from .risk_due import eval_many

PREFIX = "of:risk:"


def bucket_key(window_s: int, bucket: int) -> str:
    return f"{PREFIX}{window_s}:{bucket}"


def flag_key(window_s: int, sub: str) -> str:
    """The mark of an account over the score threshold in a window (one crossing, one
    event); it expires with the window."""
    return f"{PREFIX}flag:{window_s}:{sub}"


_HALTED = frozenset({"suspended", "closed", "settled"})
_SEL_HALTED = frozenset({"suspended", "removed"})


def _entry(entry_id: bytes, fields: Any) -> HistoryEntry | None:
    raw = dict(zip(fields[::2], fields[1::2])) if isinstance(fields, list) else fields
    data = raw.get(b"d")
    if data is None:
        return None
    obj = codec.unpack(data)
    version = int(entry_id.split(b"-")[0])
    at_ms = int(obj.get("t") or 0) // 1000
    if obj.get("op") == "created":
        market = obj.get("market") or {}
        sels = market.get("selections") or {}
        return HistoryEntry(version, at_ms, {str(k): int(v["price"]) for k, v in sels.items()
                                             if isinstance(v, dict) and "price" in v}, True,
                            market.get("status") in _HALTED)
    sel = obj.get("sel") or {}
    prices = {str(k): int(v["price"]) for k, v in sel.items()
              if isinstance(v, dict) and v.get("price") is not None}
    status = "status" in obj or any(isinstance(v, dict) and "status" in v for v in sel.values())
    halted_sels = frozenset(str(k) for k, v in sel.items()
                            if isinstance(v, dict) and v.get("status") in _SEL_HALTED)
    return HistoryEntry(version, at_ms, prices, status, obj.get("status") in _HALTED,
                        halted_sels)


class RiskCounts:
    """The risk store adapter over a client of the market store (one per process)."""

    def __init__(self, client: Redis | RedisCluster, *, windows_s: Sequence[int],
                 buckets: int, max_accounts: int, history_scan: int) -> None:
        self.client = client
        self.windows_s = tuple(windows_s)
        self.buckets = buckets
        self.max_accounts = max_accounts
        self.history_scan = history_scan
        self._add = client.register_script(
            resources.files(__package__).joinpath("risk_add.lua").read_text())

    def bucket_ms(self, window_s: int) -> int:
        return max(window_s * 1000 // self.buckets, 1)

    @property
    def grain_ms(self) -> int:
        """The greatest common divisor of every window's bucket length: two times in the
        same ``at_ms // grain_ms`` fall in the same bucket of every window, so their counts
        may be summed before the add."""
        return math.gcd(*(self.bucket_ms(w) for w in self.windows_s))

    async def histories(self, legs: Sequence[tuple[str, int | None]]
                        ) -> list[list[HistoryEntry]]:
        """Per (market, version) leg, the history entries (in version order) after the
        version, or the newest ones without a version; at most ``history_scan`` each, all in
        one pipelined round trip. Raises StoreError if the store fails."""
        if not legs:
            return []
        try:
            pipe = self.client.pipeline(transaction=False)
            for market, version in legs:
                key = codec.history_key(market)
                if version is None:
                    pipe.xrevrange(key, "+", "-", count=self.history_scan)
                else:
                    pipe.xrange(key, f"{version + 1}-0", "+", count=self.history_scan)
            replies = await pipe.execute()
        except (redis_errors.RedisError, OSError) as exc:
            raise StoreError(f"risk history read failed: {exc}") from None
        out: list[list[HistoryEntry]] = []
        for (_market, version), reply in zip(legs, replies, strict=True):
            entries = [e for e in (_entry(i, f) for i, f in reply or []) if e is not None]
            if version is None:
                entries.reverse()
            out.append(entries)
        return out

    async def add(self, sub: str, counts: Counts, at_ms: int) -> bool:
        """Add one slip's counts for ``sub`` at ``at_ms`` to every window, atomically per
        bucket; False if a full bucket left the account out. Raises StoreError."""
        return await self.add_many([(sub, counts, at_ms)]) == 0

    async def add_many(self, items: Sequence[tuple[str, Counts, int]]) -> int:
        """Add many slips' ``(sub, counts, at_ms)`` in one pipelined round trip, summed per
        account and bucket first (one atomic script per account and bucket); returns how
        many (account, bucket) adds a full bucket refused. Raises StoreError."""
        merged: dict[tuple[str, str], tuple[list[int], int]] = {}
        steps = [(window_s, self.bucket_ms(window_s)) for window_s in self.windows_s]
        for sub, counts, at_ms in items:
            nonzero = [(i, v) for i, v in enumerate(counts) if v]
            for window_s, step in steps:
                bucket = at_ms // step
                where = (bucket_key(window_s, bucket), sub)
                found = merged.get(where)
                if found is None:
                    found = merged[where] = ([0] * len(counts), (bucket + self.buckets + 1) * step)
                total = found[0]
                for i, v in nonzero:
                    total[i] += v
        calls = [((key,), (sub, msgpack.packb(counts), expire_at, self.max_accounts))
                 for (key, sub), (counts, expire_at) in merged.items()]
        replies = await eval_many(self.client, self._add, calls)
        return sum(1 for r in replies if int(r) != 1)

    def _keys(self, window_s: int, at_ms: int) -> list[str]:
        step = self.bucket_ms(window_s)
        last = at_ms // step
        return [bucket_key(window_s, b) for b in range(last - self.buckets + 1, last + 1)]

    async def window(self, window_s: int, at_ms: int) -> dict[str, Counts]:
        """Every account's counts over the window ending at ``at_ms``. Raises StoreError."""
        try:
            pipe = self.client.pipeline(transaction=False)
            for key in self._keys(window_s, at_ms):
                pipe.hgetall(key)
            replies = await pipe.execute()
        except (redis_errors.RedisError, OSError) as exc:
            raise StoreError(f"risk counts read failed: {exc}") from None
        out: dict[str, Counts] = {}
        for reply in replies:
            for sub, raw in (reply or {}).items():
                name = sub.decode() if isinstance(sub, bytes) else str(sub)
                out[name] = add(out.get(name, ()), msgpack.unpackb(raw))
        return out

    async def accounts(self, subs: Sequence[str], windows_s: Sequence[int], at_ms: int
                       ) -> dict[tuple[int, str], Counts]:
        """Per (window, account), the counts over the window ending at ``at_ms`` (accounts
        without a slip in it left out), in one round trip. Raises StoreError."""
        asks = [(w, sub, key) for w in windows_s for key in self._keys(w, at_ms) for sub in subs]
        try:
            pipe = self.client.pipeline(transaction=False)
            for _w, sub, key in asks:
                pipe.hget(key, sub)
            replies = await pipe.execute()
        except (redis_errors.RedisError, OSError) as exc:
            raise StoreError(f"risk counts read failed: {exc}") from None
        out: dict[tuple[int, str], Counts] = {}
        for (w, sub, _key), raw in zip(asks, replies, strict=True):
            if raw is not None:
                out[w, sub] = add(out.get((w, sub), ()), msgpack.unpackb(raw))
        return out

    async def flag(self, window_s: int, above: Sequence[str], below: Sequence[str]
                   ) -> list[str]:
        """Mark the ``above`` accounts as over the threshold in the window (for as long as
        the window) and unmark the ``below`` ones; returns the accounts newly marked (each
        mark is set by exactly one caller), in one round trip. Raises StoreError."""
        try:
            pipe = self.client.pipeline(transaction=False)
            for sub in above:
                pipe.set(flag_key(window_s, sub), b"1", nx=True, px=window_s * 1000)
            for sub in below:
                pipe.delete(flag_key(window_s, sub))
            replies = await pipe.execute()
        except (redis_errors.RedisError, OSError) as exc:
            raise StoreError(f"risk flag write failed: {exc}") from None
        return [sub for sub, set_ in zip(above, replies, strict=False) if set_]

    async def account(self, sub: str, window_s: int, at_ms: int) -> Counts | None:
        """One account's counts over the window ending at ``at_ms`` (None: no slip in it)."""
        try:
            pipe = self.client.pipeline(transaction=False)
            for key in self._keys(window_s, at_ms):
                pipe.hget(key, sub)
            replies = await pipe.execute()
        except (redis_errors.RedisError, OSError) as exc:
            raise StoreError(f"risk counts read failed: {exc}") from None
        found = [msgpack.unpackb(r) for r in replies if r is not None]
        if not found:
            return None
        total: Counts = ()
        for counts in found:
            total = add(total, counts)
        return total
