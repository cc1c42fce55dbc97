"""The one-of-each helpers the HTTP API, the fan-out and the ingest push endpoint share."""

from __future__ import annotations

import time

import pytest

from oddsfeed.api.etag import etag
from oddsfeed.bearer import bearer_token
from oddsfeed.book import Changed, Created, NoOp, Rejected
from oddsfeed.clock import now_ms
from oddsfeed.store import OutOfOrder, Precondition


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
    """Every apply outcome carries the name that logs and push answers have always used."""
    names = [c.name for c in (Created, Changed, NoOp, Rejected, OutOfOrder, Precondition)]
    assert names == ["created", "changed", "noop", "rejected", "outoforder", "precondition"]
    assert [c.name == c.__name__.lower()
            for c in (Created, Changed, NoOp, Rejected, OutOfOrder, Precondition)] == [True] * 6


def test_now_ms_is_the_wall_clock_in_milliseconds() -> None:
    """now_ms reads the wall clock in whole milliseconds."""
    before = int(time.time() * 1000)
    got = now_ms()
    assert before <= got <= int(time.time() * 1000)
