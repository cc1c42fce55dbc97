"""The Store: one atomic apply per market (apply.lua), snapshots, history, listings."""

from __future__ import annotations

import bisect
import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from importlib import resources
from typing import Any, cast

import msgpack
from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster

from ..clock import now_ms as clock_now_ms
from ..core.betslip import Record, record_from_store
from ..core.book import Changed, Created, Delta, NoOp, Rejected
from ..core.errors import InvalidInput, StoreError
from ..core.model import MARKET_STATUSES, Market, MarketUpdate
from . import codec, gate
from .autopipe import AutoPipeline
from .bus import Bus
from .codec import (
    ALL_MARKETS_KEY,
    event_channel,
    event_set_key,
    history_key,
    market_channel,
    meta_key,
    sport_set_key,
    state_key,
)
from .outcomes import LOCK_REFUSED, Applied, Head, OutOfOrder, Precondition, Standby, StoreOutcome
from .packing import cluster_packing, pool_options
from .readconn import ReadBatches, target_of

MAX_HISTORY_READ = 10_000
APPLY_BATCHES_IN_FLIGHT = 4
# No market reaches this version; a position past it is refused before it becomes a stream id.
MAX_VERSION = 2**53


def _text(x: bytes | str) -> str:
    return x.decode() if isinstance(x, bytes) else x


