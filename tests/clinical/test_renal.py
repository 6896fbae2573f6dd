"""A5 renal function: worked values (tolerance 0.05), choice of measure, units, AKI."""

from __future__ import annotations

import pytest

from cds.clinical.renal import (
    bedside_schwartz,
    ckd_epi_2021,
    cockcroft_gault,
    devine_ibw,
    dosing_weight,
)
from tests.clinical.builders import (
    PARAMS,
    born_years_ago,
    creatinine,
    days_ago,
    dosage,
    facts_for,
    height,
    med_request,
    observation,
    patient,
    weight,
)

TOL = 0.05


@pytest.mark.parametrize(
    ("age", "sex", "kg", "scr", "crcl"),
    [
        (82, "female", 55, 1.1, 34.2),
        (55, "male", 80, 2.0, 47.2),
        (45, "female", 65, 0.8, 91.1),
        (55, "male", 80, 0.9, 104.9),
        (70, "male", 70, 150 / 88.4, 40.1),
    ],
)
def test_cockcroft_gault_worked_values(age, sex, kg, scr, crcl) -> None:
    assert cockcroft_gault(age, kg, scr, sex) == pytest.approx(crcl, abs=TOL)


@pytest.mark.parametrize(
    ("age", "sex", "scr", "egfr"),
    [(82, "female", 1.1, 50.2), (55, "male", 2.0, 38.7), (70, "male", 150 / 88.4, 42.9)],
)
def test_ckd_epi_2021_worked_values(age, sex, scr, egfr) -> None:
    assert ckd_epi_2021(age, scr, sex) == pytest.approx(egfr, abs=TOL)


def test_adjusted_weight_worked_value() -> None:
    assert devine_ibw(180, "male") == pytest.approx(75.0, abs=TOL)
    w, kind = dosing_weight(140, 180, "male", PARAMS)
    assert kind == "adjusted" and w == pytest.approx(101.0, abs=TOL)
    assert cockcroft_gault(30, w, 1.0, "male") == pytest.approx(154.3, abs=TOL)
    assert cockcroft_gault(30, 140, 1.0, "male") == pytest.approx(213.9, abs=TOL)


def test_70m_150_umol_is_40_1_not_40_0() -> None:
    """No intermediate rounding: 1.70 mg/dL would give 40.0."""
    f = facts_for(
        [med_request("d1")],
        [patient(birth=born_years_ago(70)), weight(70), creatinine(150, "umol/L", code="14682-9")],
    )
    assert f.patient.renal_value == pytest.approx(40.1, abs=TOL)
    assert f.patient.renal_value > 40.05


def renal(resources, gender="male", age=55):
    f = facts_for(
        [med_request("d1", dosage(10))], [patient(gender, born_years_ago(age)), *resources]
    )
    return f.patient, f


def test_d6_through_extraction() -> None:
    p, _ = renal([weight(80), creatinine(2.0)])
    assert p.renal_kind == "crcl_cockcroft_gault" and p.renal_value == pytest.approx(47.2, abs=TOL)
    assert p.egfr_for_beers == pytest.approx(38.7, abs=TOL)
    assert p.renal_is_egfr is False


def test_d14_through_extraction() -> None:
    p, f = renal([weight(55), creatinine(1.1)], gender="female", age=82)
    assert p.renal_value == pytest.approx(34.2, abs=TOL)
    assert p.egfr_for_beers == pytest.approx(50.2, abs=TOL)
    assert f.orders[0].new_start is True


def test_d15_through_extraction_and_as_mg_dl() -> None:
    p, _ = renal([weight(70), creatinine(150, "umol/L", code="14682-9")], age=70)
    assert p.renal_value == pytest.approx(40.1, abs=TOL)
    assert p.egfr_for_beers == pytest.approx(42.9, abs=TOL)
    assert not p.creatinine_unusable
    p, f = renal([weight(70), creatinine(150, "mg/dL")], age=70)
    assert p.renal_value is None and p.creatinine_unusable
    assert [i.issue for i in f.issues] == ["creatinine-implausible"]


def test_adjusted_weight_through_extraction() -> None:
    p, _ = renal([weight(140), height(180), creatinine(1.0)], age=30)
    assert p.renal is not None and p.renal.weight_kind == "adjusted"
    assert p.renal.weight_kg == pytest.approx(101.0, abs=TOL)
    assert p.renal_value == pytest.approx(154.3, abs=TOL)


@pytest.mark.parametrize(
    ("value", "unit"), [(2.0, "mg/dL"), (176.8, "umol/L"), (176.8, "µmol/L"), (20, "mg/L")]
)
def test_creatinine_units_agree(value, unit) -> None:
    p, _ = renal([weight(80), creatinine(value, unit)])
    assert p.renal_value == pytest.approx(47.2222222, rel=1e-9)


@pytest.mark.parametrize(
    ("value", "unit", "issue"),
    [
        (1.0, "mmHg", "creatinine-unit"),
        (5, "umol/L", "creatinine-implausible"),
        (30, "mg/dL", "creatinine-implausible"),
    ],
)
def test_unusable_creatinine_is_reported_not_used(value, unit, issue) -> None:
    p, f = renal([weight(80), creatinine(value, unit)])
    assert p.creatinine_unusable and p.renal_value is None and p.egfr_for_beers is None
    assert [i.issue for i in f.issues] == [issue]


