"""Fixtures of the adversarial tests: the HTTP API fixtures of tests/api (a real app on a
real aiohttp server over the session's embedded Valkey), shared rather than copied."""

from __future__ import annotations

from tests.api.conftest import api, make_api

__all__ = ["api", "make_api"]
