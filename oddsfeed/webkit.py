"""aiohttp pieces every HTTP endpoint of oddsfeed shares (the API, its admin routes, the
ingest push and metrics endpoints): the RFC 9457 problem every HTTP error is answered with
(protocol.md section 3) and the one ``/metrics`` handler. Owns no route and no state.

The ``/metrics`` handler serves Prometheus text; with PROMETHEUS_MULTIPROC_DIR set it
aggregates every worker process's samples, otherwise it serves this process's registry;
either way after flushing this process's request tallies (:mod:`oddsfeed.tally`).
"""

from __future__ import annotations

import json
import os
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client import multiprocess as prom_multiprocess

from .tally import flush_all

__all__ = ["PROBLEM", "Problem", "metrics"]

PROBLEM = "application/problem+json"
class Problem(Exception):
    """An RFC 9457 problem to answer with."""

    def __init__(self, status: int, title: str, detail: str = "", *,
                 errors: list[dict[str, str]] | None = None, retry_after: int | None = None,
                 **extra: Any) -> None:
        self.status = status
        self.retry_after = retry_after  # seconds, sent as the Retry-After header
        self.body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status,
                                     "detail": detail or title}
        if errors:
            self.body["errors"] = errors
        self.body.update(extra)
        super().__init__(detail or title)

    def response(self) -> web.Response:
        resp = web.Response(status=self.status, content_type=PROBLEM,
                            text=json.dumps(self.body))
        if self.retry_after is not None:
            resp.headers["Retry-After"] = str(self.retry_after)
        return resp


async def metrics(request: web.Request) -> web.Response:
    """The metrics exposition of this process, or of all of them under multiprocess mode."""
    flush_all()  # this process's tallies; the other workers' are at most a second behind
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        data = generate_latest(registry)
    else:
        data = generate_latest(REGISTRY)
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})
