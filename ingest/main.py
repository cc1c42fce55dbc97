"""Running one adapter against the store: the wiring behind `oddsfeed ingest ADAPTER` and
`oddsfeed record ADAPTER` (the CLI calls :func:`run_adapter`). It owns no provider format.

Each adapter feeds one :class:`~ingest.runner.FeedRunner` whose source is
``<adapter>:<feed id>`` (``push:<feed id>@<token subject>`` per pusher); the runner's
watcher suspends markets whose source went silent.
"""

from __future__ import annotations

import asyncio
import json
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from oddsfeed.auth import Authenticator
from oddsfeed.core.errors import ProviderDataError
from oddsfeed.core.model import MarketUpdate
from oddsfeed.settings import Settings

from .betfair import StreamState, run_stream
from .normalised import Mapping, to_message
from .oddsapi import Poller, normalize_event
from .push import build_push_app
from .replay import Normalizer, replay
from .runner import Applier, FeedRunner, Lanes
from .simulator import SimulatorConfig, run_simulator

ADAPTERS = ("simulator", "replay", "http-poll", "stream", "push", "uof")
PROVIDERS = {"http-poll": "oddsapi", "stream": "betfair", "push": "push",
             "simulator": "simulator"}
log = structlog.get_logger("oddsfeed.ingest")
Recorder = Callable[[str, Any], None]


class _Recording:
    """A store stand-in for `record`: nothing is applied."""

    async def apply(self, update: MarketUpdate) -> Any:
        return None

    async def apply_many(self, updates: Sequence[MarketUpdate]) -> list[Any]:
        return [None] * len(updates)


def load_mappings(path: Path) -> dict[str, Mapping]:
    """Every provider's mapping from a mappings file (empty when there is no file); raises
    ValueError for a bad one."""
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    try:
        names = list(tomllib.loads(text).get("providers", {}))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return {name: Mapping.from_toml(text, name) for name in names}


async def _serve_metrics(host: str, port: int) -> web.AppRunner:
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("ingest metrics ready", url=f"http://{host}:{port}/metrics")
    return runner


async def run_adapter(adapter: str, opts: dict[str, Any], store: Applier, settings: Settings,
                      *, stop: asyncio.Event, recorder: Recorder | None = None,
                      mappings: dict[str, Mapping] | None = None) -> FeedRunner:
    """Run one adapter until ``stop`` is set (or its input ends); returns its runner, whose
    ``counts`` say what happened. With ``recorder`` nothing is applied: every raw provider
    message is handed to it instead (`oddsfeed record`).

    ``opts`` are the CLI options: ``feed_id``, ``file``/``speed``/``lanes`` (replay), ``url``/
    ``bookmaker``/``odds_format``/``interval``/``timeout`` (http-poll), ``address``/
    ``filter``/``keep_trying`` (stream), ``port`` (push), ``events``/``seed``/``rate``
    (simulator), ``amqp_url``/``exchange``/``routing_key``/``uof_mapping``/
    ``producer_timeout`` (uof), ``metrics_port`` (0: no metrics endpoint). The stream logs in with
    ``settings.ingest.app_key`` and ``session`` when either is set. Raises StreamRefused
    when the stream provider refuses the credentials (unless ``keep_trying``).
    """
    if adapter not in ADAPTERS:
        raise ValueError(f"unknown adapter {adapter!r}; use one of {', '.join(ADAPTERS)}")
    feed_id = str(opts.get("feed_id") or "1")
    source = f"{adapter}:{feed_id}"
    # The push endpoint answers its pushers: a store outage is a 503 at once, not a wait.
    runner = FeedRunner(store if recorder is None else _Recording(), source,
                        staleness_s=settings.ingest.staleness_s,
                        store_retries=1 if adapter == "push" else 6)
    if mappings is None:
        mappings = load_mappings(Path(settings.ingest.mapping_file))
    mapping = mappings.get(PROVIDERS.get(adapter, adapter), Mapping())
    metrics_runner = None
    if opts.get("metrics_port"):
        metrics_runner = await _serve_metrics(settings.server.host, int(opts["metrics_port"]))
    watcher = None
    if adapter != "replay" and recorder is None:
        watcher = asyncio.create_task(runner.watch(stop=stop), name=f"health {source}")
    log.info("ingest starting", adapter=adapter, source=source,
             staleness_s=settings.ingest.staleness_s)
    try:
        if adapter == "simulator":
            await _simulator(runner, opts, settings, stop, recorder)
        elif adapter == "replay":
            normalizer = Normalizer(mappings, bookmaker=opts.get("bookmaker") or "",
                                    odds_format=opts.get("odds_format") or "decimal")
            lanes = Lanes(runner.submit_many, lanes=int(opts.get("lanes") or 8))
            try:
                with Path(opts["file"]).open(encoding="utf-8") as fh:  # noqa: ASYNC230 - read lazily, line by line
                    await replay(fh, lanes.put, runner.bad,
                                 speed=float(opts.get("speed", 1.0)), normalizer=normalizer,
                                 stop=stop)
            finally:
                await lanes.close()
        elif adapter == "http-poll":
            api_key = settings.ingest.api_key.get_secret_value()
            await _http_poll(runner, opts, mapping, stop, recorder,
                             {"apiKey": api_key} if api_key else {})
        elif adapter == "stream":
            state = StreamState(mapping=mapping)

            async def on_updates(updates: list[MarketUpdate]) -> None:
                await runner.submit_many(updates)  # pipelined, same outcomes as one by one

            await run_stream(str(opts["address"]), state, on_updates, runner.bad, stop=stop,
                             market_filter=json.loads(opts.get("filter") or "{}"),
                             authentication=_stream_login(settings),
                             keep_trying=bool(opts.get("keep_trying")),
                             on_alive=runner.alive, on_lag=runner.lagging,
                             on_raw=(lambda m: recorder("betfair", m)) if recorder else None)
        elif adapter == "uof":
            if recorder is not None:
                raise ValueError("uof messages cannot be recorded for replay")
            from .uof_amqp import run_uof_adapter

            await run_uof_adapter(runner, opts, stop)
        elif adapter == "push":
            port = int(opts.get("port") or 8090)
            app = build_push_app(runner, Authenticator(settings.auth),
                                 max_body_bytes=settings.api.max_body_bytes, mapping=mapping,
                                 recorder=recorder)
            app_runner = web.AppRunner(app, access_log=None)
            await app_runner.setup()
            await web.TCPSite(app_runner, settings.server.host, port).start()
            log.info("push endpoint ready", url=f"http://{settings.server.host}:{port}/v1/push")
            try:
                await stop.wait()
            finally:
                await app_runner.cleanup()
    finally:
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        log.info("ingest stopped", **runner.health())
    return runner


