"""JSON answers of the hot routes: orjson bytes behind one prebuilt Content-Type header.

The JSON value is the one ``web.json_response`` (``json.dumps``) would send: orjson writes
it compactly and in UTF-8 where json.dumps puts spaces and ``\\u`` escapes, and spells
some floats differently (``1e-05`` as ``0.00001``), all the same JSON numbers and strings.
A value orjson cannot encode (an int past 64 bits, a non-string key) is encoded by
``json.dumps`` as before.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = ["JSON_TYPE", "dumps", "json_answer"]

JSON_TYPE = "application/json; charset=utf-8"  # as web.json_response labels its answers
_HEADERS = CIMultiDictProxy(CIMultiDict({"Content-Type": JSON_TYPE}))


def dumps(value: Any) -> bytes:
    """The UTF-8 JSON text of ``value``."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value).encode()


def json_answer(value: Any, status: int = 200,
                headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON response of ``value``; ``headers`` are added to the Content-Type."""
    if headers:
        return web.Response(body=dumps(value), status=status,
                            headers={"Content-Type": JSON_TYPE, **headers})
    return web.Response(body=dumps(value), status=status, headers=_HEADERS)
