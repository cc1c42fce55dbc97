"""Connection admission policy (no sockets): the caps per address and per token subject,
including connections whose handshakes raced past the check (closed with 1013)."""

from __future__ import annotations

from oddsfeed.auth import ANONYMOUS, READ, Principal
from oddsfeed.fanout.admission import Admission

ALICE = Principal(sub="alice", scopes=frozenset({READ}))


def test_caps_count_open_connections_and_forget_closed_ones() -> None:
    """A cap refuses the connection past it, counts only served connections, and frees a
    place when one closes; anonymous readers count per address only."""
    adm = Admission(connect_per_s=1000, per_ip=3, per_subject=2)
    assert [adm.opened("1.2.3.4", ALICE) for _ in range(3)] == ["", "", "subject"]
    assert adm.opened("1.2.3.4", ANONYMOUS) == ""
    assert adm.refusal("1.2.3.4", ANONYMOUS) == "ip"
    assert adm.refusal("5.6.7.8", ANONYMOUS) == ""
    adm.closed("1.2.3.4", ALICE)
    assert adm.refusal("1.2.3.4", ALICE) == ""
    assert adm.opened("1.2.3.4", ALICE) == ""
    assert adm.refusal("1.2.3.4", ANONYMOUS) == "ip"


def test_raced_handshakes_are_refused_when_served() -> None:
    """Handshakes that all passed refusal() together are refused by opened() past the cap
    (the server closes those with 1013); 0 turns a cap off."""
    adm = Admission(connect_per_s=1000, per_ip=2, per_subject=0)
    assert [adm.refusal("ip", ALICE) for _ in range(4)] == ["", "", "", ""]
    assert [adm.opened("ip", ALICE) for _ in range(4)] == ["", "", "ip", "ip"]
    open_all = Admission(connect_per_s=1000, per_ip=0, per_subject=0)
    assert all(open_all.opened("ip", ALICE) == "" for _ in range(1000))


def test_connect_rate_per_address() -> None:
    """The connect rate is a token bucket per address: a burst of rate, then refused until
    tokens come back with time."""
    adm = Admission(connect_per_s=2, per_ip=0, per_subject=0)
    assert [adm.rate_ok("a", 0.0) for _ in range(3)] == [True, True, False]
    assert adm.rate_ok("b", 0.0)
    assert adm.rate_ok("a", 0.5)
