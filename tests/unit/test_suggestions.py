"""Suggestion arithmetic: the one corrected dose, and tapers (A3-A6 of the policy)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from cds.suggestions import Dispenser, DispensingPolicy, describe_taper, taper_steps

START = datetime(2026, 11, 20, tzinfo=UTC)


def test_taper_from_20_qid_to_stop_is_the_policy_example() -> None:
    steps = taper_steps(
        per_admin=20, admins=4, target_daily=0, step=5, floor=5, interval_days=3, start=START
    )
    assert [(s.per_admin, s.admin_per_day) for s in steps] == [
        (15, 4),
        (10, 4),
        (5, 4),
        (5, 3),
        (5, 2),
        (5, 1),
    ]
    assert steps[0].start == START and steps[0].end == START + timedelta(days=2)
    assert steps[-1].end == START + timedelta(days=17)  # stop on day 19
    assert describe_taper(steps, None).endswith("stop on day 19")


def test_taper_to_a_target_stops_at_the_target() -> None:
    from cds.suggestions import DosePlan

    steps = taper_steps(
        per_admin=20, admins=4, target_daily=20, step=5, floor=5, interval_days=3, start=START
    )
    assert [(s.per_admin, s.admin_per_day) for s in steps[:-1]] == [(15, 4), (10, 4)]
    assert steps[-1].end is None
    assert describe_taper(steps, DosePlan(5, 4)) == "Taper: "[:0] + (
        "15, 10 mg 4x/day (3 days each), then 5 mg 4x/day"
    )


@given(
    per_admin=st.sampled_from([5, 7.5, 10, 12.5, 15, 20, 25, 30]),
    admins=st.integers(1, 4),
    target_fraction=st.sampled_from([0, 0.1, 0.25, 0.4]),
)
def test_taper_steps_fall_gently_and_end_at_or_below_target(
    per_admin, admins, target_fraction
) -> None:
    prior = per_admin * admins
    target = prior * target_fraction
    steps = taper_steps(
        per_admin=per_admin,
        admins=admins,
        target_daily=target,
        step=5,
        floor=5,
        interval_days=3,
        start=START,
    )
    timed = [s for s in steps if s.end is not None]
    daily = [prior] + [s.per_admin * s.admin_per_day for s in timed]
    for before, after in zip(daily, daily[1:], strict=False):
        assert after < before  # every step lowers the dose
        assert before - after <= 5 * admins + 1e-9  # never more than 5 mg per dose at once
    for s in timed:
        assert s.per_admin > 0 and s.admin_per_day >= 1
    if target == 0 and steps:
        assert steps[-1].end is not None  # ends with a stop
    if not steps:
        assert per_admin <= 5 and admins == 1  # already the last step: stop now
    for a, b in zip(timed, timed[1:], strict=False):
        assert b.start == a.end + timedelta(days=1)


@given(x=st.floats(0, 500, allow_nan=False), step=st.sampled_from([2.5, 5.0]))
def test_round_down_is_a_multiple_not_above(x, step) -> None:
    r = Dispenser(DispensingPolicy(rounding=step), []).round_down(x)
    assert r <= x + 1e-9 and x - r < step
    assert abs(r / step - round(r / step)) < 1e-9


def test_alert_category_codesystem_is_published_and_matches_the_code() -> None:
    import json

    from cds.cards import ALERT_CATEGORY_SYSTEM, CATEGORY_DISPLAY
    from cds.engine.schema import CATEGORIES
    from tests.conftest import REPO

    cs = json.loads((REPO / "fhir" / "codesystems" / "alert-category.json").read_text())
    assert cs["url"] == ALERT_CATEGORY_SYSTEM
    assert [c["code"] for c in cs["concept"]] == list(CATEGORIES) == list(CATEGORY_DISPLAY)
