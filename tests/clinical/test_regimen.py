"""Regimen after signing, titration (A4, A9) and withdrawal inputs (A6)."""

from __future__ import annotations

import pytest

from tests.clinical.builders import (
    BACLOFEN_IN,
    INTRATHECAL,
    dosage,
    facts_for,
    med_request,
    qty,
)


def active(id_, *dosages, authored="2026-05-01", **kw):
    return med_request(id_, *dosages, status="active", authored=authored, **kw)


def statement(id_, *dosages, status="active", start="2026-01-01", **kw):
    s = {
        "resourceType": "MedicationStatement",
        "id": id_,
        "status": status,
        "medicationCodeableConcept": {"text": "baclofen 10 mg tablet"},
        "subject": {"reference": "Patient/pat-1"},
        "effectivePeriod": {"start": start},
        "dosage": list(dosages) or [dosage(10, freq=3)],
    }
    s.update(kw)
    return s


def pump(id_, ug_per_day, *, status="active", authored="2025-01-10", **kw):
    d = dosage(None, route=INTRATHECAL, freq=None, rate={"rateQuantity": qty(ug_per_day, "ug/d")})
    return med_request(id_, d, status=status, med=BACLOFEN_IN, authored=authored, **kw)


def test_d2_fast_increase() -> None:
    """D2: 20 mg TID replacing 5 mg TID started 1 day ago: +45 mg/day after 1 day."""
    cur = active("cur", dosage(5, freq=3), authored="2026-11-19")
    o = facts_for([med_request("d", dosage(20, freq=3), prior="cur")], [cur]).orders[0]
    assert o.change == "increase" and o.current_daily == 15
    assert o.increase_daily == 45 and o.increase_per_admin == 15 and o.days_on_current == 1
    assert o.new_start is False and o.chronic_user is False


def test_d3_labelled_step_and_effect_time() -> None:
    cur = active("cur", dosage(20, freq=4))
    o = facts_for([med_request("d", dosage(25, freq=4), prior="cur")], [cur]).orders[0]
    assert o.increase_daily == 20 and o.increase_per_admin == 5


def test_effect_time_is_future_bounds_start() -> None:
    cur = active("cur", dosage(5, freq=3), authored="2026-11-19")
    d = dosage(10, freq=3, bounds=("2026-11-23", None))
    o = facts_for([med_request("d", d, prior="cur")], [cur]).orders[0]
    assert o.days_on_current == 4


def test_d9_step_down() -> None:
    """D9: chronic 20 mg QID -> 5 mg QID: after_to_prior 0.25."""
    cur = active("cur", dosage(20, freq=4))
    o = facts_for([med_request("d", dosage(5, freq=4), prior="cur")], [cur]).orders[0]
    assert o.change == "decrease" and o.prior_daily == 80 and o.after_daily == 20
    assert o.after_to_prior == 0.25 and o.chronic_user and o.increase_daily is None


def test_draft_adds_to_current_regimen() -> None:
    cur = active("cur", dosage(10, freq=3))
    o = facts_for([med_request("d", dosage(10, freq=1))], [cur]).orders[0]
    assert o.regimen_daily == 40 and o.current_daily == 30 and o.change == "increase"
    assert o.increase_daily == 10 and o.increase_per_admin == 2.5
    assert o.scheduled_orders == 2 and o.duplicate_ids == ["cur"]


def test_stop_with_another_order_left_is_a_decrease() -> None:
    a = active("a", dosage(10, freq=3))
    b = active("b", dosage(10, freq=1))
    stop = dict(a, status="stopped")
    o = facts_for([stop], [a, b]).orders[0]
    assert o.change == "decrease" and o.prior_daily == 40 and o.after_daily == 10


def test_stop_of_order_missing_from_prefetch_uses_draft_as_prior() -> None:
    stop = active("gone", dosage(20, freq=4))
    stop["status"] = "on-hold"
    o = facts_for([stop]).orders[0]
    assert o.change == "stop" and o.prior_daily == 80 and o.after_daily == 0
    assert o.chronic_user


@pytest.mark.parametrize("status", ["cancelled", "stopped", "on-hold"])
def test_stop_statuses(status: str) -> None:
    cur = active("cur", dosage(20, freq=3))
    o = facts_for([dict(cur, status=status)], [cur]).orders[0]
    assert o.change == "stop" and o.regimen_daily == 0