def test_unusable_newest_falls_back_to_older_usable() -> None:
    p, f = renal(
        [
            weight(80),
            creatinine(1.0, "mg/dL", when=days_ago(3), id_="old"),
            creatinine(300, "mg/dL", when=days_ago(1), id_="new"),
        ]
    )
    assert p.creatinine_unusable and p.renal is not None and p.renal.source_ids[0] == "old"


def test_creatinine_without_unit() -> None:
    obs = creatinine(1.0)
    obs["valueQuantity"] = {"value": 1.0}
    p, f = renal([weight(80), obs])
    assert p.creatinine_unusable and p.renal_value is None


def test_measured_crcl_first_when_not_older_than_creatinine() -> None:
    crcl = observation("cc", "2164-2", 55, "mL/min", when=days_ago(1))
    p, _ = renal([weight(80), creatinine(2.0, when=days_ago(2)), crcl])
    assert p.renal_kind == "crcl_measured" and p.renal_value == 55
    p, _ = renal(
        [
            weight(80),
            creatinine(2.0, when=days_ago(1)),
            observation("cc", "2164-2", 55, "mL/min", when=days_ago(2)),
        ]
    )
    assert p.renal_kind == "crcl_cockcroft_gault"


def test_no_weight_uses_reported_egfr_else_ckd_epi() -> None:
    egfr = observation("e", "98979-8", 44, "mL/min/{1.73_m2}", when=days_ago(1))
    p, _ = renal([creatinine(2.0, when=days_ago(1)), egfr])
    assert p.renal_kind == "egfr_reported" and p.renal_value == 44 and p.renal_is_egfr
    assert p.egfr_for_beers == 44
    p, _ = renal([creatinine(2.0)])
    assert p.renal_kind == "egfr_ckd_epi_2021" and p.renal_value == pytest.approx(38.7, abs=TOL)


def test_stale_weight_not_used_for_cockcroft_gault() -> None:
    p, _ = renal([weight(80, when=days_ago(91)), creatinine(2.0)])
    assert p.renal_kind == "egfr_ckd_epi_2021"
    assert p.weight_kg == 80 and p.weight_age_days == pytest.approx(91)


def test_comparator_egfr_is_not_a_value() -> None:
    egfr = observation("e", "98979-8", 60, "mL/min/{1.73_m2}")
    egfr["valueQuantity"]["comparator"] = ">"
    p, _ = renal([egfr])
    assert p.renal_value is None


def test_sex_unknown_uses_lower_of_both() -> None:
    p, _ = renal([weight(80), creatinine(2.0)], gender=None)
    assert p.renal is not None and p.renal.sex_used == "lower-of-both"
    assert p.renal_value == pytest.approx(cockcroft_gault(55, 80, 2.0, "female"))
    assert p.egfr_for_beers == pytest.approx(
        min(ckd_epi_2021(55, 2.0, "male"), ckd_epi_2021(55, 2.0, "female"))
    )


def test_child_bedside_schwartz_needs_recent_height() -> None:
    p, _ = renal([creatinine(0.5), height(120, when=days_ago(10))], age=8)
    assert p.renal_kind == "egfr_schwartz"
    assert p.renal_value == pytest.approx(bedside_schwartz(120, 0.5))
    p, _ = renal([creatinine(0.5), height(120, when=days_ago(40))], age=8)
    assert p.renal_value is None and p.renal_needed_missing_height


def test_aki_inputs() -> None:
    p, _ = renal(
        [
            weight(80),
            creatinine(1.0, when=days_ago(6), id_="c1"),
            creatinine(1.2, when=days_ago(1.5), id_="c2"),
            creatinine(1.6, when=days_ago(0.5), id_="c3"),
        ]
    )
    assert p.creatinine_rise_48h_mg_dl == pytest.approx(0.4)
    assert p.creatinine_ratio_7d == pytest.approx(1.6)


def test_entered_in_error_ignored_and_age_hours() -> None:
    bad = creatinine(5.0, when=days_ago(0.25), id_="bad")
    bad["status"] = "entered-in-error"
    p, _ = renal([weight(80), creatinine(2.0, when=days_ago(2)), bad])
    assert p.renal_value == pytest.approx(47.2, abs=TOL) and p.renal_age_hours == 48


def test_no_renal_data_gives_no_number() -> None:
    p, _ = renal([weight(80)])
    assert p.renal_value is None and p.egfr_for_beers is None and p.renal_age_hours is None
    assert not p.creatinine_unusable


def test_dialysis_condition_and_procedure() -> None:
    from tests.clinical.builders import condition

    p, _ = renal([condition("c", "Z99.2", "http://hl7.org/fhir/sid/icd-10-cm")])
    assert p.on_dialysis
    # A5 revision: ESRD or CKD 5 on the problem list is not dialysis (transplant recipients)
    for code, system in (
        ("N18.6", "http://hl7.org/fhir/sid/icd-10-cm"),
        ("46177005", "http://snomed.info/sct"),
        ("433146000", "http://snomed.info/sct"),
    ):
        p, _ = renal([condition("c", code, system)])
        assert not p.on_dialysis, code
    proc = {
        "resourceType": "Procedure",
        "id": "p",
        "status": "completed",
        "subject": {"reference": "Patient/pat-1"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "302497006"}]},
        "performedDateTime": days_ago(2),
    }
    p, _ = renal([proc])
    assert p.on_dialysis
    proc["performedDateTime"] = days_ago(400)
    p, _ = renal([proc])
    assert not p.on_dialysis
