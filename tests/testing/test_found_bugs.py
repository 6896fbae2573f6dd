"""Real bugs the properties found, each as the minimal request that showed it.

Those not marked OPEN were fixed in commit 9c42ad2; their tests stay as regressions, and
``REGRESSIONS`` feeds the same requests to the real-pack property tests as explicit
examples, so every run tries them whatever examples hypothesis draws. A new bug found by
a property goes here the same way: its minimal request, a reason naming the code, and
``xfail(strict=True)`` until it is fixed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from cds.testing import builders as b
from cds.testing import invariants as inv
from cds.testing import strategies as s
from cds.testing.evaluation import run_request
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


def two_vitals_at_the_same_instant() -> dict[str, Any]:
    """Adult, 10 mg TID draft; two respiratory rates taken at the same instant, 8 and 11."""
    d = b.medication_request(
        rid="rx-new", status="draft", product="tab10", dosages=[b.dosage(dose=10, frequency=3)]
    )
    at = NOW - timedelta(hours=2)
    rr = [
        {**b.vital("resp_rate", 8, at), "id": "rr-a"},
        {**b.vital("resp_rate", 11, at), "id": "rr-b"},
    ]
    return request_for([d], vitals=rr)


def a_stop_whose_draft_has_another_dose() -> dict[str, Any]:
    """Chronic 20 mg QID for 200 days; the stop is signed on a draft reading 5 mg QID."""
    active = b.medication_request(
        rid="rx-current",
        status="active",
        product="tab20",
        dosages=[b.dosage(dose=20, frequency=4)],
        authored=NOW - timedelta(days=200),
    )
    stop = b.medication_request(
        rid="rx-stop",
        status="stopped",
        product="tab5",
        dosages=[b.dosage(dose=5, frequency=4)],
        prior="rx-current",
    )
    return request_for([stop], medications=[active])


def a_restart_after_a_hold() -> dict[str, Any]:
    """Adult; baclofen 10 mg TID put on hold 10 days ago (not a new start, no current
    regimen); the draft restarts at 30 mg TID: ceiling warning (90 > 80 mg/day) and
    titration warning (+30 mg per dose from nothing)."""
    held = b.medication_request(
        rid="rx-held",
        status="on-hold",
        product="tab10",
        dosages=[b.dosage(dose=10, frequency=3)],
        authored=NOW - timedelta(days=10),
    )
    restart = b.medication_request(
        rid="rx-new", status="draft", product="tab10", dosages=[b.dosage(dose=30, frequency=3)]
    )
    return request_for([restart], medications=[held])


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

SAME_INSTANT = (
    "cds/clinical/observations.py read_observations: series are sorted by time only, so "
    "of two results at the same instant (RR 8 and RR 11) the 'newest' is whichever came "
    "first in the prefetch: side-effect critical or warning depending on the order "
    "(found by 'order independence', deep profile)"
)
CONTINUE_DOSE = (
    "cds/hooks/pipeline.py _withdrawal_suggestions: 'Continue the current dose' re-activates "
    "the stopped draft as written (5 mg QID), not the current regimen (20 mg QID), so "
    "accepting it is still an abrupt reduction and fires withdrawal-oral-high-dose again; "
    "continue suggestions skip the re-check, so this loop reaches the EHR (found by 'safe "
    "suggestions', deep profile)"
)

RESTART_AFTER_HOLD = (
    "Fixed: cds/suggestions.py dose_plan, titration_step branch: with no current regimen "
    "(order.current_daily None: the only recent order is on hold) it adds no titration cap, "
    "although the facts measure the increase from 0 and titration-step-too-large fires; "
    "the merged fix (20 mg TID, from the ceiling rule) fires that rule again, so the "
    "re-check drops it and both cards lose their fix (found by 'safe suggestions', deep)"
)


def uneven_doses_cut() -> dict[str, Any]:
    """Adult; chronic baclofen on 5 mg tablets written as two instructions, 2.5 mg TID and
    15 mg TID (52.5 mg/day in six doses), replaced by 2.5 mg TID."""
    active = b.medication_request(
        rid="rx-active-1",
        product="tab5",
        dosages=[b.dosage(dose=2.5, frequency=3), b.dosage(dose=15, frequency=3)],
        authored=NOW - timedelta(days=14),
    )
    draft = b.medication_request(
        rid="rx-draft-1",
        status="draft",
        product="tab5",
        dosages=[b.dosage(dose=2.5, frequency=3)],
        prior="rx-active-1",
    )
    return request_for([draft], medications=[active])


UNEVEN_DOSES = (
    "Fixed (the taper starts at the even split as dispensed): doses that differ between "
    "administrations are tapered from their even split (8.75 mg x 6), which was rounded "
    "down to the taper's 5 mg step: the plan began at 5 mg x 5 (25 of 52.5 mg/day, -52%), "
    "so accepting it fired withdrawal-oral-high-dose again. It now starts at 7.5 mg x 6 "
    "(half tablets), and a step never goes below the floor (7.5 -> 5, not 2.5) "
    "(found by 'safe suggestions', deep profile, this session)"
)


def a_draft_beside_two_active_orders() -> dict[str, Any]:
    """Adult; two active baclofen orders of 2.5 mg TID and a new 5 mg BID draft."""
    actives = [
        b.medication_request(
            rid=f"rx-active-{n}",
            product="tab5",
            dosages=[b.dosage(dose=2.5, frequency=3)],
            authored=NOW - timedelta(days=1),
        )
        for n in (1, 2)
    ]
    draft = b.medication_request(
        rid="rx-draft-1", status="draft", product="tab5", dosages=[b.dosage(dose=5, frequency=2)]
    )
    return request_for([draft], medications=actives)


DUPLICATES_IN_LIST_ORDER = (
    "Fixed (duplicates named in id order): the duplicate-therapy card and its 'Remove this "
    "order' fix named the other orders in the order the EHR listed them, so the same chart "
    "sent in another order gave another label (found by 'order independence', deep "
    "profile, this session)"
)

# invariant name -> [(what went wrong, minimal request, extra keyword arguments)]
REGRESSIONS: dict[str, list[tuple[str, dict[str, Any], dict[str, Any]]]] = {
    "unit invariance": [(CODED_START, coded_schedule_with_a_start(), {})],
    "safe suggestions": [
        (PRN_MAXIMUM, prn_with_a_maximum(), {}),
        (NEW_START_SHARE, two_new_oral_drafts(), {}),
        (CONTINUE_DOSE, a_stop_whose_draft_has_another_dose(), {}),
        (RESTART_AFTER_HOLD, a_restart_after_a_hold(), {}),
        (UNEVEN_DOSES, uneven_doses_cut(), {}),
    ],
    "order independence": [
        (SAME_INSTANT, two_vitals_at_the_same_instant(), {"seed": 1}),
        (DUPLICATES_IN_LIST_ORDER, a_draft_beside_two_active_orders(), {"seed": 1}),
    ],
}


def test_a_coded_schedule_and_its_repeat_give_the_same_suggestion(real_pack) -> None:
    inv.check_unit_invariance(coded_schedule_with_a_start(), real_pack, NOW)


def test_a_dose_fix_on_a_prn_order_does_not_keep_the_old_maximum(real_pack) -> None:
    inv.check_suggestions_safe(prn_with_a_maximum(), real_pack, NOW)


def test_a_taper_of_uneven_doses_keeps_half_on_day_one(real_pack) -> None:
    inv.check_suggestions_safe(uneven_doses_cut(), real_pack, NOW)
    out = run_request(uneven_doses_cut(), real_pack, NOW)
    (taper,) = [s for c in out.cards for s in c.suggestions if s.kind == "taper"]
    doses = [
        (d["doseAndRate"][0]["doseQuantity"]["value"], d["timing"]["repeat"]["frequency"])
        for d in taper.actions[0]["resource"]["dosageInstruction"]
    ]
    assert doses[:3] == [(7.5, 6), (5, 6), (5, 5)]


def test_a_new_start_fix_counts_the_other_drafts(real_pack) -> None:
    inv.check_suggestions_safe(two_new_oral_drafts(), real_pack, NOW)


def test_results_at_the_same_instant_do_not_depend_on_their_order(real_pack) -> None:
    inv.check_order_independence(two_vitals_at_the_same_instant(), real_pack, NOW, seed=1)


def test_continue_the_current_dose_continues_the_current_dose(real_pack) -> None:
    inv.check_suggestions_safe(a_stop_whose_draft_has_another_dose(), real_pack, NOW)


def test_a_restart_after_a_hold_gets_a_safe_fix(real_pack) -> None:
    inv.check_suggestions_safe(a_restart_after_a_hold(), real_pack, NOW)


# ---- the gabapentin pack (found once the kit generated the pack's own orders) -------------


def gabapentin_opioid_and_pregabalin_at_crcl_47() -> dict[str, Any]:
    """55 M 80 kg, creatinine 2.0 mg/dL (Cockcroft-Gault 47 mL/min); a new gabapentin
    300 mg TID draft beside an oxycodone draft and an active pregabalin: two interaction
    cards on the gabapentin order (opioid, gabapentinoid)."""
    draft = b.medication_request(
        rid="rx-new", status="draft", product="cap300", dosages=[b.dosage(dose=300, frequency=3)]
    )
    opioid = b.medication_request(
        rid="rx-oxy", status="draft", drug="oxycodone", dosages=[b.dosage(dose=5, frequency=3)]
    )
    pregabalin = b.medication_request(
        rid="rx-preg",
        drug="pregabalin",
        dosages=[b.dosage(dose=75, frequency=2)],
        authored=NOW - timedelta(days=60),
    )
    return request_for(
        [draft, opioid],
        medications=[pregabalin],
        labs=[b.creatinine(2.0, "mg/dL", NOW - timedelta(days=2), oid="cr-1")],
    )


def gabapentin_stepped_new_start_at_egfr_30() -> dict[str, Any]:
    """23 F, no weight, creatinine 2.3 mg/dL an hour ago (eGFR CKD-EPI 2021 29.9); a new
    gabapentin start on 100 mg capsules in two sequenced steps: 250 mg QID for 3 days
    (1000 mg/day), then 150 mg QID."""
    steps = [
        b.dosage(dose=250, frequency=4, sequence=1, start=NOW, end=NOW + timedelta(days=2)),
        b.dosage(dose=150, frequency=4, sequence=2, start=NOW + timedelta(days=3)),
    ]
    draft = b.medication_request(rid="rx-new", status="draft", product="cap100", dosages=steps)
    return b.hook_request(
        hook="order-sign",
        now=NOW,
        patient_res=b.patient(now=NOW, age=23, sex="female"),
        drafts=[draft],
        labs=[b.creatinine(2.3, "mg/dL", NOW - timedelta(hours=1), oid="cr-1")],
        hook_instance=s.HOOK_INSTANCE,
    )


REASON_IN_TWO_CARDS = (
    "Fixed (reasons are order facts joining the most severe card): "
    "rules/gabapentin/a8-interactions.yaml interaction-reason-renal (fact: interaction, "
    "group: drug_class) fires once per interacting class, so the gabapentin order gets it in "
    "the opioid card and in the gabapentinoid card: the same rule on one order in two cards, "
    "against the card contract ('never two cards for the same rule and order'). Either the "
    "reason joins one card per order (the most severe), or DESIGN's contract grants "
    "interaction-class reasons an exception (found by 'valid cards', ci profile)"
)
STEPPED_START_ABOVE_RENAL_LIMIT = (
    "Fixed (the labelled start is capped by daily_limit): the merged fix of "
    "renal-above-limit-us.low (UK: renal-above-limit-uk.severe) and "
    "new-start-above-900 on a new start written in sequenced steps is 'Start as labelled: "
    "300 mg once daily (day 1), 300 mg twice daily (day 2), then 300 mg three times daily "
    "from day 3' (900 mg/day), above the band's 700 mg/day: accepting it fires the renal "
    "rule again, so the re-check drops it and both cards lose their fix. The same start "
    "written as one instruction (250 mg QID) is capped at 300 mg BID (found by 'safe "
    "suggestions', 200 examples)"
)


def gabapentin_ir_and_once_daily_new_start() -> dict[str, Any]:
    """55 M 80 kg, normal renal function; a new start on two drafts: immediate-release
    100 mg capsules 100 mg BID (200 mg/day) and once-daily 300 mg tablets 300 mg TID."""
    ir = b.medication_request(
        rid="rx-ir", status="draft", product="cap100", dosages=[b.dosage(dose=100, frequency=2)]
    )
    once_daily = b.medication_request(
        rid="rx-od",
        status="draft",
        product="tab300-once_daily",
        dosages=[b.dosage(dose=300, frequency=3)],
    )
    return request_for([ir, once_daily])


ONCE_DAILY_START_IGNORES_IR = (
    "Fixed (no labelled start when other orders share the regimen): "
    "the once-daily card (once-daily-above-schedule, with once-daily-more-than-once "
    "and duplicate-scheduled-orders) of a new start on two drafts, IR 100 mg BID and "
    "once-daily 300 mg TID, offers 'Start as labelled: 300 mg once daily (day 1), 600 mg "
    "once daily (day 2), then 900 mg once daily from day 3': the once-daily schedule for the "
    "once-daily order alone, ignoring the IR draft's 200 mg/day that the rule adds in "
    "(500 mg on day 1 > 300), so accepting it fires once-daily-above-schedule again; in "
    "production the re-check drops it and the card has no start fix. As NEW_START_SHARE was "
    "for the dose plan: the schedule fix must leave room for the other drafts' share "
    "(found by 'safe suggestions', 400 examples; US and UK)"
)


def gabapentin_two_orders_cut_together() -> dict[str, Any]:
    """55 M 80 kg, normal renal function; two chronic gabapentin orders on 300 mg capsules,
    600 mg TID and 300 mg TID (2700 mg/day), both replaced in one signing by 300 mg once
    daily: the regimen loses 78% at once."""

    def pair(n: int, dose: float) -> tuple[dict[str, Any], dict[str, Any]]:
        active = b.medication_request(
            rid=f"rx-active-{n}",
            product="cap300",
            dosages=[b.dosage(dose=dose, frequency=3)],
            authored=NOW - timedelta(days=60),
        )
        draft = b.medication_request(
            rid=f"rx-draft-{n}",
            status="draft",
            product="cap300",
            dosages=[b.dosage(dose=300, frequency=1)],
            prior=f"rx-active-{n}",
        )
        return active, draft

    (a1, d1), (a2, d2) = pair(1, 600), pair(2, 300)
    return request_for([d1, d2], medications=[a1, a2])


def gabapentin_cut_beside_a_stop_for_an_adverse_reaction() -> dict[str, Any]:
    """55 M 80 kg; two chronic gabapentin orders on 100 mg capsules, 200 mg TID each; one
    is halved to 100 mg TID, the other stopped for an adverse reaction in the same signing
    (the regimen: 1200 to 300 mg/day)."""
    actives = [
        b.medication_request(
            rid=f"rx-active-{n}",
            product="cap100",
            dosages=[b.dosage(dose=200, frequency=3)],
            authored=NOW - timedelta(days=60),
        )
        for n in (1, 2)
    ]
    halved = b.medication_request(
        rid="rx-draft-1",
        status="draft",
        product="cap100",
        dosages=[b.dosage(dose=100, frequency=3)],
        prior="rx-active-1",
    )
    stopped = b.medication_request(
        rid="rx-active-2",
        status="stopped",
        product="cap100",
        dosages=[b.dosage(dose=200, frequency=3)],
        status_reason=(b.SNOMED, "281647001", "Adverse reaction"),
    )
    return request_for([halved, stopped], medications=actives)


CUT_BESIDE_ADVERSE_STOP = (
    "Fixed (no taper of one order while another's cut is exempt): one draft halves its "
    "order while another stops its order for an adverse reaction (no withdrawal rule on "
    "that one: the stop is meant to be abrupt); the halved order's withdrawal card offered "
    "a taper of that order alone, after which the exempt stop still removed more than half "
    "of the regimen and withdrawal-high-dose fired again. Such a card now has no taper (the "
    "card still warns: the patient loses more than half the regimen) "
    "(found by 'safe suggestions', deep profile, this session)"
)


def gabapentin_switch_to_once_daily_three_times_a_day() -> dict[str, Any]:
    """55 M 80 kg; chronic immediate-release 100 mg BID (200 mg/day) stopped, and a new
    once-daily 300 mg tablet order written 400 mg TID (1200 mg/day)."""
    active = b.medication_request(
        rid="rx-ir",
        product="cap100",
        dosages=[b.dosage(dose=100, frequency=2)],
        authored=NOW - timedelta(days=60),
    )
    stop = b.medication_request(
        rid="rx-ir", status="stopped", product="cap100", dosages=[b.dosage(dose=100, frequency=2)]
    )
    once_daily = b.medication_request(
        rid="rx-od",
        status="draft",
        product="tab300-once_daily",
        dosages=[b.dosage(dose=400, frequency=3)],
    )
    return request_for([stop, once_daily], medications=[active])


STEP_AT_THE_FIX_COUNT = (
    "Fixed (a per-dose step is judged at the fix's own count): the dose fix of a once-daily "
    "order written TID (schedule: once daily) with step-above-300-per-dose fired capped the "
    "rise at 300 mg x the ordered three doses (+900) and offered 900 mg once daily: once "
    "daily, that is +700 mg in one dose, so the step rule fired again. The step cap now uses "
    "the administrations of the fix itself (300 mg once daily) "
    "(found by 'safe suggestions', deep profile, this session)"
)


def gabapentin_two_stops_one_selected() -> dict[str, Any]:
    """55 M 80 kg; two chronic gabapentin orders (100 mg TID and 200 mg TID) both being
    stopped on order-select, with only the first stop selected so far."""
    actives = [
        b.medication_request(
            rid=f"rx-{n}",
            product="cap100",
            dosages=[b.dosage(dose=dose, frequency=3)],
            authored=NOW - timedelta(days=60),
        )
        for n, dose in ((1, 100), (2, 200))
    ]
    stops = [
        b.medication_request(
            rid=a["id"], status="stopped", product="cap100", dosages=a["dosageInstruction"]
        )
        for a in actives
    ]
    return request_for(
        stops, medications=actives, hook="order-select", selections=["MedicationRequest/rx-1"]
    )


UNSELECTED_STOP = (
    "Fixed (a draft cutting its dose that is not among the checked orders blocks the "
    "taper): on order-select with two stops of a split regimen and only one selected, the "
    "selected stop's withdrawal card offered a taper of that order alone; the unselected "
    "stop still removed the rest, so withdrawal-high-dose fired again. The planner now "
    "reads the regimen's cutting drafts from the facts (co_cut_ids), selected or not "
    "(found by 'safe suggestions', deep profile, UK, this session)"
)


def gabapentin_copd_and_a_new_opioid() -> dict[str, Any]:
    """55 M 80 kg with COPD; a new gabapentin 100 mg TID draft (the kit then adds an
    opioid draft)."""
    draft = b.medication_request(
        rid="rx-new", status="draft", product="cap100", dosages=[b.dosage(dose=100, frequency=3)]
    )
    return request_for([draft], conditions=[b.condition("13645005")])


REASON_MOVES_INTO_INTERACTION = (
    "Not a bug (the check was too strict): with chronic lung disease and no CNS depressant, "
    "a new gabapentin order gets the A7 side-effect info; adding an opioid replaces it with "
    "the interaction warning, which carries chronic lung disease as a reason. The check "
    "now accepts a card carried by an interaction card on the same order at least as "
    "severe (found by 'monotonic in interactions', deep profile, UK, this session)"
)

TWO_ORDERS_CUT_TOGETHER = (
    "Fixed (a taper tapers every order cut in the same signing): two drafts each cut "
    "their own chronic order (the regimen: 2550 + 2400 mg/day to 200 mg/day); the "
    "withdrawal-high-dose card of each offered a taper of its own order alone, so after "
    "accepting it the other draft's abrupt cut still removed more than half of the regimen "
    "on day 1 and withdrawal-high-dose fired again on the same order. The taper now carries "
    "one update per cut order (and no taper when one of them cannot be tapered); the "
    "continue-the-dose fix keeps every stopped order too "
    "(found by 'safe suggestions', CI run of stop 18)"
)

# invariant name -> [(what went wrong, minimal request, extra keyword arguments)]
GABAPENTIN_REGRESSIONS: dict[str, list[tuple[str, dict[str, Any], dict[str, Any]]]] = {
    "valid cards": [(REASON_IN_TWO_CARDS, gabapentin_opioid_and_pregabalin_at_crcl_47(), {})],
    "safe suggestions": [
        (STEPPED_START_ABOVE_RENAL_LIMIT, gabapentin_stepped_new_start_at_egfr_30(), {}),
        (ONCE_DAILY_START_IGNORES_IR, gabapentin_ir_and_once_daily_new_start(), {}),
        (TWO_ORDERS_CUT_TOGETHER, gabapentin_two_orders_cut_together(), {}),
        (CUT_BESIDE_ADVERSE_STOP, gabapentin_cut_beside_a_stop_for_an_adverse_reaction(), {}),
        (STEP_AT_THE_FIX_COUNT, gabapentin_switch_to_once_daily_three_times_a_day(), {}),
        (UNSELECTED_STOP, gabapentin_two_stops_one_selected(), {}),
    ],
    "monotonic in interactions": [
        (REASON_MOVES_INTO_INTERACTION, gabapentin_copd_and_a_new_opioid(), {}),
    ],
}


def test_an_interaction_reason_is_in_one_card_per_order(gabapentin_pack) -> None:
    inv.check_valid_cards(gabapentin_opioid_and_pregabalin_at_crcl_47(), gabapentin_pack, NOW)


def test_a_stepped_new_start_gets_a_fix_within_the_renal_limit(gabapentin_pack) -> None:
    inv.check_suggestions_safe(gabapentin_stepped_new_start_at_egfr_30(), gabapentin_pack, NOW)


def test_a_once_daily_start_leaves_room_for_the_other_drafts(gabapentin_pack) -> None:
    inv.check_suggestions_safe(gabapentin_ir_and_once_daily_new_start(), gabapentin_pack, NOW)


def test_a_taper_covers_every_order_cut_in_the_signing(gabapentin_pack) -> None:
    request = gabapentin_two_orders_cut_together()
    inv.check_suggestions_safe(request, gabapentin_pack, NOW)
    inv.check_no_alert_loops(request, gabapentin_pack, NOW)
    out = run_request(request, gabapentin_pack, NOW)
    tapers = [
        s
        for c in out.cards
        for s in c.suggestions
        if c.category == "withdrawal-risk" and s.kind == "taper"
    ]
    assert len(tapers) == 2  # one card per order, each tapering both
    for taper in tapers:
        assert sorted(a["resource"]["id"] for a in taper.actions) == ["rx-draft-1", "rx-draft-2"]


def test_no_taper_of_one_order_beside_a_stop_for_an_adverse_reaction(gabapentin_pack) -> None:
    request = gabapentin_cut_beside_a_stop_for_an_adverse_reaction()
    inv.check_suggestions_safe(request, gabapentin_pack, NOW)
    out = run_request(request, gabapentin_pack, NOW)
    cards = [(c.order_id, c.category, c.card["indicator"]) for c in out.cards]
    # the halved order warns without a fix (and says why); the stop is the exempt one
    assert cards == [
        ("rx-draft-1", "withdrawal-risk", "warning"),
        ("rx-active-2", "withdrawal-risk", "info"),
    ]
    assert out.cards[0].suggestions == []
    assert "No taper is offered" in out.cards[0].card["detail"]


def test_a_step_limit_counts_the_doses_of_the_fix(gabapentin_pack) -> None:
    request = gabapentin_switch_to_once_daily_three_times_a_day()
    inv.check_suggestions_safe(request, gabapentin_pack, NOW)
    out = run_request(request, gabapentin_pack, NOW)
    labels = {s.label for c in out.cards if c.order_id == "rx-od" for s in c.suggestions}
    assert labels == {"Change to 300 mg once daily"}


def test_no_taper_while_an_unselected_draft_still_stops_the_rest(gabapentin_pack) -> None:
    request = gabapentin_two_stops_one_selected()
    inv.check_suggestions_safe(request, gabapentin_pack, NOW)
    out = run_request(request, gabapentin_pack, NOW)
    (card,) = [c for c in out.cards if c.category == "withdrawal-risk"]
    assert card.order_id == "rx-1" and card.card["indicator"] == "warning"
    assert not [s for s in card.suggestions if s.kind == "taper"]


def test_a_reason_carried_by_the_interaction_card_is_not_lost(gabapentin_pack) -> None:
    request = gabapentin_copd_and_a_new_opioid()
    inv.check_interaction_monotonicity(request, gabapentin_pack, NOW, drug="oxycodone")


def test_duplicates_are_named_whatever_the_list_order(real_pack) -> None:
    for seed in range(4):
        inv.check_order_independence(a_draft_beside_two_active_orders(), real_pack, NOW, seed=seed)
