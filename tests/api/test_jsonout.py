"""The hot routes' JSON answers carry the same JSON values as ``web.json_response``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web

from oddsfeed.api.jsonout import json_answer

VALUES: list[Any] = [
    {"ok": True, "legs": [{"market": "m1", "selection": "h", "ok": True, "price": 2.5,
                           "version": 3}]},
    {"name": "Bayern M\u00fcnchen \u2013 K\u00f6ln \U0001f3c6", "price": 1.01, "n": None},
    {"floats": [0.1, 1e-05, 1e16, 1001.0, -0.0, 2.3333333333333335]},
    {"big": 2**70, "neg": -(2**63) - 1},  # past 64 bits: json.dumps's fallback
    {"results": [{"market": None, "ok": False, "error": {"status": 400}}]},
]


@pytest.mark.parametrize("value", VALUES)
def test_same_json_value_and_content_type(value: Any) -> None:
    """Each answer decodes to what json.dumps wrote, under the same Content-Type."""
    ours = json_answer(value, status=201, headers={"ETag": '"e:1"'})
    theirs = web.json_response(value, status=201, headers={"ETag": '"e:1"'})
    assert isinstance(ours.body, bytes)
    assert isinstance(theirs.text, str)
    assert json.loads(ours.body) == json.loads(theirs.text)
    assert ours.status == 201
    assert ours.headers["ETag"] == '"e:1"'
    assert ours.headers["Content-Type"] == theirs.headers["Content-Type"]


def test_plain_answer_headers_are_not_shared_state() -> None:
    """A header added to one answer does not leak into the next (the prebuilt header set
    is copied per response)."""
    first = json_answer({"a": 1})
    first.headers["X-One"] = "1"
    assert "X-One" not in json_answer({"a": 2}).headers
