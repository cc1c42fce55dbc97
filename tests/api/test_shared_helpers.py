"""The one-of-each helpers the HTTP API, the fan-out and the ingest push endpoint share."""

from __future__ import annotations

import time

import pytest

from oddsfeed.api.etag import etag
from oddsfeed.bearer import bearer_token
from oddsfeed.clock import now_ms
from oddsfeed.core.book import OUTCOME_NAMES, Changed, Created, NoOp, Rejected
from oddsfeed.core.model import Market, Selection
from oddsfeed.store import OutOfOrder, Precondition, outcome_name


@pytest.mark.parametrize(("header", "token"), [
    ("Bearer abc.def", "abc.def"),
    ("bearer  abc ", "abc"),
    ("BEARER x", "x"),
    ("Bearer ", ""),
    ("Basic dXNlcjpwdw==", None),
    ("Bearerabc", None),
    ("", None),
])
def test_bearer_token(header: str, token: str | None) -> None:
    """The Bearer scheme is matched case-insensitively; any other scheme gives None."""
    assert bearer_token(header) == token


def test_etag_names_epoch_and_version() -> None:
    """An ETag is the quoted "epoch:version" that If-Match takes back."""
    assert etag("e1", 7) == '"e1:7"'


def test_outcome_names_are_the_published_strings() -> None:
    """Every apply outcome has the name that logs and push answers have always used."""
    market = Market(id="m1", event="e1", sport="soccer", name="A v B", epoch="ep", version=1,
                    ts=1, selections={"h": Selection("Home", 25000)})
    outcomes = [Created(market), NoOp(market), Rejected("settled", "settled"),
                OutOfOrder("m1", 3), Precondition(None)]
    assert [outcome_name(o) for o in outcomes] == [
        "created", "noop", "rejected", "outoforder", "precondition"]
    assert OUTCOME_NAMES[Changed] == "changed"
    assert set(OUTCOME_NAMES) == {Created, Changed, NoOp, Rejected}


def test_now_ms_is_the_wall_clock_in_milliseconds() -> None:
    """now_ms reads the wall clock in whole milliseconds."""
    before = int(time.time() * 1000)
    got = now_ms()
    assert before <= got <= int(time.time() * 1000)
