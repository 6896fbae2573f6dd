"""Patient context: age, sex, weight, setting, vitals (A7), conditions, pregnancy."""

from __future__ import annotations

import pytest

from tests.clinical.builders import (
    LOINC,
    SCT,
    condition,
    days_ago,
    dosage,
    facts_for,
    iso,
    med_request,
    observation,
    patient,
    qty,
)
from tests.clinical.builders import NOW as T


def pf(resources, **kw):
    return facts_for([med_request("d", dosage(10))], resources, **kw).patient


def hours_ago(h: float) -> str:
    from datetime import timedelta

    return iso(T - timedelta(hours=h))


def test_age_completed_years_and_partial_birth_date() -> None:
    assert pf([patient(birth="1971-11-20")]).age == 55
    assert pf([patient(birth="1971-11-21")]).age == 54
    p = pf([patient(birth="2008")])  # youngest possible: 2008-12-31 -> 17
    assert p.age == 17
    assert pf([patient(birth="garbage")]).age is None


def test_weight_units_and_age() -> None:
    p = pf([observation("w", "3141-9", 176.37, "[lb_av]", when=days_ago(3))])
    assert p.weight_kg == pytest.approx(80, abs=0.01) and p.weight_age_days == pytest.approx(3)
    assert pf([observation("w", "29463-7", 80000, "g")]).weight_kg == 80
    assert pf([observation("h", "8302-2", 1.8, "m")]).height_cm == pytest.approx(180)
    assert pf([observation("h", "8302-2", 70, "[in_i]")]).height_cm == pytest.approx(177.8)


def encounter(cls_code: str, *, r5: bool = False) -> dict:
    coding = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": cls_code}
    return {
        "resourceType": "Encounter",
        "id": "enc-1",
        "status": "in-progress",
        "subject": {"reference": "Patient/pat-1"},
        "class": [{"coding": [coding]}] if r5 else coding,
    }


def test_inpatient_from_encounter() -> None:
    assert pf([encounter("IMP")], encounter_id="enc-1").inpatient
    assert pf([encounter("OBSENC", r5=True)], encounter_id="Encounter/enc-1").inpatient
    assert not pf([encounter("AMB")], encounter_id="enc-1").inpatient
    assert not pf([encounter("IMP")], encounter_id="other").inpatient
    assert not pf([encounter("IMP")]).inpatient


def test_vitals_newest_within_window() -> None:
    p = pf(
        [
            observation("rr1", "9279-1", 16, "/min", when=hours_ago(30)),
            observation("rr2", "9279-1", 8, "/min", when=hours_ago(2)),
            observation("s", "59408-5", 88, "%", when=hours_ago(1)),
            observation("old", "2708-6", 80, "%", when=hours_ago(25)),
        ]
    )
    assert p.resp_rate == 8 and p.spo2 == 88
    p = pf([observation("rr1", "9279-1", 16, "/min", when=hours_ago(30))])
    assert p.resp_rate is None


def test_gcs_drop_and_rass_and_bp_panel() -> None:
    gcs = [
        observation("g1", "9269-2", 14, "{score}", when=hours_ago(20)),
        observation("g2", "9269-2", 11, "{score}", when=hours_ago(1)),
    ]
    rass = observation("r", "1345050000", -3, "{score}", system=SCT, when=hours_ago(1))
    rass.pop("valueQuantity")
    rass["valueInteger"] = -3
    panel = {
        "resourceType": "Observation",
        "id": "bp",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
        "effectiveDateTime": hours_ago(3),
        "component": [
            {
                "code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                "valueQuantity": qty(85, "mm[Hg]"),
            },
            {
                "code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
                "valueQuantity": qty(50, "mm[Hg]"),
            },
        ],
    }
    p = pf([*gcs, rass, panel])
    assert p.gcs == 11 and p.gcs_drop_48h == 3 and p.rass == -3 and p.sbp == 85


