"""Logging setup: JSON and console renderings carry the same keys; stdlib logs are routed."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from oddsfeed.log import configure_logging, get_logger

pytestmark = pytest.mark.usefixtures("restore_logging")


def test_json_when_not_a_tty() -> None:
    """fmt=auto off a terminal writes one JSON object a line with the standard keys."""
    out = io.StringIO()
    configure_logging("info", "auto", False, stream=out)
    get_logger("oddsfeed.test").info("hello", market="m1")
    get_logger("oddsfeed.test").debug("hidden")
    logging.getLogger("somelib").warning("from %s", "stdlib")
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["event"] for r in records] == ["hello", "from stdlib"]
    for record in records:
        assert {"timestamp", "level", "event", "logger"} <= set(record)
    assert records[0]["market"] == "m1"
    assert records[0]["logger"] == "oddsfeed.test"
    assert records[1]["level"] == "warning"
    assert records[1]["logger"] == "somelib"
    assert records[0]["timestamp"].endswith("Z")


def test_console_on_a_tty() -> None:
    """fmt=auto on a terminal renders human-readable lines, not JSON."""
    out = io.StringIO()
    configure_logging("debug", "auto", True, stream=out)
    get_logger("oddsfeed.test").debug("shown", n=1)
    text = out.getvalue()
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    assert "shown" in plain
    assert "n=1" in plain
    assert not plain.startswith("{")


def test_reconfiguring_replaces_the_handler() -> None:
    """A second configure_logging does not duplicate output."""
    out = io.StringIO()
    configure_logging("info", "json", False, stream=io.StringIO())
    configure_logging("info", "json", False, stream=out)
    logging.getLogger("x").error("once")
    assert len(out.getvalue().splitlines()) == 1


def test_exceptions_render_without_locals() -> None:
    """JSON tracebacks are structured and carry no local variables (they may hold secrets)."""
    out = io.StringIO()
    configure_logging("info", "json", False, stream=out)
    secret = "hunter2"
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        get_logger("oddsfeed.test").exception("failed")
    record = json.loads(out.getvalue())
    assert record["exception"][0]["exc_type"] == "RuntimeError"
    assert secret not in out.getvalue()


def test_bad_level_is_rejected() -> None:
    """An unknown level is a ValueError naming it."""
    with pytest.raises(ValueError, match="loud"):
        configure_logging("loud", "json", False)
