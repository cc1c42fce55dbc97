"""The pure risk signals: stale times from a history, slip counts and the score."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from oddsfeed.core.betslip import REASONS
from oddsfeed.core.risk import (
    FIELDS,
    PRIOR_LEGS,
    STALE_BUCKETS,
    ZERO,
    DueGroup,
    HistoryEntry,
    add,
    as_map,
    beat,
    beat_counts,
    beats_of,
    count_accepted,
    count_slip,
    count_stale,
    first_adverse_ms,
    score,
    slip_counts,
    stale_bucket,
    stale_since_ms,
)

HISTORY = [
    HistoryEntry(1, 1_000, {"h": 25000, "a": 30000}, False),
    HistoryEntry(2, 2_000, {"a": 31000}, False),
    HistoryEntry(3, 3_000, {"h": 24000}, False),
    HistoryEntry(4, 4_000, {}, True),
    HistoryEntry(5, 5_000, {"h": 25000}, True),
    HistoryEntry(6, 6_000, {"h": 26000}, False),
]


def test_price_changed_with_version_is_the_first_other_price_after_it() -> None:
    """A leg at version 1 for h@25000 went stale when version 3 set h to 24000."""
    after = [e for e in HISTORY if e.version > 1]
    assert stale_since_ms(after, selection="h", price=25000, version=1,
                          reason="price_changed") == 3_000


def test_market_changed_is_the_version_after_the_leg() -> None:
    """Any non-price reason with a version went stale at the next version's time."""
    assert stale_since_ms(HISTORY, selection="h", price=25000, version=3,
                          reason="market_changed") == 4_000


def test_price_changed_without_version_is_when_the_price_was_last_replaced() -> None:
    """Without a version, h@25000 (current again at v5) went stale when v6 replaced it."""
    assert stale_since_ms(HISTORY, selection="h", price=25000, version=None,
                          reason="price_changed") == 6_000
    assert stale_since_ms(HISTORY, selection="h", price=24000, version=None,
                          reason="price_changed") == 5_000


def test_unknown_when_the_history_does_not_reach_back() -> None:
    """A price the covered history never showed, or a version past its end, is None."""
    assert stale_since_ms(HISTORY, selection="h", price=99000, version=None,
                          reason="price_changed") is None
    assert stale_since_ms(HISTORY, selection="h", price=26000, version=6,
                          reason="market_changed") is None
    assert stale_since_ms(HISTORY, selection="h", price=1, version=1,
                          reason="unknown_market") is None


def test_suspension_without_version_is_the_newest_status_change() -> None:
    """A leg refused on a suspended market without a version went stale at the suspension."""
    assert stale_since_ms(HISTORY, selection="h", price=25000, version=None,
                          reason="market_suspended") == 5_000


def test_slip_counts_by_reason_and_bucket() -> None:
    """A slip's counts name every leg once: accepted, or rejected by reason and bucket."""
    legs = [{"ok": True}, {"ok": False, "reason": "price_changed"},
            {"ok": False, "reason": "unknown_market"},
            {"ok": False, "reason": "market_suspended"}]
    c = as_map(slip_counts(legs, [None, 120, None, None]))
    assert (c["slips"], c["legs"], c["accepted"]) == (1, 4, 1)
    assert (c["rejected_price_changed"], c["rejected_unknown_market"]) == (1, 1)
    assert (c["stale_lt250ms"], c["stale_unknown"]) == (1, 1)
    assert sum(c[f"stale_{b}"] for b in STALE_BUCKETS) == 2


def test_buckets_edges() -> None:
    """Bucket bounds are exclusive upper bounds."""
    assert [stale_bucket(x) for x in (0, 249, 250, 999, 1000, 29999, 30000, None)] == [
        "lt250ms", "lt250ms", "lt1s", "lt1s", "lt5s", "lt30s", "ge30s", "unknown"]


# An account's counts as built from slips: each leg accepted (maybe beat) or rejected with
# a stale bucket, so every invariant the recorder keeps holds.
leg_kind = st.sampled_from(["ok", "beat", *STALE_BUCKETS, "unknown_market"])


def _counts(kinds: list[str]) -> tuple[int, ...]:
    c = dict.fromkeys(FIELDS, 0)
    c["slips"] = 1 if kinds else 0
    c["legs"] = len(kinds)
    for k in kinds:
        if k in ("ok", "beat"):
            c["accepted"] += 1
            c["beat"] += k == "beat"
        elif k == "unknown_market":
            c["rejected_unknown_market"] += 1
        else:
            c["rejected_price_changed"] += 1
            c[f"stale_{k}"] += 1
    return tuple(c[f] for f in FIELDS)


@given(st.lists(leg_kind, max_size=60))
def test_score_bounded(kinds: list[str]) -> None:
    """The score is within [0, 100) for any consistent counts."""
    assert 0 <= score(_counts(kinds)) < 100


@given(st.lists(leg_kind, max_size=40), st.data())
def test_score_monotone_in_bad_signals(kinds: list[str], data: st.DataObject) -> None:
    """Turning a clean leg into a stale rejection or a beat, or a rejection into a fresher
    one, never lowers the score."""
    if not kinds:
        return
    i = data.draw(st.integers(0, len(kinds) - 1))
    before = score(_counts(kinds))
    worse = list(kinds)
    if kinds[i] in ("ok", "unknown_market"):
        worse[i] = data.draw(st.sampled_from(["beat", *STALE_BUCKETS]))
    elif kinds[i] in STALE_BUCKETS:
        worse[i] = STALE_BUCKETS[data.draw(st.integers(0, STALE_BUCKETS.index(kinds[i])))] \
            if kinds[i] != "unknown" else "lt250ms"
    assert score(_counts(worse)) >= before