def test_temperature_max_24h_in_celsius() -> None:
    p = pf(
        [
            observation("t1", "8310-5", 100.9, "[degF]", when=hours_ago(5)),
            observation("t2", "8310-5", 37.0, "Cel", when=hours_ago(1)),
            observation("t3", "8310-5", 39.5, "Cel", when=hours_ago(30)),
        ]
    )
    assert p.temp_max_24h_c == pytest.approx(38.2777, abs=1e-3)


def test_conditions_current_and_history() -> None:
    p = pf(
        [
            condition("e", "84757009"),
            condition("s", "R56.9", "http://hl7.org/fhir/sid/icd-10-cm", status="resolved"),
            condition("cp", "128188000", status="inactive"),
            condition(
                "w", "x", "urn:local", text="History of baclofen withdrawal 2019", status="resolved"
            ),
            condition("a", "F10.20", "http://hl7.org/fhir/sid/icd-10-cm"),
        ]
    )
    assert (
        p.flags["epilepsy"]
        and p.flags["seizure_history"]
        and p.flags["cerebral_origin"]
        and p.flags["withdrawal_history"]
    )
    assert p.flags["alcohol_use_disorder"]
    p = pf([condition("e", "84757009", status="resolved")])
    assert not p.flags["epilepsy"] and p.flags["seizure_history"]


def test_entered_in_error_condition_ignored() -> None:
    c = condition("e", "84757009")
    c["verificationStatus"] = {"coding": [{"code": "entered-in-error"}]}
    assert not pf([c]).flags["epilepsy"]
    stu3 = condition("e", "84757009", status=None)
    stu3["clinicalStatus"] = "active"
    assert pf([stu3]).flags["epilepsy"]


def test_delirium_recent() -> None:
    assert pf([condition("d", "2776000", onset=days_ago(2))]).flags["delirium_recent"]
    assert not pf([condition("d", "2776000", onset=days_ago(10))]).flags["delirium_recent"]
    screen = {
        "resourceType": "Observation",
        "id": "cam",
        "status": "final",
        "code": {
            "coding": [
                {
                    "system": "https://posologic.example.org/fhir/CodeSystem/cds-local",
                    "code": "delirium-screen",
                }
            ]
        },
        "effectiveDateTime": hours_ago(3),
        "valueBoolean": True,
    }
    assert pf([screen]).flags["delirium_recent"]


def test_pregnancy_trimester() -> None:
    ga = observation("ga", "49051-6", 25, "wk", when=days_ago(28))
    p = pf([condition("p", "77386006"), ga])
    assert p.pregnant and p.pregnancy_trimester == 3  # 25 weeks + 4 weeks
    p = pf([condition("p", "77386006")])
    assert p.pregnant and p.pregnancy_trimester is None
    assert pf([observation("ga", "11884-4", 100, "d")]).pregnancy_trimester == 2
    assert not pf([observation("ga", "11884-4", 30, "wk", when=days_ago(200))]).pregnant
    ended = condition("p", "77386006", status="resolved")
    ended["abatementDateTime"] = days_ago(3)
    assert not pf([ended, observation("ga", "11884-4", 36, "wk", when=days_ago(20))]).pregnant


def test_pump_withdrawal_sign() -> None:
    assert pf([condition("i", "418290006", onset=days_ago(1))]).flags["pump_withdrawal_sign"]
    assert not pf([condition("i", "418290006", onset=days_ago(30))]).flags["pump_withdrawal_sign"]


def test_other_patients_data_is_dropped() -> None:
    other = observation("w", "29463-7", 80, "kg")
    other["subject"] = {"reference": "Patient/someone-else"}
    f = facts_for([med_request("d", dosage(10))], [other])
    assert f.patient.weight_kg is None
    assert [i.issue for i in f.issues] == ["other-patient"]


def test_future_observation_not_used() -> None:
    assert (
        pf([observation("w", "29463-7", 80, "kg", when="2026-11-21T00:00:00Z")]).weight_kg is None
    )