def test_completed_and_entered_in_error_are_ignored() -> None:
    old = med_request("old", dosage(20, freq=3), status="completed", authored="2026-01-01")
    err = med_request("err", dosage(20, freq=3), status="entered-in-error", authored="2026-11-19")
    o = facts_for([med_request("d", dosage(5, freq=3))], [old, err]).orders[0]
    assert o.change == "new" and o.current_daily is None and o.new_start is True


def test_recent_history_means_not_a_new_start() -> None:
    recent = med_request(
        "old",
        dosage(20, freq=3),
        status="stopped",
        authored="2026-10-01",
        dispenseRequest={"validityPeriod": {"end": "2026-11-10"}},
    )
    o = facts_for([med_request("d", dosage(20, freq=3))], [recent]).orders[0]
    assert o.new_start is False and o.change == "new"
    assert o.increase_daily == 60  # a restart after a gap is checked as an increase from 0
    assert o.days_on_current is None


def test_new_start_has_no_increase() -> None:
    o = facts_for([med_request("d", dosage(7.5, freq=2))]).orders[0]
    assert o.new_start and o.increase_daily is None and o.regimen_first_daily == 15


def test_home_statement_counts_and_linked_statement_does_not_double() -> None:
    s = statement("home", dosage(10, freq=3))
    o = facts_for([med_request("d", dosage(10, freq=3))], [s]).orders[0]
    assert o.current_daily == 30 and o.regimen_daily == 60 and not o.new_start
    cur = active("cur", dosage(10, freq=3))
    linked = statement(
        "home", dosage(10, freq=3), derivedFrom=[{"reference": "MedicationRequest/cur"}]
    )
    o = facts_for([med_request("d", dosage(10, freq=3), prior="cur")], [cur, linked]).orders[0]
    assert o.current_daily == 30 and o.regimen_daily == 30 and o.change == "same"


def test_chronic_user_needs_14_days_scheduled() -> None:
    cur = active("cur", dosage(10, freq=3), authored="2026-11-07")
    assert not facts_for([dict(cur, status="stopped")], [cur]).orders[0].chronic_user
    cur = active("cur", dosage(10, freq=3), authored="2026-11-06")
    assert facts_for([dict(cur, status="stopped")], [cur]).orders[0].chronic_user
    prn = active("cur", dosage(10, freq=3, prn=True), authored="2026-01-06")
    assert not facts_for([dict(prn, status="stopped")], [prn]).orders[0].chronic_user


def test_chronic_across_renewals() -> None:
    first = med_request(
        "r1",
        dosage(10, freq=3),
        status="completed",
        authored="2026-10-01",
        dispenseRequest={"validityPeriod": {"end": "2026-11-10"}},
    )
    second = active("r2", dosage(10, freq=3), authored="2026-11-10")
    o = facts_for([dict(second, status="stopped")], [first, second]).orders[0]
    assert o.chronic_user


def test_adverse_reason() -> None:
    cur = active("cur", dosage(20, freq=3))
    stop = dict(
        cur,
        status="stopped",
        statusReason={"coding": [{"system": "http://snomed.info/sct", "code": "281647001"}]},
    )
    assert facts_for([stop], [cur]).orders[0].adverse_reason
    stop = dict(cur, status="stopped", statusReason={"text": "suspected baclofen toxicity"})
    assert facts_for([stop], [cur]).orders[0].adverse_reason
    assert not facts_for([dict(cur, status="stopped")], [cur]).orders[0].adverse_reason


def test_intrathecal_step_up_and_24h_change() -> None:
    cur = pump("p1", 400, authored="2026-11-01")
    o = facts_for(
        [
            pump(
                "p2",
                520,
                status="draft",
                authored="2026-11-20",
                priorPrescription={"reference": "MedicationRequest/p1"},
            )
        ],
        [cur],
    ).orders[0]
    assert o.route == "intrathecal" and o.replaces == "p1"
    assert o.step_up_fraction == pytest.approx(0.3)
    assert o.change_24h_fraction == pytest.approx(0.3)
    assert o.pump_first_order is False and o.chronic_user


def test_first_intrathecal_order() -> None:
    o = facts_for([pump("p", 100, status="draft")]).orders[0]
    assert o.pump_first_order and o.step_up_fraction is None and o.change_24h_fraction is None


