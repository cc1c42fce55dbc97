"""The RFC 9457 problem every HTTP error is answered with (protocol.md section 3)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

__all__ = ["PROBLEM", "Problem"]

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
