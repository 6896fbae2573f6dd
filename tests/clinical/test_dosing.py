"""A2 dose normalisation, one rule per test, on real FHIR JSON orders."""

from __future__ import annotations

import pytest

from tests.clinical.builders import (
    BACLOFEN_IN,
    INTRATHECAL,
    RXNORM,
    dosage,
    facts_for,
    med_request,
    patient,
    qty,
    weight,
)


def order(*dosages, **kw):
    f = facts_for([med_request("d1", *dosages, **kw)])
    assert len(f.orders) == 1
    return f.orders[0]


def test_d4_suspension_ml_times_strength() -> None:
    """D4: 10 mL TID of the 5 mg/mL suspension (2593376) = 50 mg per dose, 150 mg/day."""
    med = {
        "coding": [
            {"system": RXNORM, "code": "2593376", "display": "baclofen 5 MG/ML Oral Suspension"}
        ]
    }
    o = order(dosage(10, "mL", freq=3), med=med)
    assert o.single_max == 50 and o.daily == 150 and o.regimen_daily == 150
    assert o.dose_unit_written == "mL" and o.strength_per_ml == 5
    assert o.new_start is True and o.change == "new"


def test_d5_scheduled_plus_prn_in_one_order() -> None:
    """D5: 20 mg TID + 10 mg q6h PRN -> 60 + 40 = 100 mg/day possible, one scheduled order."""
    o = order(dosage(20, freq=3), dosage(10, freq=1, period=6, period_unit="h", prn=True))
    assert o.daily == 100 and o.regimen_daily == 100
    assert o.prn and not o.prn_only and not o.is_taper
    assert o.scheduled_orders == 1 and o.duplicate_ids == []
    assert o.single_max == 20 and o.single_min == 10


def test_d5_scheduled_plus_prn_as_two_orders() -> None:
    f = facts_for(
        [
            med_request("a", dosage(20, freq=3)),
            med_request("b", dosage(10, freq=1, period=6, period_unit="h", prn=True)),
        ]
    )
    a, b = f.orders
    assert a.regimen_daily == b.regimen_daily == 100
    assert a.scheduled_orders == 1 and a.duplicate_ids == []


def test_two_scheduled_orders_are_duplicates() -> None:
    f = facts_for([med_request("a", dosage(10, freq=3)), med_request("b", dosage(10, freq=2))])
    a, b = f.orders
    assert a.scheduled_orders == 2 and a.duplicate_ids == ["b"] and b.duplicate_ids == ["a"]
    assert a.regimen_daily == 50 and a.regimen_admin_per_day == 5


def test_d11_intrathecal_rate_in_mg_per_day() -> None:
    """D11: intrathecal "300 mg/day" -> 300 000 ug/day."""
    o = order(
        dosage(None, route=INTRATHECAL, freq=None, rate={"rateQuantity": qty(300, "mg/d")}),
        med=BACLOFEN_IN,
    )
    assert o.route == "intrathecal" and o.daily == 300_000


@pytest.mark.parametrize(
    ("unit", "per_day"),
    [("ug/d", 450), ("ug/h", 450 * 24), ("mg/(24.h)", 450_000), ("mcg/day", 450)],
)
def test_intrathecal_rate_units(unit: str, per_day: float) -> None:
    o = order(
        dosage(None, route=INTRATHECAL, freq=None, rate={"rateQuantity": qty(450, unit)}),
        med=BACLOFEN_IN,
    )
    assert o.daily == pytest.approx(per_day, rel=1e-12)


def test_rate_ratio() -> None:
    rate = {"rateRatio": {"numerator": qty(900, "ug"), "denominator": qty(2, "d")}}
    o = order(dosage(None, route=INTRATHECAL, freq=None, rate=rate), med=BACLOFEN_IN)
    assert o.daily == 450


def test_d13_child_mg_per_kg() -> None:
    """D13: 6-year-old, 20 kg, 15 mg TID -> 45 mg/day, 2.25 mg/kg/day."""
    f = facts_for(
        [med_request("d1", dosage(15, freq=3))], [patient(birth="2020-06-01"), weight(20, id_="w")]
    )
    o = f.orders[0]
    assert f.patient.age == 6
    assert o.regimen_daily == 45 and o.regimen_daily_per_kg == 2.25


