"""A hospital pharmacist's morning, as real hook calls: what the console must make sense of.

Two patients on a ward, the CDS Hooks requests an EHR (or the official sandbox) sends while
a prescriber works: order-select firing again on every selection of the same draft, then
order-sign; then the prescriber's feedback (an acceptance sent twice, an override coded
with the card's own reason code but no words). Built with the public testing kit
(``cds.testing.builders``) at the real current time, and sent over HTTP to a real server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from cds.testing import builders as b

SELECT = "/cds-services/medication-safety-order-select"
SIGN = "/cds-services/medication-safety-order-sign"

WARD = "Ward 7B, Bed 12"
NAME_A = "Okafor, Adaeze"
MRN_A = "MRN-204817"
PRESCRIBER = "Dr Jane Smith"


@dataclass
class Morning:
    """What the calls produced: card ids by (patient, rule), and every response."""

    cards: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # patient -> cards
    calls: int = 0

    def of(self, patient: str, category: str) -> list[dict[str, Any]]:
        return [c for c in self.cards.get(patient, []) if c["source"]["topic"]["code"] == category]


def patient_a(now: datetime) -> dict[str, Any]:
    """An inpatient with poor kidney function, on oxycodone, with an MRN and a ward."""
    pat = b.patient(pid="okafor-1", now=now, age=78, sex="female")
    pat["name"] = [
        {"use": "old", "family": "Eze", "given": ["Adaeze"]},
        {"use": "official", "family": "Okafor", "given": ["Adaeze"]},
    ]
    pat["identifier"] = [
        {"system": "urn:oid:2.16.840.1.113883.4.1", "value": "999-11-2222"},  # not the MRN
        {
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
                ]
            },
            "system": "https://hospital.example.org/patients",
            "value": MRN_A,
        },
    ]
    return pat


def _request_a(now: datetime, hook: str) -> dict[str, Any]:
    pat = patient_a(now)
    pid = pat["id"]
    enc = b.encounter("enc-okafor", pid=pid)
    enc["location"] = [
        {"location": {"display": "Emergency department"}, "status": "completed"},
        {"location": {"display": WARD}, "status": "active"},
    ]
    draft = b.medication_request(
        rid="draft-bac-okafor",
        status="draft",
        product="tab20",
        pid=pid,
        authored=now,
        dosages=[b.dosage(dose=20, frequency=3)],
    )
    oxy = b.medication_request(
        rid="oxy-okafor",
        status="active",
        drug="oxycodone",
        pid=pid,
        authored=now - timedelta(days=20),
        dosages=[b.dosage(dose=5, frequency=4, start=now - timedelta(days=20))],
    )
    body = b.hook_request(
        hook=hook,
        now=now,
        patient_res=pat,
        drafts=[draft],
        medications=[oxy],
        labs=[b.creatinine(1.9, "mg/dL", now - timedelta(days=1), oid="cr-okafor", pid=pid)],
        body=[b.weight(58, now - timedelta(days=2), pid=pid)],
        encounter_res=enc,
    )
    body["context"]["userId"] = "Practitioner/dr-smith"
    # A site prefetch key the services did not declare: used as given (never fetched).
    body["prefetch"]["practitioner"] = {
        "resourceType": "Practitioner",
        "id": "dr-smith",
        "name": [{"prefix": ["Dr"], "given": ["Jane"], "family": "Smith"}],
    }
    return body


def _request_b(now: datetime) -> dict[str, Any]:
    """A sandbox-style call: a name but no MRN, no encounter, a weight in an unreadable
    unit (a data-quality problem), a 140 mg/day order beside nothing."""
    pat = b.patient(pid="sbx-pt-1", now=now, age=55, sex="male")
    pat["name"] = [{"given": ["Daniel"], "family": "X"}]
    draft = b.medication_request(
        rid="request-123",
        status="draft",
        product="tab20",
        pid="sbx-pt-1",
        authored=now,
        dosages=[b.dosage(dose=1, unit="{pill}", frequency=3, route=None)],
    )
    body = b.hook_request(
        hook="order-select",
        now=now,
        patient_res=pat,
        drafts=[draft],
        labs=[b.creatinine(0.9, "mg/dL", now - timedelta(days=2), pid="sbx-pt-1")],
        body=[b.weight(11, now - timedelta(days=1), pid="sbx-pt-1", unit="[stone_av]")],
    )
    body["context"]["userId"] = "Practitioner/sbx-prac"
    return body


def run_morning(base: str, *, selects: int = 3) -> Morning:
    """The calls, in the order a prescriber makes them (each answered 200)."""
    out = Morning()
    with httpx.Client(base_url=base, timeout=30) as client:

        def call(path: str, body: dict[str, Any], patient: str) -> None:
            r = client.post(path, json=body)
            assert r.status_code == 200, r.text
            out.calls += 1
            out.cards.setdefault(patient, []).extend(r.json()["cards"])

        for _ in range(selects):  # the same draft selected again and again
            call(SELECT, _request_a(datetime.now(UTC), "order-select"), "A")
        call(SIGN, _request_a(datetime.now(UTC), "order-sign"), "A")
        call(SELECT, _request_b(datetime.now(UTC)), "B")
    return out


def send_feedback(base: str, service: str, items: list[dict[str, Any]]) -> None:
    with httpx.Client(base_url=base, timeout=30) as client:
        r = client.post(f"{service}/feedback", json={"feedback": items})
        assert r.status_code == 200, r.text


def stamp(minutes_ago: int = 0) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
