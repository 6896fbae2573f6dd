"""Facts for the five example hook requests (fhir/examples/), evaluated at 2026-11-20T12:00Z."""

from __future__ import annotations

import json
import time

import pytest

from cds.clinical.extract import extract_facts
from tests.clinical.builders import NOW, PARAMS, drug, example_input


def facts(name: str):
    return extract_facts(example_input(name), now=NOW, params=PARAMS, drug=drug())


def test_renal_moderate() -> None:
    f = facts("order-sign-renal-moderate")
    assert len(f.orders) == 1
    o = f.orders[0]
    assert o.order_id == "draft-1" and o.is_draft and o.route == "oral"
    assert o.change == "same"
    assert o.current_daily == 60 and o.regimen_daily == 60
    assert o.replaces == "rx-current"
    assert o.chronic_user is True and o.new_start is False
    assert o.increase_daily is None
    p = f.patient
    assert p.inpatient is False  # encounter enc-1 is not in the data: outpatient
    assert p.renal_kind == "crcl_cockcroft_gault"
    assert p.renal_value == pytest.approx(47.2, abs=0.05)
    assert p.renal is not None and p.renal.weight_kg == 80 and p.renal.weight_kind == "actual"
    assert p.egfr_for_beers == pytest.approx(38.7, abs=0.05)
    assert p.renal_age_hours == pytest.approx(51)
    assert f.issues == [] and f.interactions == []


def test_above_ceiling() -> None:
    o = facts("order-sign-above-ceiling").orders[0]
    assert o.regimen_daily == 100 and o.single_max == 25
    assert o.current_daily == 80 and o.change == "increase"
    assert o.increase_daily == 20 and o.increase_per_admin == 5
    assert o.days_on_current is not None and o.days_on_current >= 3
    assert o.scheduled_orders == 1 and o.duplicate_ids == []


def test_abrupt_stop() -> None:
    o = facts("order-sign-abrupt-stop").orders[0]
    assert o.status == "stopped" and o.is_draft
    assert o.change == "stop"
    assert o.prior_daily == 80 and o.after_daily == 0 and o.after_to_prior == 0
    assert o.chronic_user is True
    assert o.regimen_daily == 0


def test_itb_refill_overdue() -> None:
    f = facts("patient-view-itb-refill-overdue")
    assert len(f.orders) == 1
    o = f.orders[0]
    assert o.route == "intrathecal" and o.is_draft is False
    assert o.daily == 450 and o.regimen_daily == 450
    assert o.refill_overdue_days == 2
    assert o.chronic_user is True
    assert f.patient.pump_active is True
    assert f.interactions == []


def test_prefetch_missing() -> None:
    f = facts("order-sign-prefetch-missing")
    o = f.orders[0]
    assert o.daily == 60 and o.change == "new"
    assert f.patient.age == 55 and f.patient.renal_value is None
    assert f.patient.weight_kg is None and o.regimen_daily_per_kg is None


@pytest.mark.parametrize(
    "name",
    [
        "order-sign-renal-moderate",
        "order-sign-above-ceiling",
        "order-sign-abrupt-stop",
        "patient-view-itb-refill-overdue",
        "order-sign-prefetch-missing",
    ],
)
def test_engine_facts_are_flat_and_serialisable(name: str) -> None:
    out = facts(name).engine_facts()
    assert out and all(isinstance(v, str | int | float | bool) for d in out for v in d.values())
    json.dumps(out)


def test_extraction_is_fast() -> None:
    """A typical request well under 2 ms (generous bound here: CI machines vary)."""
    inp = example_input("order-sign-renal-moderate")
    extract_facts(inp, now=NOW, params=PARAMS, drug=drug())
    n = 50
    start = time.perf_counter()
    for _ in range(n):
        extract_facts(inp, now=NOW, params=PARAMS, drug=drug())
    assert (time.perf_counter() - start) / n < 0.01
