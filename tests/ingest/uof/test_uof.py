"""The UOF adapter's pure part (mapping, messages -> updates, producer liveness) and its
ordering through a real store, without a broker."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from oddsfeed.cli import main as cli_main
from oddsfeed.core.errors import ProviderDataError
from oddsfeed.store import Store
from oddsfeed_ingest.runner import FeedRunner
from oddsfeed_ingest.uof import MAX_XML_BYTES, STATUS, UofState, parse_xml
from oddsfeed_ingest.uof_amqp import masked_url
from oddsfeed_ingest.uof_mapping import UofMapping, load_uof_mapping, parse_specifiers

HERE = Path(__file__).parent
ROOT = HERE.parents[2]
EVENT = "sr:match:16807109"


def state(**kw: object) -> UofState:
    return UofState(mapping=load_uof_mapping(HERE / "mapping.toml"), **kw)  # type: ignore[arg-type]


def odds(ts: int, markets: str, product: str = "1", event: str = EVENT) -> bytes:
    return (f'<odds_change product="{product}" event_id="{event}" timestamp="{ts}">'
            f"<odds>{markets}</odds></odds_change>").encode()


ONE_X_TWO = ('<market status="{status}" id="1"><outcome id="1" odds="{home}" active="1"/>'
             '<outcome id="2" odds="3.1" active="1"/><outcome id="3" odds="2.9" active="1"/>'
             "</market>")


def test_shipped_mapping_and_bad_keys(tmp_path: Path) -> None:
    """config/uof.toml loads; a misspelt key is an error naming it; no file maps nothing."""
    shipped = load_uof_mapping(ROOT / "config" / "uof.toml")
    assert shipped.markets["18"].point == "total"
    with pytest.raises(ValueError, match="outcomez"):
        UofMapping.from_toml('[markets."1"]\noutcomez = {}\n')
    assert load_uof_mapping(tmp_path / "missing.toml").markets == {}


@pytest.mark.parametrize(("code", "ours"), sorted(STATUS.items()))
def test_market_status_codes(code: str, ours: str) -> None:
    """Every UOF market status maps onto one of ours (from an up producer)."""
    out = state().on_message(odds(1700000001000, ONE_X_TWO.format(status=code, home="2.4")), 1.0)
    assert [u.fields["status"] for u in out.updates] == [ours]


def test_unknown_status_and_specifiers_are_bad_markets() -> None:
    """An unknown status or a market missing its line specifier is one bad market; the
    rest of the message still applies."""
    body = odds(1700000001000, ONE_X_TWO.format(status="9", home="2.4")
                + '<market status="1" id="18"><outcome id="12" odds="1.9"/></market>'
                + '<market status="1" id="18" specifiers="total=1.5">'
                  '<outcome id="12" odds="1.4"/></market>')
    out = state().on_message(body, 1.0)
    assert [u.market for u in out.updates] == ["m16807109:total:1.5"]
    assert len(out.errors) == 2
    with pytest.raises(ValueError, match="bad specifier"):
        parse_specifiers("total")


def test_unmapped_markets_skipped_or_derived() -> None:
    """An unmapped market is skipped and counted, or created with derived ids and names
    when the mapping says ``unmapped = "derive"``."""
    body = odds(1700000001000, '<market status="1" id="999" specifiers="variant=sr:goals:6+">'
                               '<outcome id="sr:goals:6+:1" odds="4.2"/></market>',
                event="sr:match:1")
    s = state()
    assert s.on_message(body, 1.0).updates == []
    assert s.counts == {"skipped_unmapped": 1}
    derived = UofState(mapping=UofMapping(unmapped="derive"))
    (u,) = derived.on_message(body, 1.0).updates
    assert u.market.startswith("sr:match:1:999:variant_sr:goals:6-")
    assert u.fields["name"] == "market 999"
    assert u.fields["sport"] == "unknown"
    (sid,) = u.selections
    assert sid.startswith("sr:goals:6_:1-")
    assert u.selections[sid]["name"] == "sr:goals:6+:1"
    other = body.replace(b"6+", b"6")  # ids that differ only in an unsafe character
    (v,) = derived.on_message(other.replace(b"001000", b"002000"), 2.0).updates
    assert v.market.startswith("sr:match:1:999:variant_sr:goals:6-")
    assert v.market != u.market
    assert list(v.selections) == ["sr:goals:6:1"]


def test_bet_cancel_window_and_uncertain_settlement() -> None:
    """A bet_cancel with a time window changes no market; a settlement of certainty 1 (live
    data, may be rolled back) closes the market instead of settling it."""
    s = state()
    s.on_message(odds(1700000001000, ONE_X_TWO.format(status="1", home="2.4")), 1.0)
    window = (f'<bet_cancel product="1" event_id="{EVENT}" timestamp="1700000002000" '
              'start_time="1700000000000" end_time="1700000001500"><market id="1"/></bet_cancel>')
    assert s.on_message(window.encode(), 2.0).updates == []
    live = (f'<bet_settlement certainty="1" product="1" event_id="{EVENT}" '
            'timestamp="1700000003000"><outcomes><market id="1"><outcome id="1" result="1"/>'
            "</market></outcomes></bet_settlement>")
    assert [u.fields for u in s.on_message(live.encode(), 3.0).updates] == [{"status": "closed"}]


def test_producer_watched_from_its_first_message() -> None:
    """A producer that never sent an alive is taken down after the timeout all the same,
    and only its open markets are suspended."""
    s = state(producer_timeout_s=20.0)
    s.on_message(odds(1700000001000, ONE_X_TWO.format(status="1", home="2.4")
                      + '<market status="0" id="18" specifiers="total=2.5"/>'), 100.0)
    assert s.check_producers(119.0).updates == []
    out = s.check_producers(121.0)
    assert out.down == ["1"]
    assert [(u.market, u.fields) for u in out.updates] == [
        ("m16807109:1x2", {"status": "suspended"})]
    assert s.check_producers(200.0).down == []  # down once, until it is up again


def test_xml_limits_and_masked_url() -> None:
    """Oversized XML and DTDs are refused before parsing; credentials never reach a log."""
    with pytest.raises(ProviderDataError, match="over"):
        parse_xml(b"<alive/>" + b" " * MAX_XML_BYTES)
    with pytest.raises(ProviderDataError, match="DTD"):
        parse_xml(b'<!DOCTYPE alive [<!ELEMENT alive ANY>]><alive/>')
    assert masked_url("amqps://tok3n:@mq.example:5671/%2Funifiedfeed%2F42") == (
        "amqps://***@mq.example:5671/%2Funifiedfeed%2F42")


async def test_older_and_same_millisecond_messages_through_the_store(store: Store) -> None:
    """Two odds_change messages at one millisecond both apply in order, and a late one with
    an older timestamp is dropped by the store as out of order."""
    s = state()
    runner = FeedRunner(store, "uof:test")
    for ts, home in ((1700000005000, "2.4"), (1700000005000, "2.5"), (1700000004000, "9.0")):
        out = s.on_message(odds(ts, ONE_X_TWO.format(status="1", home=home)), 1.0)
        await runner.submit_many(out.updates)
    m = await store.get("m16807109:1x2")
    assert m is not None
    assert m.selections["home"].price == 25000
    assert runner.counts == {"applied": 2, "out_of_order": 1}


def test_cli_uof_options_and_errors(tmp_path: Path) -> None:
    """`oddsfeed ingest --help` documents the uof options and their environment variable;
    a missing broker URL, `record uof` and a bad mapping file are clear errors."""
    runner = CliRunner()
    res = runner.invoke(cli_main, ["ingest", "--help"])
    assert "--amqp-url" in res.output
    assert "ODDSFEED_UOF_AMQP_URL" in res.output
    assert "--uof-mapping" in res.output
    res = runner.invoke(cli_main, ["ingest", "uof"], env={"ODDSFEED_UOF_AMQP_URL": ""})
    assert res.exit_code != 0
    assert "--amqp-url" in res.output
    res = runner.invoke(cli_main, ["record", "uof", "--amqp-url", "amqp://x", "--out", "x.jsonl"])
    assert res.exit_code != 0
    assert "cannot be recorded" in res.output
    bad = tmp_path / "bad.toml"
    bad.write_text('unmaped = "skip"\n')
    res = runner.invoke(cli_main, ["ingest", "uof", "--amqp-url", "amqp://x", "--uof-mapping",
                                   str(bad), "--redis-url", "redis://127.0.0.1:1"])
    assert res.exit_code != 0
    assert "unmaped" in res.output