def _stream_login(settings: Settings) -> dict[str, Any] | None:
    """The stream's ``authentication`` fields (appKey, session), None when neither is set."""
    app_key = settings.ingest.app_key.get_secret_value()
    session = settings.ingest.session.get_secret_value()
    if not app_key and not session:
        return None
    return {"appKey": app_key, "session": session}


class _SubmitAll:
    """The simulator's store: records each update (when recording) and submits it."""

    def __init__(self, runner: FeedRunner, recorder: Recorder | None) -> None:
        self.runner, self.recorder = runner, recorder

    async def apply(self, update: MarketUpdate) -> Any:
        if self.recorder is not None:
            self.recorder("simulator", to_message(update))
        return await self.runner.submit(update)

    async def apply_many(self, updates: Sequence[MarketUpdate]) -> list[Any]:
        if self.recorder is not None:
            for u in updates:
                self.recorder("simulator", to_message(u))
        return await self.runner.submit_many(updates)


async def _simulator(runner: FeedRunner, opts: dict[str, Any], settings: Settings,
                     stop: asyncio.Event, recorder: Recorder | None) -> None:
    events = opts.get("events")
    seed = opts.get("seed")
    cfg = SimulatorConfig(events=int(events if events is not None else settings.demo.events),
                          seed=int(seed if seed is not None else settings.demo.seed),
                          rate_per_s=float(opts.get("rate") or settings.demo.rate_per_s))
    await run_simulator(_SubmitAll(runner, recorder), cfg, stop=stop,
                        start_ms=int(time.time() * 1000), count=False)


async def _http_poll(runner: FeedRunner, opts: dict[str, Any], mapping: Mapping,
                     stop: asyncio.Event, recorder: Recorder | None,
                     params: dict[str, str]) -> None:
    bookmaker = opts.get("bookmaker") or ""
    fmt = opts.get("odds_format") or "decimal"
    # A 304 means "the same body as the last 200": only that body's markets are alive, so
    # an event that left the feed goes stale even while the provider answers 304.
    last_body: set[str] = set()

    async def on_events(events: list[Any]) -> None:
        now = int(time.time() * 1000)
        updates: list[MarketUpdate] = []
        for ev in events:
            if recorder:
                recorder("oddsapi", ev)
            try:
                updates += normalize_event(ev, bookmaker=bookmaker, odds_format=fmt,
                                           now_ms=now, mapping=mapping)
            except ProviderDataError as exc:
                runner.bad(exc, ev)
        await runner.submit_many(updates)  # one poll: pipelined, same outcomes as one by one
        last_body.clear()
        last_body.update(u.market for u in updates)

    async def on_not_modified() -> None:
        await runner.alive(last_body)

    poller = Poller(str(opts["url"]), on_events, interval_s=float(opts.get("interval") or 5.0),
                    timeout_s=float(opts.get("timeout") or 10.0), params=params,
                    on_not_modified=on_not_modified, on_bad=runner.bad)
    await poller.run(stop)