@pytest.mark.parametrize(
    ("code", "n"),
    [
        ("QD", 1),
        ("BID", 2),
        ("TID", 3),
        ("QID", 4),
        ("AM", 1),
        ("BED", 1),
        ("QOD", 0.5),
        ("Q4H", 6),
        ("Q6H", 4),
        ("Q8H", 3),
    ],
)
def test_timing_code(code: str, n: float) -> None:
    o = order(dosage(10, freq=None, code=code))
    assert o.admin_per_day == n and o.daily == 10 * n


def test_local_timing_codes_and_text() -> None:
    d = dosage(10, freq=None)
    d["timing"] = {"code": {"text": "q12h"}}
    assert order(d).daily == 20
    d["timing"] = {"code": {"coding": [{"code": "QHS"}]}}
    assert order(d).daily == 10


def test_frequency_max_wins_and_period_units() -> None:
    d = dosage(5, freq=2)
    d["timing"]["repeat"]["frequencyMax"] = 4
    assert order(d).daily == 20
    assert order(dosage(10, freq=1, period=8, period_unit="h")).daily == 30
    assert order(dosage(10, freq=14, period=1, period_unit="wk")).daily == pytest.approx(20)


def test_when_counts_administrations() -> None:
    assert order(dosage(10, freq=None, when=["MORN", "NIGHT"])).daily == 20


def test_dose_range_uses_high() -> None:
    d = dosage(None, freq=3)
    d["doseAndRate"] = [{"doseRange": {"low": qty(5, "mg"), "high": qty(10, "mg")}}]
    assert order(d).daily == 30


@pytest.mark.parametrize(
    ("value", "unit"), [(20, "mg"), (0.02, "g"), (20000, "ug"), (20000, "mcg")]
)
def test_mass_units(value: float, unit: str) -> None:
    o = order(dosage(value, unit, freq=3))
    assert o.daily == pytest.approx(60, rel=1e-12) and o.dose_computable


def test_mcg_as_text_unit_only() -> None:
    d = dosage(None, freq=3)
    d["doseAndRate"] = [{"doseQuantity": {"value": 5000, "unit": "mcg"}}]
    assert order(d).daily == pytest.approx(15)


def test_tablets_use_product_strength() -> None:
    assert order(dosage(2, "{tablet}", freq=3)).daily == 120  # 20 mg tablets


def test_contained_medication_strength_ratio() -> None:
    contained = {
        "resourceType": "Medication",
        "id": "m1",
        "code": {"text": "baclofen oral solution"},
        "ingredient": [
            {
                "itemCodeableConcept": {"coding": [{"system": RXNORM, "code": "1292"}]},
                "strength": {"numerator": qty(10, "mg"), "denominator": qty(5, "mL")},
            }
        ],
    }
    r = med_request(
        "d1",
        dosage(5, "mL", freq=3),
        contained=[contained],
        medicationReference={"reference": "#m1"},
    )
    del r["medicationCodeableConcept"]
    o = facts_for([r]).orders[0]
    assert o.daily == 30 and o.strength_per_ml == 2 and not o.matched_by_name


def test_prefetched_medication_reference_r5_shape() -> None:
    med = {
        "resourceType": "Medication",
        "id": "m2",
        "code": {"coding": [{"system": RXNORM, "code": "2667941"}]},
        "doseForm": {"text": "oral solution"},
    }
    r = med_request("d1", dosage(5, "mL", freq=2, route=None))
    del r["medicationCodeableConcept"]
    r["medication"] = {"reference": {"reference": "Medication/m2"}}
    f = facts_for([r], [med])
    o = f.orders[0]
    assert o.daily == 20 and o.route == "oral" and not o.route_unknown


def test_unknown_strength_is_not_computable() -> None:
    med = {"coding": [{"system": RXNORM, "code": "1292", "display": "baclofen"}]}
    o = order(dosage(2, "{tablet}", freq=3), med=med)
    assert o.dose_computable is False and o.daily is None and o.regimen_daily == 0
    assert o.regimen_complete is False
    assert o.dose_problem and "strength" in o.dose_problem