def _script(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text()


def _new_epoch() -> str:
    """A fresh epoch: 64 bits from the OS (used only if the apply creates the market).

    Not the random module: a library or test that seeds it would make epochs repeat, and
    a recreated market must never reuse its old epoch (clients resume by epoch).
    """
    return os.urandom(8).hex()


# One packer for every apply's update (msgpack.packb builds a new one each call).
_pack = msgpack.Packer(use_bin_type=True).pack


def _gate_event(update: MarketUpdate) -> str:
    """The event whose gate a creation passes (an update without one creates nothing)."""
    event = update.fields.get("event")
    return event if isinstance(event, str) else ""


def _decode_market(raw: bytes) -> Market:
    return Market.from_store(codec.unpack(raw))


def _decode_record(raw: bytes) -> Record:
    return record_from_store(codec.unpack(raw))


# The script's reply kinds and market statuses as the client reads them (bytes), as text.
_KINDS = {k.encode(): k for k in ("changed", "noop", "created", "standby", "out_of_order",
                                   "precondition", "need_gate", "rejected")}
_STATUSES = {s.encode(): s for s in MARKET_STATUSES}


def _head(mid: str, reply: list[Any]) -> Head:
    """A short reply's {epoch, version, status} of market ``mid``."""
    return Head(mid, reply[0].decode() if type(reply[0]) is bytes else str(reply[0]),
                int(reply[1]), _STATUSES.get(reply[2]) or _text(reply[2]))


class Store:
    """The Redis/Valkey store. Create with :meth:`connect`; share one per process."""

    def __init__(self, client: Redis | RedisCluster, *, cluster: bool, history_len: int,
                 sharded: bool, url: str, auto_pipeline: bool = True,
                 read_batches_in_flight: int = 1) -> None:
        self.client = client
        self.cluster = cluster
        self.history_len = history_len
        self.sharded = sharded
        self.url = url
        self.publish_command = "SPUBLISH" if sharded else "PUBLISH"
        # published.lua: the helpers apply.lua publishes a delta with, loaded in front of it
        self._apply = client.register_script(_script("published.lua") + _script("apply.lua"))
        self._delete = client.register_script(_script("delete.lua"))
        self._history = client.register_script(_script("history.lua"))
        # Market reads and apply scripts of one loop turn share a pipeline (see .autopipe).
        # Reads decode an unchanged market's bytes once (see codec.DecodeMemo).
        self._market_of = codec.DecodeMemo(_decode_market)
        self._record_of = codec.DecodeMemo(_decode_record)
        # On a single server (not over TLS) they go on a connection of their own (.readconn).
        self._reads: AutoPipeline | ReadBatches | None = None
        target = None if cluster or isinstance(client, RedisCluster) else target_of(client)
        if auto_pipeline and target is not None:
            self._reads = ReadBatches(target, max_in_flight=read_batches_in_flight)
        elif auto_pipeline:
            self._reads = AutoPipeline(client, max_in_flight=read_batches_in_flight)
        # A batch of applies on a single server is one call of the apply script (apply.lua).
        # Up to APPLY_BATCHES_IN_FLIGHT batches on disjoint markets are out together (the
        # client packs the next while the server runs one); a market's applies stay in order.
        self._writes = AutoPipeline(
            client, ordered=True, max_in_flight=APPLY_BATCHES_IN_FLIGHT,
            scripts={self._apply.sha: self._apply.script},
            batched={self._apply.sha: (3, 12)}) if auto_pipeline else None

    @classmethod
    async def connect(cls, url: str, *, cluster: bool = False, history_len: int = 1000,
                      socket_timeout: float | None = 5.0, max_connections: int = 64,
                      auto_pipeline: bool = True, read_batches_in_flight: int = 1) -> Store:
        """Connect to ``url`` (a single server, or a cluster node with ``cluster=True``);
        ``auto_pipeline`` batches concurrent market reads and applies (see
        :mod:`.autopipe`), with at most ``read_batches_in_flight`` read batches out at once
        (0: no bound).

        Raises StoreError when the server does not answer.
        """
        client: Redis | RedisCluster
        try:
            if cluster:
                client = RedisCluster.from_url(url, socket_timeout=socket_timeout,
                                               max_connections=max_connections * 16)
                cluster_packing(client, url)
                await client.initialize()
                info = await client.info("server", target_nodes=RedisCluster.RANDOM)
            else:
                # A blocking pool: a burst of reads waits for a connection instead of
                # failing with "Too many connections".
                pool = BlockingConnectionPool.from_url(
                    url, max_connections=max_connections, timeout=socket_timeout,
                    socket_timeout=socket_timeout, **pool_options(url))
                client = Redis(connection_pool=pool)
                info = await client.info("server")
        except (redis_errors.RedisError, OSError) as exc:
            raise StoreError(f"cannot reach the store at {url}: {exc}") from None
        version = str(info.get("redis_version", "0"))
        sharded = int(version.split(".")[0]) >= 7
        return cls(client, cluster=cluster, history_len=history_len, sharded=sharded, url=url,
                   auto_pipeline=auto_pipeline, read_batches_in_flight=read_batches_in_flight)

    async def close(self) -> None:
        for pipeline in (self._reads, self._writes):
            if pipeline is not None:
                await pipeline.close()
        await self.client.aclose()

    async def ping(self) -> bool:
        """True while the store answers."""
        try:
            if self.cluster:
                await self.client.ping(target_nodes=RedisCluster.ALL_NODES)  # type: ignore[call-arg,unused-ignore]
            else:
                await self.client.ping()
            return True
        except (redis_errors.RedisError, OSError):
            return False

    def _apply_args(self, update: MarketUpdate, expect: tuple[str, int] | None,
                    now_ms: int | None, bet_stop: str = "", mode: str = "",
                    extra: dict[str, Any] | None = None, short: bool = False
                    ) -> tuple[list[str], list[Any]]:
        """The apply script's keys and arguments; ``extra`` adds members to the update's map
        (a desk's ``lock``); ``short`` asks for short replies (see :meth:`apply`)."""
        mid = update.market
        now = now_ms if now_ms is not None else clock_now_ms()
        args: list[Any] = [
            _pack({**update.to_store(), "order": list(update.selections), **(extra or {})}),
            market_channel(mid),
            _new_epoch(), now, self.history_len, self.publish_command,
            expect[0] if expect else "", expect[1] if expect else 0,
            str(update.seq) if update.seq is not None else "", bet_stop, mode,
            "short" if short else "",
        ]
        return [state_key(mid), meta_key(mid), history_key(mid)], args

    async def apply(self, update: MarketUpdate, *, expect: tuple[str, int] | None = None,
                    now_ms: int | None = None, short: bool = False) -> StoreOutcome:
        """Apply one update atomically in the store (creates, changes, or drops it).

        ``expect`` = (epoch, version) makes it conditional (If-Match). Returns the outcome;
        raises StoreError if the store fails. With ``short`` a change or noop is an
        ``Applied`` and a standby carries a ``Head``: the market's epoch, version and
        status instead of its decoded state (for callers that do not answer with the
        market); the other outcomes are as without it.
        """
        keys, args = self._apply_args(update, expect, now_ms, short=short)
        try:
            if self._writes is not None:
                (res,) = await self._writes.run(
                    [("EVALSHA", self._apply.sha, len(keys), *keys, *args)], keys[:1],
                    f"apply for market {update.market}")
            else:
                res = await self._apply(keys=keys, args=args)
            if _text(res[0]) != "need_gate":
                return self._outcome(update.market, res)
            # A missing market: created (if at all) behind the event's gate.
            pair = [(_gate_event(update), update.market)]
            (record,) = await gate.enter(self.client, pair)
            left = False
            try:
                keys, args = self._apply_args(update, expect, now_ms, record, short=short)
                outcome = self._outcome(update.market, await self._apply(keys=keys, args=args))
                if isinstance(outcome, Created):
                    left = True
                    await self._index([outcome.market], leaving=pair)
            finally:
                if not left:
                    await gate.leave(self.client, pair)
        except (redis_errors.RedisError, OSError) as exc:
            raise StoreError(f"apply failed for market {update.market}: {exc}") from None
        return outcome

    async def apply_many(self, updates: Sequence[MarketUpdate], *, now_ms: int | None = None,
                         short: bool = False) -> list[StoreOutcome]:
        """Apply many updates in one pipelined round trip; the outcomes, in order (``short``:
        short replies, as for :meth:`apply`).

        Each update is atomic on its own exactly as with :meth:`apply` (the same script);
        there is no transaction across them. Updates to one market are applied in the order
        given (one connection per node, commands in order). Raises StoreError if the store
        fails or refuses one of them; any of the others may then have been applied (the
        pipeline runs to its end). A caller that retries the batch gets ``OutOfOrder`` for
        what was applied with a ``(source, seq)``; without a seq, an applied update is
        applied again, so a market with two such updates in the batch briefly goes back to
        the first one's prices (FeedRunner.submit_many splits its batches to avoid that).
        """
        if not updates:
            return []
        calls = [self._apply_args(u, None, now_ms, short=short) for u in updates]
        results = await self._run(calls, [u.market for u in updates])
        # Missing markets (every update of one, in order): again, behind the event's gate.
        # A later update of such a market was refused as unknown in the first pass (no write):
        # it goes again too, after the creation.
        gated: set[str] = set()
        late: list[int] = []
        for i, (u, r) in enumerate(zip(updates, results)):
            if u.market in gated or _text(r[0]) == "need_gate":
                gated.add(u.market)
                late.append(i)
        late_set = set(late)
        pairs = list(dict.fromkeys((_gate_event(updates[i]), updates[i].market) for i in late
                                   if updates[i].create or updates[i].replace))
        outcomes: list[StoreOutcome | None] = [
            None if i in late_set else self._outcome(u.market, r)
            for i, (u, r) in enumerate(zip(updates, results))]
        if pairs:
            try:
                records = dict(zip(pairs, await gate.enter(self.client, pairs)))
            except (redis_errors.RedisError, OSError) as exc:
                raise StoreError(f"apply failed: {exc}") from None
            left = False
            try:
                again = await self._run(
                    [self._apply_args(updates[i], None, now_ms,
                                      records.get((_gate_event(updates[i]), updates[i].market),
                                                  "0:0"), short=short)
                     for i in late], [updates[i].market for i in late])
                for i, res in zip(late, again):
                    outcomes[i] = self._outcome(updates[i].market, res)
                created = [o.market for o in outcomes if isinstance(o, Created)]
                if created:
                    left = True
                    await self._index(created, leaving=pairs)
            finally:
                if not left:
                    try:
                        await gate.leave(self.client, pairs)
                    except (redis_errors.RedisError, OSError) as exc:
                        raise StoreError(f"apply failed: {exc}") from None
        return [o for o in outcomes if o is not None]

    async def _run(self, calls: Sequence[tuple[list[str], list[Any]]], mids: Sequence[str]
                   ) -> list[Any]:
        """The apply script's replies to ``calls``, pipelined in one round trip, in order."""
        if self._writes is not None:
            return await self._writes.run(
                [("EVALSHA", self._apply.sha, len(k), *k, *a) for k, a in calls],
                [k[0] for k, _ in calls], "apply")
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(2):  # a second pass only after loading the script (NOSCRIPT)
            pipe = self.client.pipeline(transaction=False)
            for i in todo:
                keys, args = calls[i]
                pipe.execute_command("EVALSHA", self._apply.sha, len(keys), *keys, *args)
            try:
                replies = await pipe.execute(raise_on_error=False)
            except (redis_errors.RedisError, OSError) as exc:
                raise StoreError(f"apply failed: {exc}") from None
            missing = []
            for i, reply in zip(todo, replies):
                if isinstance(reply, redis_errors.NoScriptError) and attempt == 0:
                    missing.append(i)  # this market's later commands failed the same way
                elif isinstance(reply, Exception):
                    raise StoreError(f"apply failed for market {mids[i]}: {reply}")
                else:
                    results[i] = reply
            if not missing:
                break
            try:
                await self.client.script_load(self._apply.script)
            except (redis_errors.RedisError, OSError) as exc:
                raise StoreError(f"apply failed: {exc}") from None
            todo = missing
        return results

    def _outcome(self, mid: str, res: Any) -> StoreOutcome:
        kind = _KINDS.get(res[0]) or _text(res[0])
        if kind in ("changed", "noop") and len(res) > (3 if kind == "changed" else 2):
            refused = int(res[-1])
            if refused:
                LOCK_REFUSED.inc(refused)
        if kind == "changed":
            if type(res[1]) is list:
                return Applied(kind, _head(mid, res[1]), res[2])
            return Changed(_decode_market(res[1]), Delta.from_store(codec.unpack(res[2])))
        if kind == "noop":
            if type(res[1]) is list:
                return Applied(kind, _head(mid, res[1]))
            return NoOp(_decode_market(res[1]))
        if kind == "created":
            return Created(_decode_market(res[1]))
        if kind == "standby":
            state = res[2]
            return Standby(_head(mid, state) if type(state) is list else _decode_market(state),
                           _text(res[1]))
        if kind == "out_of_order":
            return OutOfOrder(mid, int(res[1]))
        if kind == "precondition":
            return Precondition(_decode_market(res[1]) if res[1] else None)
        reason, path, message = (x.decode() if isinstance(x, bytes) else str(x) for x in res[1:4])
        return Rejected(reason, message, path)

    async def _index(self, markets: list[Market],
                      leaving: Sequence[tuple[str, str]] = ()) -> None:
        # Membership keys live in other slots than the markets: a second, plain round trip
        # (one for all the markets an apply_many created), which also withdraws the
        # creations' gate announcements (``leaving``), after the event-set additions.
        pipe = self.client.pipeline(transaction=False)
        for market in markets:
            pipe.sadd(event_set_key(market.event), market.id)
            pipe.sadd(sport_set_key(market.sport), market.id)
            pipe.sadd(ALL_MARKETS_KEY, market.id)
            payload = msgpack.packb({"op": "market", "m": market.id})
            if self.sharded:
                pipe.execute_command("SPUBLISH", event_channel(market.event), payload)
            else:
                pipe.publish(event_channel(market.event), payload)
        gate.queue_leave(pipe, leaving)  # same slot as the event set, so after it
        try:
            await pipe.execute()
        except (redis_errors.RedisError, OSError) as exc:
            ids = ", ".join(m.id for m in markets[:5])
            raise StoreError(f"indexing market(s) {ids} failed: {exc}") from None

    async def delete(self, market_id: str, *, expect: tuple[str, int] | None = None
                     ) -> bool | Precondition:
        """Delete a market (state, history, membership) and publish ``gone``; True if it
        existed. ``expect`` = (epoch, version) makes it conditional (If-Match): a market
        elsewhere (or absent) is left as it is and a Precondition with it returned."""
        try:
            res = await self._delete(
                keys=[state_key(market_id), meta_key(market_id), history_key(market_id)],
                args=[market_channel(market_id), self.publish_command, market_id,
                      expect[0] if expect else "", expect[1] if expect else 0])
            if not res:
                return False
            kind = _text(res[0])
            if kind == "precondition":
                return Precondition(_decode_market(res[1]) if res[1] else None)
            market = _decode_market(res[1])
            pipe = self.client.pipeline(transaction=False)
            pipe.srem(event_set_key(market.event), market_id)
            pipe.srem(sport_set_key(market.sport), market_id)
            pipe.srem(ALL_MARKETS_KEY, market_id)
            await pipe.execute()
        except (redis_errors.RedisError, OSError) as exc:
            raise StoreError(f"delete failed for market {market_id}: {exc}") from None
        return True

    async def _get_raw(self, ids: list[str]) -> list[bytes | None]:
        if not ids:
            return []
        if self._reads is not None:
            return await self._reads.get([state_key(mid) for mid in ids])
        try:
            if len(ids) == 1:
                return [cast(bytes | None, await self.client.get(state_key(ids[0])))]
            pipe = self.client.pipeline(transaction=False)
            for mid in ids:
                pipe.get(state_key(mid))
            return list(await pipe.execute())
        except (redis_errors.RedisError, OSError) as exc:
            raise StoreError(f"read failed: {exc}") from None

    async def existing(self, ids: Iterable[str]) -> set[str]:
        """Which of ``ids`` are markets in the store now (one pipelined round trip of EXISTS,
        no state read). Raises StoreError if the store fails."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return set()
        try:
            pipe = self.client.pipeline(transaction=False)
            for mid in wanted:
                pipe.exists(state_key(mid))
            found = await pipe.execute()
        except (redis_errors.RedisError, OSError) as exc:
            raise StoreError(f"read failed: {exc}") from None
        return {mid for mid, n in zip(wanted, found) if n}

    async def get(self, market_id: str) -> Market | None:
        """The market's current state, or None."""
        (raw,) = await self._get_raw([market_id])
        return self._market_of(raw) if raw else None

    async def get_many(self, ids: Iterable[str]) -> dict[str, Market | None]:
        """Current state of many markets in one pipelined round trip."""
        wanted = list(dict.fromkeys(ids))
        raws = await self._get_raw(wanted)
        market_of = self._market_of
        return {mid: (market_of(raw) if raw else None) for mid, raw in zip(wanted, raws)}

    async def get_for_validation(self, ids: Iterable[str]) -> dict[str, Record | None]:
        """(view, susp_v) of each market (``core.betslip.MarketView``: what validation
        reads of it), each read atomically, all in one round trip.

        ``susp_v`` is the last version at which the market was not open (0: never), so "was
        it suspended at any moment after version X" is exactly ``susp_v >= X`` (a market suspended
        at version X itself stayed suspended past X until it reopened).
        """
        wanted = list(dict.fromkeys(ids))
        if self._reads is not None and wanted:  # the hot path, one coroutine less
            raws = await self._reads.get([state_key(mid) for mid in wanted])
        else:
            raws = await self._get_raw(wanted)
        record_of = self._record_of
        return {mid: None if raw is None else record_of(raw) for mid, raw in zip(wanted, raws)}

    async def history(self, market_id: str, epoch: str, after_version: int
                      ) -> tuple[Market, list[Delta]] | None:
        """The current market and every delta after ``after_version`` in ``epoch``, in order.

        Returns None when the history does not cover that position (market gone, another
        epoch, a version ahead of the store, or trimmed away): the caller sends a snapshot.
        """
        if not 1 <= after_version <= MAX_VERSION:
            return None  # never a store position, and past a stream id's range
        try:
            res = await self._history(
                keys=[state_key(market_id), history_key(market_id)],
                args=[f"{after_version + 1}-0", MAX_HISTORY_READ])
        except (redis_errors.RedisError, OSError) as exc:
            raise StoreError(f"history read failed for market {market_id}: {exc}") from None
        return codec.decode_history(res, epoch, after_version)

    async def event_market_ids(self, event: str) -> list[str]:
        try:
            ids = await self.client.smembers(event_set_key(event))
        except (redis_errors.RedisError, OSError) as exc:
            raise StoreError(f"read failed: {exc}") from None
        return sorted(_text(x) for x in ids)

    async def list_markets(self, *, event: str | None = None, sport: str | None = None,
                           status: str | None = None, after: str | None = None,
                           limit: int | None = None) -> list[Market]:
        """Markets filtered by event, sport and status, sorted by id: those with an id after
        ``after`` (a page's last id), at most ``limit`` of them (None: all)."""
        try:
            sets = []
            if event:
                sets.append({_text(x) for x in await self.client.smembers(event_set_key(event))})
            if sport:
                sets.append({_text(x) for x in await self.client.smembers(sport_set_key(sport))})
            if not sets:
                sets.append({_text(x) for x in await self.client.smembers(ALL_MARKETS_KEY)})
        except (redis_errors.RedisError, OSError) as exc:
            raise StoreError(f"read failed: {exc}") from None
        ids = sorted(set.intersection(*sets))
        if after is not None:
            ids = ids[bisect.bisect_right(ids, after):]
        out: list[Market] = []
        step = max(limit or len(ids), 1)
        # Read a page's worth at a time: a status filter may drop some, never read them all.
        for start in range(0, len(ids), step):
            chunk = await self.get_many(ids[start:start + step])
            out.extend(m for m in chunk.values()
                       if m is not None and (status is None or m.status == status))
            if limit is not None and len(out) >= limit:
                return out[:limit]
        return out

    def bus(self, on_message: Callable[[str, str, bytes], None],
            on_reconnect: Callable[[], Awaitable[None]] | None = None,
            on_lost: Callable[[], None] | None = None) -> Bus:
        """A pub/sub bus on this store; see :class:`oddsfeed.store.bus.Bus`."""
        return Bus(self, on_message, on_reconnect, on_lost)


__all__ = ["InvalidInput", "OutOfOrder", "Precondition", "Standby", "Store", "StoreOutcome"]