def test_intrathecal_order_changed_within_24h() -> None:
    """Two steps today: 24 h ago the pump ran 400; an active order of 480 began 2 h ago."""
    old = pump(
        "p0",
        400,
        status="stopped",
        authored="2026-11-01",
        dosageInstruction=[
            dict(
                dosage(None, route=INTRATHECAL, freq=None, rate={"rateQuantity": qty(400, "ug/d")}),
                timing={
                    "repeat": {
                        "boundsPeriod": {"start": "2026-11-01", "end": "2026-11-20T10:00:00Z"}
                    }
                },
            )
        ],
    )
    new = pump("p1", 480, authored="2026-11-20T10:00:00Z")
    o = facts_for(
        [pump("p2", 560, status="draft", priorPrescription={"reference": "MedicationRequest/p1"})],
        [old, new],
    ).orders[0]
    assert o.step_up_fraction == pytest.approx(560 / 480 - 1)
    assert o.change_24h_fraction == pytest.approx(560 / 400 - 1)


def test_pump_removal_and_refill() -> None:
    cur = pump("p1", 450, dispenseRequest={"validityPeriod": {"end": "2026-11-25"}})
    o = facts_for([dict(cur, status="stopped")], [cur]).orders[0]
    # a stopped order has no refill to be due: only the stop counts
    assert o.pump_removal and o.change == "stop" and o.refill_overdue_days is None
    assert o.chronic_user
    # the active order that goes on after signing carries its own due date (5 days ahead)
    other = facts_for([med_request("x", dosage(5), status="draft")], [cur]).orders
    assert [f.refill_overdue_days for f in other if f.order_id == "p1"] == [-5]
    # a renewal signed before the old order's due date is not late (due in 5 days)...
    renewed = dict(
        cur,
        status="draft",
        id="p2",
        priorPrescription={"reference": "MedicationRequest/p1"},
        dispenseRequest={"validityPeriod": {"end": "2027-02-13"}},
    )
    assert facts_for([renewed], [cur]).orders[0].refill_overdue_days == -5
    # ...but one signed 3 days after it does not refill the pump: still overdue
    late = dict(cur, dispenseRequest={"validityPeriod": {"end": "2026-11-17"}})
    assert facts_for([renewed], [late]).orders[0].refill_overdue_days == 3


def test_pump_removal_procedure() -> None:
    cur = pump("p1", 450)
    proc = {
        "resourceType": "ServiceRequest",
        "id": "s",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/pat-1"},
        "code": {"text": "Intrathecal pump removal"},
    }
    f = facts_for([], [cur, proc], hook="patient-view")
    assert f.orders[0].pump_removal


def test_order_select_checks_selected_only_but_counts_all_drafts() -> None:
    a = med_request("a", dosage(20, freq=3))
    b = med_request("b", dosage(10, freq=3))
    f = facts_for([a, b], hook="order-select", selections=["MedicationRequest/b"])
    assert [o.order_id for o in f.orders] == ["b"]
    assert f.orders[0].regimen_daily == 90
    f = facts_for([a, b], hook="order-select", selections=[])
    assert [o.order_id for o in f.orders] == ["a", "b"]


def test_order_sign_also_checks_continuing_active_orders() -> None:
    cur = active("cur", dosage(10, freq=3))
    other = active("other", dosage(5, freq=1))
    f = facts_for([med_request("d", dosage(10, freq=3), prior="cur")], [cur, other])
    assert [(o.order_id, o.is_draft) for o in f.orders] == [("d", True), ("other", False)]
    assert all(o.regimen_daily == 35 for o in f.orders)


def test_patient_view_checks_active_orders_only() -> None:
    f = facts_for(
        [],
        [
            active("cur", dosage(10, freq=3)),
            med_request("x", dosage(10, freq=3), status="completed"),
        ],
        hook="patient-view",
    )
    assert [o.order_id for o in f.orders] == ["cur"]
    o = f.orders[0]
    assert not o.is_draft and o.change == "same" and o.replaces is None


def test_current_step_of_an_active_taper() -> None:
    taper = active(
        "t",
        dosage(15, freq=4, sequence=1, bounds=("2026-11-14", "2026-11-17")),
        dosage(10, freq=4, sequence=2, bounds=("2026-11-17", "2026-11-23")),
        dosage(5, freq=4, sequence=3, bounds=("2026-11-23", "2026-11-26")),
    )
    o = facts_for([med_request("d", dosage(10, freq=4))], [taper]).orders[0]
    assert o.current_daily == 40  # step 2 is in effect now
    # T0 is when the dose now taken began: step 2's start, not the order's first day (a
    # titration written as one order reached its current dose on that step's date)
    assert o.current_start is not None and o.current_start.day == 17