def test_unknown_unit_is_not_computable() -> None:
    o = order(dosage(2, "spoonful", freq=3))
    assert o.dose_computable is False and o.daily is None and "unit" in (o.dose_problem or "")


def test_oral_dose_without_frequency_is_not_computable() -> None:
    o = order(dosage(10, freq=None))
    assert o.dose_computable is False and o.daily is None


def test_prn_max_dose_per_period() -> None:
    mdp = {"numerator": qty(30, "mg"), "denominator": qty(24, "h")}
    o = order(dosage(10, freq=1, period=4, period_unit="h", prn=True, max_per_period=mdp))
    assert o.prn_only and o.daily == 30


def test_prn_max_dose_normalised_to_24h() -> None:
    mdp = {"numerator": qty(20, "mg"), "denominator": qty(12, "h")}
    assert order(dosage(10, freq=None, prn=True, max_per_period=mdp)).daily == 40


def test_prn_without_maximum() -> None:
    o = order(dosage(20, freq=3), dosage(10, freq=None, prn=True))
    assert o.prn_max_unknown and o.daily == 60 and o.dose_computable


def test_r5_as_needed_spelling() -> None:
    d = dosage(10, freq=4)
    d["asNeeded"] = True
    o = order(d)
    assert o.prn_only and o.daily == 40


def test_taper_steps() -> None:
    o = order(
        dosage(15, freq=4, sequence=1, bounds=("2026-11-20", "2026-11-23")),
        dosage(10, freq=4, sequence=2, bounds=("2026-11-23", "2026-11-26")),
        dosage(5, freq=4, sequence=3, bounds=("2026-11-26", "2026-11-29")),
    )
    assert o.is_taper and len(o.steps) == 3
    assert o.daily == 60 and o.first_step_daily == 60 and o.admin_per_day == 4
    assert o.single_max == 15 and o.single_min == 5
    assert o.steps[1].daily == 40 and o.steps[2].start is not None


def test_concurrent_same_sequence_adds_up() -> None:
    o = order(dosage(10, freq=2, sequence=1), dosage(5, freq=1, sequence=1))
    assert not o.is_taper and o.daily == 25 and o.admin_per_day == 3


def test_intrathecal_dose_with_no_timing_is_not_a_bolus_unless_marked() -> None:
    """A6 revision: a pump dose written with no timing is unknown, not a bolus."""
    o = facts_for(
        [med_request("p", dosage(450, "mcg", freq=None, route=INTRATHECAL), med=BACLOFEN_IN)]
    )
    first = o.orders[0]
    assert first.bolus_ug is None and not first.dose_computable
    assert "no timing" in (first.dose_problem or "")
    marked = dict(dosage(450, "mcg", freq=None, route=INTRATHECAL), text="screening bolus")
    assert facts_for([med_request("p", marked, med=BACLOFEN_IN)]).orders[0].bolus_ug == 450


def test_intrathecal_bolus_and_interval() -> None:
    given = med_request(
        "b1",
        dict(dosage(50, "ug", freq=None, route=INTRATHECAL), text="screening bolus"),
        status="completed",
        med=BACLOFEN_IN,
        authored="2026-11-19T08:00:00Z",
    )
    draft = med_request(
        "b2",
        dict(dosage(75, "ug", freq=None, route=INTRATHECAL), text="test dose"),
        med=BACLOFEN_IN,
        authored="2026-11-20T08:00:00Z",
    )
    o = facts_for([draft], [given]).orders[0]
    assert o.bolus_ug == 75 and o.single_max == 75
    assert o.bolus_interval_hours == 28  # the draft is given now, 12:00 next day
    assert o.regimen_daily == 0  # boluses never enter the pump regimen
    first = facts_for([draft]).orders[0]
    assert first.bolus_interval_hours is None and first.pump_first_order


def test_stu3_dose_on_dosage() -> None:
    d = {
        "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d"}},
        "route": {"coding": [{"system": "http://snomed.info/sct", "code": "26643006"}]},
        "doseQuantity": {
            "value": 10,
            "unit": "mg",
            "system": "http://unitsofmeasure.org",
            "code": "mg",
        },
    }
    assert order(d).daily == 30
