"""Real bugs the properties found, each as the minimal request that shows it.

Each test is ``xfail(strict=True)`` until the code is fixed: the suite stays green, and a
fix turns the test into an XPASS failure, so whoever fixes it removes the marker (here
and in ``KNOWN_BUGS``, which also feeds these requests to the real-pack property tests as
explicit examples).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from cds.testing import builders as b
from cds.testing import invariants as inv
from cds.testing import strategies as s
from tests.testing.test_kit import request_for

NOW = s.DEFAULT_NOW


def coded_schedule_with_a_start() -> dict[str, Any]:
    """Adult new start, 10 mg TID (timing.code) from 2026-11-22: titration warning, fix
    5 mg TID. As timing.code the fix loses the start date; as timing.repeat it keeps it."""
    d = b.dosage(dose=10, frequency=None, timing_code="TID", start=NOW + timedelta(days=2))
    order = b.medication_request(rid="rx-new", status="draft", product="tab10", dosages=[d])
    return request_for([order])


def prn_with_a_maximum() -> dict[str, Any]:
    """Adult new start, 20 mg q6h PRN, max 80 mg/day: titration warning, fix 5 mg TID."""
    d = b.dosage(dose=20, frequency=1, period=6, period_unit="h", prn=True, max_per_day=80)
    order = b.medication_request(rid="rx-new", status="draft", product="tab10", dosages=[d])
    return request_for([order])


def two_new_oral_drafts() -> dict[str, Any]:
    """Adult new start on two oral drafts, 5 mg TID and 2.5 mg BID (20 mg/day together)."""
    a = b.medication_request(
        rid="rx-a", status="draft", product="tab5", dosages=[b.dosage(dose=5, frequency=3)]
    )
    c = b.medication_request(
        rid="rx-b", status="draft", product="tab5", dosages=[b.dosage(dose=2.5, frequency=2)]
    )
    return request_for([a, c])


CODED_START = (
    "cds/suggestions.py dose_resource: a draft timed by timing.code gets its timing "
    "rewritten as timing.repeat without repeat.boundsPeriod, so the suggested dose starts "
    "now instead of on the draft's start date; the same draft written with timing.repeat "
    "keeps its start (found by 'unit invariance', deep profile)"
)
PRN_MAXIMUM = (
    "cds/suggestions.py dose_resource: the corrected order keeps the PRN maxDosePerPeriod "
    "of the original (80 mg/day), so accepting '5 mg three times daily' fires "
    "titration-new-start-above-start-dose again; in production the re-check drops the "
    "suggestion and the card has no fix (found by 'safe suggestions', deep profile)"
)
NEW_START_SHARE = (
    "cds/suggestions.py dose_plan: a new start's titration fix (start_per_admin x "
    "start_admin_per_day) ignores the other oral drafts' share of the regimen and may "
    "raise the order (2.5 mg BID -> 5 mg TID); accepting it fires "
    "titration-new-start-above-start-dose again (found by 'safe suggestions', ci profile)"
)

# invariant name -> [(reason, minimal request)]
KNOWN_BUGS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "unit invariance": [(CODED_START, coded_schedule_with_a_start())],
    "safe suggestions": [
        (PRN_MAXIMUM, prn_with_a_maximum()),
        (NEW_START_SHARE, two_new_oral_drafts()),
    ],
}


@pytest.mark.xfail(strict=True, reason=CODED_START)
def test_a_coded_schedule_and_its_repeat_give_the_same_suggestion(real_pack) -> None:
    inv.check_unit_invariance(coded_schedule_with_a_start(), real_pack, NOW)


@pytest.mark.xfail(strict=True, reason=PRN_MAXIMUM)
def test_a_dose_fix_on_a_prn_order_does_not_keep_the_old_maximum(real_pack) -> None:
    inv.check_suggestions_safe(prn_with_a_maximum(), real_pack, NOW)


@pytest.mark.xfail(strict=True, reason=NEW_START_SHARE)
def test_a_new_start_fix_counts_the_other_drafts(real_pack) -> None:
    inv.check_suggestions_safe(two_new_oral_drafts(), real_pack, NOW)


def test_the_production_re_check_keeps_these_from_looping(real_pack) -> None:
    """The pipeline's own re-check drops the unsafe fixes: no alert loop reaches an EHR."""
    for request in (prn_with_a_maximum(), two_new_oral_drafts()):
        out = inv.run_request(request, real_pack, NOW)
        assert all(not c.suggestions for c in out.cards if c.category == "titration-rate")
