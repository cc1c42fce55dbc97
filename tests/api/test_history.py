"""Price history and the event audit over HTTP: what changed, when, and who changed it."""

from __future__ import annotations

from .conftest import BODY, Api, mint


async def test_history_and_audit_name_the_desk_user(api: Api) -> None:
    """API writes are recorded with the token's subject; history pages with next_before;
    the audit lists the event's changes newest first across its markets."""
    alice, bob = mint(sub="alice"), mint(sub="bob")
    await api.call("PUT", "/v1/markets/m1", {**BODY, "ts": 100}, token=alice)
    await api.call("PUT", "/v1/markets/m2", {**BODY, "ts": 110}, token=bob)
    await api.call("PATCH", "/v1/markets/m1", {"selections": {"h": {"price": 4.0}}, "ts": 120},
                   token=bob)
    await api.call("POST", "/v1/events/e1/bet-stop", {"ts": 130}, token=alice)

    st, hist, _ = await api.call("GET", "/v1/markets/m1/history")
    assert st == 200, hist
    assert [(e["version"], e["ts"], e["writer"]) for e in hist["entries"]] == [
        (3, 130, "desk:alice"), (2, 120, "desk:bob"), (1, 100, "desk:alice")]
    assert hist["entries"][0]["changes"] == {"status": "suspended"}
    assert hist["entries"][1]["changes"] == {"sel": {"h": {"price": 4.0}}}
    assert hist["entries"][2]["op"] == "created"
    assert "next_before" not in hist

    st, page, _ = await api.call("GET", "/v1/markets/m1/history?limit=2")
    assert [e["version"] for e in page["entries"]] == [3, 2]
    assert page["next_before"] == 2
    st, rest, _ = await api.call("GET", "/v1/markets/m1/history?limit=2&before=2")
    assert [e["version"] for e in rest["entries"]] == [1]

    st, audit, _ = await api.call("GET", "/v1/events/e1/audit?limit=3")
    assert st == 200, audit
    assert [(e["market"], e["version"], e["writer"]) for e in audit["entries"]] == [
        ("m2", 2, "desk:alice"), ("m1", 3, "desk:alice"), ("m1", 2, "desk:bob")]


async def test_history_requests(api: Api) -> None:
    """Unknown markets are 404; bad limits, befores and parameters are 400; reading needs
    odds:read."""
    await api.call("PUT", "/v1/markets/m1", BODY)
    for path, status in [("/v1/markets/zz/history", 404),
                         ("/v1/markets/m1/history?limit=0", 400),
                         ("/v1/markets/m1/history?limit=100000", 400),
                         ("/v1/markets/m1/history?before=0", 400),
                         ("/v1/markets/m1/history?x=1", 400),
                         ("/v1/events/e1/audit?before=2", 400),
                         ("/v1/events/nothing/audit", 200)]:
        st, body, _ = await api.call("GET", path)
        assert st == status, (path, body)
    st, _, _ = await api.call("GET", "/v1/markets/m1/history", token=mint("bets:validate"))
    assert st == 403
