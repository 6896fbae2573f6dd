"""Who and where a call was about, as its own data said (``cds.hooks.context_capture``),
and that a real hook call keeps it with the audit record and never logs it."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cds.hooks.context_capture import capture, human_name, mrn, order_words
from cds.store.models import Card, Invocation
from cds.testing import builders as b

MR = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}


def test_the_mrn_is_the_identifier_typed_mr_else_one_whose_system_says_so() -> None:
    ssn = {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "123-45-6789"}
    by_system = {"system": "https://hospital.example/fhir/mrn", "value": "H-77"}
    typed = {"type": MR, "system": "urn:oid:1.2.3", "value": "A-1"}
    assert mrn([ssn, by_system, typed]) == "A-1"  # the type wins, wherever it is
    assert mrn([ssn, by_system]) == "H-77"
    assert mrn([{"system": "urn:medical-record-number", "value": "M9"}]) == "M9"
    assert mrn([ssn]) is None  # nothing that says MRN: no guess
    assert mrn([{**typed, "use": "old"}, by_system]) == "H-77"  # an old MRN is not shown
    assert mrn([{"type": MR, "value": ""}, {"type": MR}]) is None
    assert mrn("not a list") is None
    assert mrn([{"type": MR, "value": "X\x00\n9"}]) == "X 9"  # control characters go


def test_names_read_as_a_ward_list_reads_them() -> None:
    names = [
        {"use": "old", "family": "Eze", "given": ["Ada"]},
        {"use": "usual", "given": ["Addy"], "family": "Okafor"},
        {"use": "official", "given": ["Adaeze", "Grace"], "family": "Okafor"},
    ]
    assert human_name(names, family_first=True) == "Okafor, Adaeze Grace"
    assert human_name(names[:2], family_first=True) == "Okafor, Addy"
    assert human_name([{"text": "Mr John Smith"}], family_first=True) == "Mr John Smith"
    doctor = [{"prefix": ["Dr"], "given": ["Jane"], "family": "Smith"}]
    assert human_name(doctor, family_first=False) == "Dr Jane Smith"
    assert human_name([{"use": "old", "family": "X"}], family_first=True) is None
    assert human_name([{"family": "Only"}], family_first=True) == "Only"


def _resources() -> list[dict[str, Any]]:
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    pat = b.patient(pid="p1", now=now)
    pat["name"] = [{"family": "Okafor", "given": ["Adaeze"]}]
    pat["identifier"] = [{"type": MR, "value": "MRN-1"}]
    other = b.patient(pid="p2", now=now)
    other["name"] = [{"family": "Someone", "given": ["Else"]}]
    enc = b.encounter("e1", pid="p1")
    enc["location"] = [
        {"location": {"display": "ED"}, "status": "completed"},
        {"location": {"reference": "Location/w7"}, "status": "active"},
        {"location": {"display": "Bed 12"}, "status": "active"},
    ]
    ward = {"resourceType": "Location", "id": "w7", "name": "Ward 7B"}
    role = {
        "resourceType": "PractitionerRole",
        "id": "r1",
        "practitioner": {"reference": "Practitioner/d1"},
    }
    doc = {
        "resourceType": "Practitioner",
        "id": "d1",
        "name": [{"prefix": ["Dr"], "given": ["Jane"], "family": "Smith"}],
    }
    return [other, pat, enc, ward, role, doc]


def test_capture_takes_the_calls_patient_encounter_and_prescriber() -> None:
    res = _resources()
    got = capture(res, patient_id="p1", user_id="Practitioner/d1", encounter_id="e1")
    assert got == {
        "patient_name": "Okafor, Adaeze",
        "patient_mrn": "MRN-1",
        "location": "Ward 7B · Bed 12",  # the active locations, a Location by reference
        "prescriber_name": "Dr Jane Smith",
    }
    by_role = capture(res, patient_id="p1", user_id="PractitionerRole/r1", encounter_id=None)
    assert by_role is not None and by_role["prescriber_name"] == "Dr Jane Smith"
    assert "location" not in by_role  # no encounter in the context: no ward
    absolute = "https://ehr.example/fhir/Practitioner/d1"
    assert (
        capture(res, patient_id="p1", user_id=absolute, encounter_id=None)[  # type: ignore[index]
            "prescriber_name"
        ]
        == "Dr Jane Smith"
    )
    # Another patient's resources are never taken for this patient's.
    assert capture(res, patient_id="p9", user_id=None, encounter_id=None) is None
    assert capture([], patient_id="p1", user_id="Practitioner/d1", encounter_id="e1") is None
    junk: list[Any] = [None, 3, "x", {"resourceType": "Patient", "id": "p1", "name": "bad"}]
    assert capture(junk, patient_id="p1", user_id=None, encounter_id=None) is None


def test_the_order_as_received_in_words() -> None:
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    pill = b.medication_request(
        rid="d1",
        status="draft",
        dosages=[b.dosage(dose=1, unit="{pill}", frequency=3, route=None)],
    )
    assert order_words(pill) == "baclofen 20 MG Oral Tablet: 1 pill 3 times a day"
    oral = b.medication_request(rid="d2", dosages=[b.dosage(dose=20, frequency=2)])
    assert order_words(oral) == "baclofen 20 MG Oral Tablet: 20 mg twice a day, oral"
    taper = b.medication_request(
        rid="d3",
        status="stopped",
        dosages=[
            b.dosage(dose=20, frequency=3, sequence=1, start=now),
            b.dosage(dose=10, frequency=1, period=8, period_unit="h", sequence=2),
            b.dosage(dose=None, text="then stop"),
        ],
    )
    assert order_words(taper) == (
        "baclofen 20 MG Oral Tablet: 20 mg 3 times a day, oral; then 10 mg every 8 hours, oral;"
        " then then stop (stopped)"
    )
    prn = b.medication_request(rid="d4", dosages=[b.dosage(dose=5, prn=True, route=None)])
    assert order_words(prn) == "baclofen 20 MG Oral Tablet: 5 mg as needed"
    assert order_words({"resourceType": "MedicationRequest"}) == "Medication"
    assert order_words(None) is None
    assert len(order_words({"medicationCodeableConcept": {"text": "x" * 900}}) or "") == 200


@pytest.fixture
def hook_client(console_app: Any) -> Any:
    with TestClient(console_app) as c:
        yield c


def test_a_hook_call_keeps_what_it_saw_and_logs_none_of_it(
    hook_client: TestClient, maker: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    now = datetime.now(UTC)
    pat = b.patient(pid="log-1", now=now, age=80, sex="female")
    pat["name"] = [{"family": "Zyxwvut", "given": ["Quillon"]}]
    pat["identifier"] = [{"type": MR, "value": "MRN-SECRET-42"}]
    enc = b.encounter("enc-log", pid="log-1")
    enc["location"] = [{"location": {"display": "Ward Secret 9"}, "status": "active"}]
    body = b.hook_request(
        hook="order-sign",
        now=now,
        patient_res=pat,
        drafts=[
            b.medication_request(
                rid="draft-log",
                status="draft",
                pid="log-1",
                authored=now,
                dosages=[b.dosage(dose=40, frequency=3)],
            )
        ],
        labs=[b.creatinine(2.4, "mg/dL", now - timedelta(days=1), pid="log-1")],
        body=[b.weight(50, now - timedelta(days=1), pid="log-1")],
        encounter_res=enc,
    )
    body["prefetch"]["prescriber"] = {
        "resourceType": "Practitioner",
        "id": "prac-1",
        "name": [{"given": ["Hortensia"], "family": "Prescriberova"}],
    }
    caplog.set_level(logging.DEBUG)
    response = hook_client.post("/cds-services/medication-safety-order-sign", json=body)
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    assert cards
    for secret in ("Zyxwvut", "Quillon", "MRN-SECRET-42", "Ward Secret 9", "Prescriberova"):
        assert secret not in caplog.text
    with maker() as s:
        inv = s.scalars(select(Invocation).where(Invocation.patient_ref == "Patient/log-1")).one()
        assert inv.context == {
            "patient_name": "Zyxwvut, Quillon",
            "patient_mrn": "MRN-SECRET-42",
            "location": "Ward Secret 9",
            "prescriber_name": "Hortensia Prescriberova",
        }
        rows = s.scalars(select(Card).where(Card.invocation_id == inv.id)).all()
        assert len(rows) == len(cards)
        for row in rows:
            assert (row.patient_name, row.patient_mrn, row.location) == (
                "Zyxwvut, Quillon",
                "MRN-SECRET-42",
                "Ward Secret 9",
            )
            assert row.patient_name_key == "zyxwvut, quillon"
            assert row.prescriber_ref == "Practitioner/prac-1"
            assert row.prescriber_name == "Hortensia Prescriberova"
            assert row.order_text == "baclofen 20 MG Oral Tablet: 40 mg 3 times a day, oral"
            assert row.problem_id == row.id  # the first firing of its problem
            assert row.created_hour == int(row.created_at.replace(tzinfo=UTC).timestamp() // 3600)
    # The same order again (order-select on the same draft): repeats of the same problems.
    again = hook_client.post("/cds-services/medication-safety-order-sign", json=body)
    assert again.status_code == 200
    with maker() as s:
        rows = s.scalars(select(Card).where(Card.patient_ref == "Patient/log-1")).all()
        first = {r.primary_rule: r.id for r in rows if r.problem_id == r.id}
        repeats = [r for r in rows if r.problem_id != r.id]
        assert len(first) == len(cards) == len(repeats)
        assert {r.problem_id for r in repeats} == set(first.values())
        assert {r.is_repeat for r in repeats} == {1}
        assert {r.is_repeat for r in rows if r.problem_id == r.id} == {0}
