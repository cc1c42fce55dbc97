"""The adapter registry: the CLI's options, help and checks all come from it."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from oddsfeed.cli import main as cli_main
from oddsfeed_ingest.registry import ADAPTERS, COMMON_OPTIONS, cli_options


def test_every_adapter_and_option_is_documented_in_ingest_help() -> None:
    """`oddsfeed ingest --help` names every registered adapter and every option flag."""
    res = CliRunner().invoke(cli_main, ["ingest", "--help"])
    assert res.exit_code == 0, res.output
    for name in ADAPTERS:
        assert f"\n  {name} " in res.output
    for opt, _ in cli_options():
        assert opt.flag in res.output


def test_options_shared_by_adapters_are_listed_once_with_their_users() -> None:
    """An option two adapters use is one CLI option naming both."""
    flags = [opt.flag for opt, _ in cli_options()]
    assert len(flags) == len(set(flags))
    users = {opt.name: u for opt, u in cli_options()}
    assert users["odds_format"] == ("replay", "http-poll")
    assert all(users[o.name] == () for o in COMMON_OPTIONS)


def test_resolve_fills_defaults_once() -> None:
    """Absent and falsy options take the registry default; speed 0 stays 0."""
    opts = ADAPTERS["replay"].resolve({"file": "x.jsonl", "lanes": 0, "speed": 0})
    assert opts["lanes"] == 8
    assert opts["speed"] == 0
    assert opts["feed_id"] == "1"
    assert opts["odds_format"] == "decimal"
    uof = ADAPTERS["uof"].resolve({"routing_key": ()})
    assert uof["routing_key"] == ("#",)
    assert uof["producer_timeout"] == 20.0


@pytest.mark.parametrize(("adapter", "opts", "recording", "message"), [
    ("replay", {}, False, "replay needs --file"),
    ("http-poll", {}, False, "http-poll needs --url"),
    ("stream", {}, False, "stream needs --address HOST:PORT"),
    ("uof", {}, False, "uof needs --amqp-url (or ODDSFEED_UOF_AMQP_URL)"),
    ("uof", {"amqp_url": "amqp://x"}, True, "uof messages cannot be recorded for replay"),
])
def test_check_names_what_is_missing(adapter: str, opts: dict[str, str], recording: bool,
                                     message: str) -> None:
    """A missing required option or an unrecordable adapter is a ValueError naming it."""
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        ADAPTERS[adapter].check(opts, recording=recording)
