"""The one ``/metrics`` handler (Prometheus text format), shared by the API's admin routes
and the ingest metrics endpoint. With PROMETHEUS_MULTIPROC_DIR set it aggregates every
worker process's samples; otherwise it serves this process's registry."""

from __future__ import annotations

import os

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client import multiprocess as prom_multiprocess

__all__ = ["metrics"]


async def metrics(request: web.Request) -> web.Response:
    """The metrics exposition of this process, or of all of them under multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        data = generate_latest(registry)
    else:
        data = generate_latest(REGISTRY)
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})