@given(st.lists(leg_kind, max_size=40))
def test_clean_legs_never_raise_the_score(kinds: list[str]) -> None:
    """More accepted legs (no beat) dilute the score, never raise it."""
    assert score(_counts([*kinds, "ok"])) <= score(_counts(kinds))


def test_small_samples_are_shrunk() -> None:
    """One fresh rejection alone is far from 100: the prior legs shrink it."""
    assert score(_counts(["lt250ms"])) == round(100 / (1 + PRIOR_LEGS), 2)


@given(st.lists(st.integers(0, 1000), min_size=len(FIELDS), max_size=len(FIELDS)),
       st.lists(st.integers(0, 1000), min_size=len(FIELDS), max_size=len(FIELDS)))
def test_add_is_elementwise(a: list[int], b: list[int]) -> None:
    """add sums field by field."""
    assert as_map(add(a, b)) == {f: x + y for f, x, y in zip(FIELDS, a, b, strict=True)}


def test_beat_is_a_halt_or_a_shorter_price_inside_the_window() -> None:
    """A suspension, a halted selection or a shorter price at or before the window's end is
    a beat; a longer price, another selection's move or anything after the end is not."""
    after = [HistoryEntry(2, 2_000, {"h": 26000}, False),
             HistoryEntry(3, 3_000, {"a": 20000}, False),
             HistoryEntry(4, 4_000, {"h": 24000}, False),
             HistoryEntry(5, 5_000, {}, True, halted=True)]
    assert not beat(after, selection="h", price=25000, until_ms=3_999)
    assert beat(after, selection="h", price=25000, until_ms=4_000)
    assert not beat(after, selection="h", price=23000, until_ms=4_999)
    assert beat(after, selection="h", price=23000, until_ms=5_000)
    assert beat([HistoryEntry(2, 2_000, {}, True, halted_selections=frozenset({"h"}))],
                selection="h", price=25000, until_ms=2_000)
    assert not beat([], selection="h", price=25000, until_ms=10**12)
    assert as_map(beat_counts())["beat"] == 1
    assert sum(beat_counts()) == 1


def test_first_adverse_is_the_first_halt_or_shorter_price() -> None:
    """The time of the first entry that halted the market or the selection or shortened the
    leg's price; None when the book never turned against it."""
    after = [HistoryEntry(2, 2_000, {"h": 26000}, False),
             HistoryEntry(3, 3_000, {"h": 24000}, False),
             HistoryEntry(4, 4_000, {}, True, halted=True)]
    assert first_adverse_ms(after, selection="h", price=25000) == 3_000
    assert first_adverse_ms(after, selection="h", price=24000) == 4_000
    assert first_adverse_ms(after[:2], selection="a", price=25000) is None


verdict = st.one_of(st.just({"ok": True}),
                    st.builds(lambda r: {"ok": False, "reason": r},
                              st.sampled_from([*REASONS, "other", None])))
stale_value = st.one_of(st.none(), st.integers(0, 100_000))


@given(st.lists(st.tuples(st.lists(st.tuples(verdict, stale_value), max_size=6)),
                max_size=20))
def test_a_batch_summed_in_place_equals_the_sum_of_its_slips(slips: list[tuple[Any, ...]]
                                                              ) -> None:
    """count_accepted for an all-accepted slip, else count_slip then count_stale for the
    legs it names, over a whole batch into one vector, adds exactly what slip_counts adds
    slip by slip."""
    total = list(ZERO)
    expected: tuple[int, ...] = ZERO
    for (legs,) in slips:
        verdicts = [v for v, _ in legs]
        stale = [late if not v.get("ok") else None for v, late in legs]
        if all(v.get("ok") for v in verdicts):
            count_accepted(total, len(verdicts))
        else:
            for i in count_slip(total, verdicts):
                count_stale(total, stale[i])
        expected = add(expected, slip_counts(verdicts, stale))
    assert tuple(total) == expected


@given(st.lists(st.integers(0, 6), max_size=20))
def test_accepted_slips_added_as_one_run_equal_them_added_one_by_one(legs: list[int]
                                                                     ) -> None:
    """count_accepted of a run of all-accepted slips (their slips and legs summed) adds
    exactly what count_accepted adds slip by slip."""
    one_by_one, run = list(ZERO), list(ZERO)
    for n in legs:
        count_accepted(one_by_one, n)
    count_accepted(run, sum(legs), len(legs))
    assert run == one_by_one


@given(st.lists(st.tuples(st.sampled_from(["x", "y"]), st.integers(0, 20_000)), min_size=1,
                max_size=30),
       st.lists(st.tuples(st.integers(0, 20_000), st.integers(23000, 27000), st.booleans()),
                max_size=4))
def test_a_groups_beats_are_the_legs_beat_judges_a_beat(
        legs: list[tuple[str, int]], moves: list[tuple[int, int, bool]]) -> None:
    """beats_of names exactly the legs (account, acceptance time) for which beat() holds
    with the window's end at acceptance + window, each as often as it was queued."""
    history = [HistoryEntry(2 + i, at, {"h": price}, halt, halted=halt)
               for i, (at, price, halt) in enumerate(sorted(moves))]
    by_sub: dict[str, list[int]] = {}
    for sub, at in legs:
        by_sub.setdefault(sub, []).append(at)
    group = DueGroup("m1", "h", 25000, 1, 5_000, list(by_sub.items()))
    expected = [(sub, at) for sub, ats in by_sub.items() for at in ats
                if beat(history, selection="h", price=25000, until_ms=at + 5_000)]
    assert beats_of(group, history) == expected
    assert group.size() == len(legs)
    assert group.due_ms() == max(at for _, at in legs) + 5_000
