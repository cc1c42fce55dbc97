"""Running one adapter against the store: the wiring behind `oddsfeed ingest ADAPTER` and
`oddsfeed record ADAPTER` (the CLI calls :func:`run_adapter`). It owns no provider format
and no adapter: those are the entries of :data:`oddsfeed_ingest.registry.ADAPTERS`.

Each adapter feeds one :class:`~oddsfeed_ingest.runner.FeedRunner` whose source is
``<adapter>:<feed id>`` (``push:<feed id>@<token subject>`` per pusher); the runner's
watcher suspends markets whose source went silent.
"""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from oddsfeed.core.model import MAX_PRIORITY, MarketUpdate
from oddsfeed.settings import Settings
from oddsfeed.webkit import metrics

from .normalised import FeedMapping
from .registry import ADAPTERS, AdapterRun, Recorder
from .runner import Applier, FeedRunner

log = structlog.get_logger("oddsfeed.ingest")


class _Recording:
    """A store stand-in for `record`: nothing is applied."""

    async def apply(self, update: MarketUpdate) -> Any:
        return None

    async def apply_many(self, updates: Sequence[MarketUpdate]) -> list[Any]:
        return [None] * len(updates)


def load_mappings(path: Path) -> dict[str, FeedMapping]:
    """Every provider's mapping from a mappings file (empty when there is no file); raises
    ValueError for a bad one."""
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    try:
        names = list(tomllib.loads(text).get("providers", {}))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return {name: FeedMapping.from_toml(text, name) for name in names}


async def _serve_metrics(host: str, port: int) -> web.AppRunner:
    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("ingest metrics ready", url=f"http://{host}:{port}/metrics")
    return runner


async def run_adapter(adapter: str, opts: dict[str, Any], store: Applier | None,
                      settings: Settings, *, stop: asyncio.Event,
                      recorder: Recorder | None = None,
                      mappings: dict[str, FeedMapping] | None = None) -> FeedRunner:
    """Run one adapter until ``stop`` is set (or its input ends); returns its runner, whose
    ``counts`` say what happened. With ``recorder`` nothing is applied (``store`` may be
    None): every raw provider message is handed to it instead (`oddsfeed record`).

    ``opts`` are the adapter's options (see :data:`oddsfeed_ingest.registry.ADAPTERS`; an absent one
    takes its default there); ``metrics_port`` (0: no metrics endpoint) serves /metrics.
    The stream logs in with ``settings.ingest.app_key`` and ``session`` when either is set.
    Raises ValueError for an unknown adapter or missing options, and ProviderRefused when
    the provider refuses the credentials (the stream only unless ``keep_trying``).
    """
    spec = ADAPTERS.get(adapter)
    if spec is None:
        raise ValueError(f"unknown adapter {adapter!r}; use one of {', '.join(ADAPTERS)}")
    opts = spec.check(opts, recording=recorder is not None)
    if recorder is None and store is None:
        raise ValueError("run_adapter needs a store unless it records")
    source = f"{adapter}:{opts['feed_id']}"
    priority = int(opts["priority"])
    if not 0 <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority must be 0-{MAX_PRIORITY}, got {priority}")
    runner = FeedRunner(store if recorder is None and store is not None else _Recording(),
                        source, staleness_s=settings.ingest.staleness_s,
                        store_retries=spec.store_retries, priority=priority)
    if mappings is None:
        mappings = load_mappings(Path(settings.ingest.mapping_file))
    mapping = mappings.get(spec.mapping_name, FeedMapping())
    metrics_runner = None
    if opts["metrics_port"]:
        metrics_runner = await _serve_metrics(settings.server.host, int(opts["metrics_port"]))
    watcher = None
    if spec.watch and recorder is None:
        watcher = asyncio.create_task(runner.watch(stop=stop), name=f"health {source}")
    log.info("ingest starting", adapter=adapter, source=source,
             staleness_s=settings.ingest.staleness_s, priority=runner.priority)
    try:
        await spec.run(AdapterRun(runner=runner, opts=opts, settings=settings, stop=stop,
                                  recorder=recorder, mapping=mapping, mappings=mappings))
    finally:
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        log.info("ingest stopped", **runner.health())
    return runner
