"""Hypothesis against the write and validate routes of a real server with hostile bodies:
no 5xx, a problem+json for every 4xx, no error or traceback in the log, and a rejected
request changes nothing in the store."""

from __future__ import annotations

import logging

import pytest
import redis
import requests
from hypothesis import HealthCheck, given, settings
from structlog.testing import capture_logs

from tests.api.conftest import BODY
from tests.api.test_fuzz import ServerThread, server, snapshot

from .strategies import hostile_requests

__all__ = ["server"]  # the fixture of tests/api/test_fuzz.py


def test_hostile_bodies_never_break_the_api(
        server: tuple[ServerThread, redis.Redis, requests.Session],
        caplog: pytest.LogCaptureFixture) -> None:
    """Deep nesting, lone surrogates, huge integers, wrong types and unknown fields in any
    field of a PUT, PATCH, POST /v1/odds or validate body: below 500, problem+json when
    rejected, the store unchanged by a rejection, and nothing logged at error level."""
    srv, r, http = server
    base = f"http://127.0.0.1:{srv.port}"
    res = http.put(f"{base}/v1/markets/m1", json=BODY)
    assert res.status_code == 201, res.text

    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(req=hostile_requests())
    def run(req: tuple[str, str, bytes]) -> None:
        method, path, raw = req
        before = snapshot(r)
        with capture_logs() as logs:
            res = http.request(method, base + path, data=raw, timeout=10,
                               headers={"Content-Type": "application/json"})
        logged = [e for e in logs if e["log_level"] in ("error", "critical")]
        assert res.status_code < 500, (req, res.text[:300])
        if res.status_code >= 400:
            assert res.headers["Content-Type"].startswith("application/problem+json")
            assert snapshot(r) == before, (req, res.text[:300])
        assert not logged, (req, logged[:1])

    caplog.set_level(logging.ERROR)
    run()
    # stdlib records too: aiohttp logs a handler's unhandled exception there
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
