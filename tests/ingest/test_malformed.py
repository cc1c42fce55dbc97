"""Bad provider data of every kind is logged with its raw text, counted and skipped; the
valid messages between the bad ones still apply, and an adapter never stops for it."""

from __future__ import annotations

import json

from structlog.testing import capture_logs

from oddsfeed.store import Store
from oddsfeed_ingest.normalised import FeedMapping
from oddsfeed_ingest.replay import Normalizer, replay
from oddsfeed_ingest.runner import FeedRunner

ODDS_EVENT = {"id": "ev1", "sport_key": "soccer_epl", "commence_time": "2030-01-01T15:00:00Z",
              "home_team": "A", "away_team": "B", "bookmakers": [
                  {"key": "book1", "last_update": "2029-12-31T10:00:00Z", "markets": [
                      {"key": "h2h", "outcomes": [{"name": "A", "price": 0.5}]}]}]}
BF_DEF = {"status": "OPEN", "eventId": "e1", "eventTypeId": "1", "runners": [{"id": 1}]}


def rec(msg: object, provider: str = "push") -> str:
    return json.dumps({"t": 1, "provider": provider, "msg": msg})


def sel(price: object) -> str:
    return rec({"market": "m1", "selections": {"h": {"price": price}}, "seq": 999})


# (kind, raw line): each one is bad provider data
MALFORMED: list[tuple[str, str]] = [
    ("malformed json", "{not json"),
    ("truncated line", '{"t": 1, "provider": "push", "msg": {"market": "m1", "selec'),
    ("record not an object", "[1, 2, 3]"),
    ("record is a string", '"just a string"'),
    ("record without t", json.dumps({"provider": "push", "msg": {}})),
    ("t of the wrong type", json.dumps({"t": "soon", "provider": "push", "msg": {}})),
    ("record without msg", json.dumps({"t": 1, "provider": "push"})),
    ("unknown provider", rec({"market": "m1"}, "acme")),
    ("message is a list", rec([])),
    ("missing market", rec({"selections": {}})),
    ("bad market id", rec({"market": "bad id!", "selections": {}})),
    ("unknown market id, no mapping", rec({"market": "zz", "selections": {}})),
    ("unknown event id, no mapping", rec({"market": "m1", "event": "nope", "sport": "s",
                                          "name": "n"})),
    ("negative price", sel(-2)),
    ("zero price", sel(0)),
    ("price of exactly 1", sel(1)),
    ("absurd price", sel(1e9)),
    ("NaN price", '{"t": 1, "provider": "push", "msg": {"market": "m1", "selections": '
                  '{"h": {"price": NaN}}}}'),
    ("non-numeric price", sel("abc")),
    ("unknown odds format", sel({"yen": 2})),
    ("boolean price", sel(True)),
    ("fraction over zero", sel("5/0")),
    ("american under 100", sel("+50")),
    ("unknown status", rec({"market": "m1", "status": "paused"})),
    ("in_play of the wrong type", rec({"market": "m1", "in_play": "yes"})),
    ("negative bet delay", rec({"market": "m1", "bet_delay_ms": -5})),
    ("seq of the wrong type", rec({"market": "m1", "status": "open", "seq": "x"})),
    ("replace of the wrong type", rec({"market": "m1", "replace": "yes"})),
    ("unknown field", rec({"market": "m1", "bogus": 1})),
    ("selection not an object", rec({"market": "m1", "selections": {"h": 5}})),
    ("unknown selection field", rec({"market": "m1", "selections": {"h": {"odds": 2}}})),
    ("name too long", rec({"market": "m1", "name": "x" * 300})),
    ("odds api event without teams", rec({"id": "x"}, "oddsapi")),
    ("odds api price below 1", rec(ODDS_EVENT, "oddsapi")),
    ("stream mcm without pt", rec({"op": "mcm", "mc": [{"id": "1"}]}, "betfair")),
    ("stream negative ladder price", rec({"op": "mcm", "pt": 5, "mc": [
        {"id": "9.9", "marketDefinition": BF_DEF, "rc": [{"id": 1, "atb": [[-1, 5]]}]}]},
        "betfair")),
    ("stream absurd bet delay", rec({"op": "mcm", "pt": 5, "mc": [
        {"id": "9.9", "marketDefinition": {**BF_DEF, "betDelay": 999}}]}, "betfair")),
    ("stream message without op", rec({"pt": 5}, "betfair")),
]


async def test_each_malformed_kind_is_skipped_and_counted(store: Store) -> None:
    """Each of the malformed kinds is counted once and logged with its raw text, while every
    valid message between them applies."""
    assert len(MALFORMED) >= 20
    good = [rec({"market": "m1", "event": "e1", "sport": "soccer", "name": "n",
                 "selections": {"h": {"name": "H", "price": f"{2 + i / 100:.2f}"}},
                 "seq": i + 1}) for i in range(len(MALFORMED) + 1)]
    lines = [good[0]]
    for (_, bad), ok in zip(MALFORMED, good[1:], strict=True):
        lines += [bad, ok]
    strict = FeedMapping(create_unknown=False, markets={"m1": "m1"}, events={"e1": "e1"})
    runner = FeedRunner(store, "replay:bad")
    with capture_logs() as logs:
        n = await replay(lines, runner.submit, runner.bad, speed=0,
                         normalizer=Normalizer({"push": strict}, bookmaker="book1"))
    assert n == len(good)
    assert runner.counts["bad"] == len(MALFORMED)
    warned = [e for e in logs if e["event"] == "bad provider data skipped"]
    assert len(warned) == len(MALFORMED)
    assert all(e["raw"] for e in warned)
    assert any("not json" in e["raw"] for e in warned)
    m = await store.get("m1")
    assert m is not None
    assert m.version == len(good)
    assert m.selections["h"].price == 20000 + 100 * len(MALFORMED)
