"""Running one adapter against the store: the wiring behind `oddsfeed ingest ADAPTER` and
`oddsfeed record ADAPTER` (the CLI calls :func:`run_adapter`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from oddsfeed.auth import Authenticator
from oddsfeed.errors import ProviderDataError
from oddsfeed.model import MarketUpdate
from oddsfeed.settings import Settings

from .betfair import StreamState, run_stream
from .normalised import Mapping
from .oddsapi import Poller, normalize_event
from .push import build_push_app
from .replay import Normalizer, replay
from .runner import Applier, FeedRunner
from .simulator import Simulator, SimulatorConfig

ADAPTERS = ("simulator", "replay", "http-poll", "stream", "push")
log = structlog.get_logger("oddsfeed.ingest")


class _Recording:
    """A store stand-in for `record`: nothing is applied."""

    async def apply(self, update: MarketUpdate) -> Any:
        return None


async def run_adapter(adapter: str, opts: dict[str, Any], store: Applier, settings: Settings,
                      *, stop: asyncio.Event,
                      recorder: Callable[[str, Any], None] | None = None) -> FeedRunner:
    """Run one adapter until ``stop`` (or its input ends); returns its runner (counts)."""
    feed_id = opts.get("feed_id") or "1"
    runner = FeedRunner(store if recorder is None else _Recording(),
                        f"{adapter}:{feed_id}", staleness_s=settings.ingest.staleness_s)
    mapping = Mapping()
    mapping_path = Path(settings.ingest.mapping_file)
    provider = {"http-poll": "oddsapi", "stream": "betfair"}.get(adapter, adapter)
    if mapping_path.is_file():  # noqa: ASYNC240 - read once at start-up
        text = mapping_path.read_text(encoding="utf-8")  # noqa: ASYNC240 - as above
        mapping = Mapping.from_toml(text, provider)
    watcher = asyncio.create_task(runner.watch()) if adapter != "replay" else None

    async def submit_all(updates: list[MarketUpdate]) -> None:
        for u in updates:
            await runner.submit(u)

    try:
        if adapter == "simulator":
            cfg = SimulatorConfig(events=int(opts.get("events") or settings.demo.events),
                                  seed=int(opts.get("seed") or settings.demo.seed),
                                  rate_per_s=float(opts.get("rate") or settings.demo.rate_per_s),
                                  source=f"sim:{feed_id}")
            sim = Simulator(cfg, start_ms=int(time.time() * 1000))
            interval = 1 / cfg.rate_per_s
            batch = sim.initial()
            while not stop.is_set():
                if recorder:
                    for u in batch:
                        recorder("push", _as_message(u))
                await submit_all(batch)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
                batch = sim.step()
        elif adapter == "replay":
            path = Path(opts["file"])
            with path.open(encoding="utf-8") as fh:  # noqa: ASYNC230 - a local file, read lazily
                await replay(fh, runner.submit, runner.bad, speed=float(opts.get("speed", 1.0)),
                             normalizer=Normalizer(mapping, bookmaker=opts.get("bookmaker", ""),
                                                   odds_format=opts.get("odds_format",
                                                                        "decimal")))
        elif adapter == "http-poll":
            bookmaker, fmt = opts.get("bookmaker", ""), opts.get("odds_format", "decimal")

            async def on_events(events: list[Any]) -> None:
                now = int(time.time() * 1000)
                for ev in events:
                    if recorder:
                        recorder("oddsapi", ev)
                    try:
                        await submit_all(normalize_event(ev, bookmaker=bookmaker,
                                                         odds_format=fmt, now_ms=now,
                                                         mapping=mapping))
                    except ProviderDataError as exc:
                        runner.bad(exc, ev)

            await Poller(opts["url"], on_events, interval_s=float(opts.get("interval", 5.0)),
                         timeout_s=float(opts.get("timeout", 10.0))).run(stop)
        elif adapter == "stream":
            state = StreamState(mapping=mapping)

            async def on_updates(updates: list[MarketUpdate]) -> None:
                await submit_all(updates)

            def on_bad(exc: ProviderDataError) -> None:
                runner.bad(exc)

            host, _, port = str(opts["address"]).rpartition(":")
            await run_stream(host or "127.0.0.1", int(port), state, on_updates, on_bad,
                             market_filter=json.loads(opts.get("filter") or "{}"), stop=stop)
        elif adapter == "push":
            app = build_push_app(runner, Authenticator(settings.auth),
                                 max_body_bytes=settings.api.max_body_bytes)
            app_runner = web.AppRunner(app, access_log=None)
            await app_runner.setup()
            site = web.TCPSite(app_runner, settings.server.host, int(opts.get("port") or 8090))
            await site.start()
            log.info("push endpoint ready", port=int(opts.get("port") or 8090))
            try:
                await stop.wait()
            finally:
                await app_runner.cleanup()
        else:
            raise ValueError(f"unknown adapter {adapter!r}; use one of {', '.join(ADAPTERS)}")
    finally:
        if watcher is not None:
            watcher.cancel()
    return runner


def _as_message(u: MarketUpdate) -> dict[str, Any]:
    msg: dict[str, Any] = {"market": u.market, **u.fields,
                           "selections": {k: dict(v) for k, v in u.selections.items()}}
    if u.ts is not None:
        msg["ts"] = u.ts
    if u.seq is not None:
        msg["seq"] = u.seq
    if u.replace:
        msg["replace"] = True
    for sel in msg["selections"].values():
        if "price" in sel:
            sel["price"] = {"decimal": str(sel["price"] / 10_000)}
    return msg
