"""Small builders for real FHIR R4 JSON used by the clinical tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from cds.clinical.drugspec import DrugSpec
from cds.clinical.extract import HookInput, extract_facts
from cds.clinical.facts import ClinicalFacts
from cds.clinical.params import ClinicalParams
from cds.paths import data_dir

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
PARAMS = ClinicalParams()


@cache
def baclofen_pack() -> Any:
    """The shipped baclofen pack (its drug: identity, flags, classes), compiled once."""
    from cds.engine.pack import compile_pack

    return compile_pack(data_dir("rules") / "baclofen")


def drug() -> DrugSpec:
    return baclofen_pack().drug


RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ORAL = {"coding": [{"system": SCT, "code": "26643006", "display": "Oral route"}]}
INTRATHECAL = {"coding": [{"system": SCT, "code": "72607000", "display": "Intrathecal route"}]}
BACLOFEN_20 = {
    "coding": [{"system": RXNORM, "code": "197392", "display": "baclofen 20 MG Oral Tablet"}]
}
BACLOFEN_IN = {"coding": [{"system": RXNORM, "code": "1292", "display": "baclofen"}]}


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def days_ago(n: float) -> str:
    return iso(NOW - timedelta(days=n))


def qty(value: float, unit: str, code: str | None = None) -> dict[str, Any]:
    q: dict[str, Any] = {"value": value, "unit": unit}
    if code is not False:
        q["system"] = UCUM
        q["code"] = code or unit
    return q


def dosage(
    value: float | None = 20,
    unit: str = "mg",
    *,
    freq: float | None = 3,
    period: float = 1,
    period_unit: str = "d",
    route: dict[str, Any] | None = ORAL,
    code: str | None = None,
    prn: bool = False,
    sequence: int | None = None,
    bounds: tuple[str | None, str | None] | None = None,
    rate: dict[str, Any] | None = None,
    max_per_period: dict[str, Any] | None = None,
    when: list[str] | None = None,
) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if sequence is not None:
        d["sequence"] = sequence
    timing: dict[str, Any] = {}
    repeat: dict[str, Any] = {}
    if freq is not None:
        repeat.update(frequency=freq, period=period, periodUnit=period_unit)
    if when:
        repeat["when"] = when
    if bounds:
        repeat["boundsPeriod"] = {k: v for k, v in zip(("start", "end"), bounds, strict=True) if v}
    if repeat:
        timing["repeat"] = repeat
    if code:
        timing["code"] = {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation", "code": code}
            ]
        }
    if timing:
        d["timing"] = timing
    if prn:
        d["asNeededBoolean"] = True
    if route is not None:
        d["route"] = route
    dar: dict[str, Any] = {}
    if value is not None:
        dar["doseQuantity"] = qty(value, unit)
    if rate is not None:
        dar.update(rate)
    if dar:
        d["doseAndRate"] = [dar]
    if max_per_period is not None:
        d["maxDosePerPeriod"] = max_per_period
    return d


def med_request(
    id_: str,
    *dosages: dict[str, Any],
    status: str = "draft",
    med: dict[str, Any] | None = None,
    authored: str | None = None,
    prior: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    r: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": id_,
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": med if med is not None else BACLOFEN_20,
        "subject": {"reference": "Patient/pat-1"},
        "authoredOn": authored or iso(NOW)[:10],
        "dosageInstruction": list(dosages) if dosages else [dosage()],
    }
    if prior:
        r["priorPrescription"] = {"reference": f"MedicationRequest/{prior}"}
    r.update(extra)
    return r


def patient(gender: str | None = "male", birth: str = "1971-03-02") -> dict[str, Any]:
    p: dict[str, Any] = {"resourceType": "Patient", "id": "pat-1", "birthDate": birth}
    if gender:
        p["gender"] = gender
    return p


def born_years_ago(age: int) -> str:
    """A birth date giving exactly ``age`` completed years at NOW."""
    return f"{NOW.year - age}-01-15"


def observation(
    id_: str,
    code: str,
    value: float,
    unit: str,
    *,
    when: str | None = None,
    system: str = LOINC,
    ucum_code: str | None = None,
    status: str = "final",
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": id_,
        "status": status,
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": "Patient/pat-1"},
        "effectiveDateTime": when or days_ago(1),
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": ucum_code or unit},
    }


def weight(kg: float, *, when: str | None = None, id_: str = "wt") -> dict[str, Any]:
    return observation(id_, "29463-7", kg, "kg", when=when)


def height(cm: float, *, when: str | None = None, id_: str = "ht") -> dict[str, Any]:
    return observation(id_, "8302-2", cm, "cm", when=when)


def creatinine(
    value: float,
    unit: str = "mg/dL",
    *,
    when: str | None = None,
    id_: str = "cr",
    code: str = "2160-0",
) -> dict[str, Any]:
    return observation(id_, code, value, unit, when=when)


def condition(
    id_: str,
    code: str,
    system: str = SCT,
    *,
    status: str | None = "active",
    onset: str | None = None,
    text: str | None = None,
) -> dict[str, Any]:
    c: dict[str, Any] = {
        "resourceType": "Condition",
        "id": id_,
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": "Patient/pat-1"},
    }
    if text:
        c["code"]["text"] = text
    if status:
        c["clinicalStatus"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": status,
                }
            ]
        }
    if onset:
        c["onsetDateTime"] = onset
    return c


def facts_for(
    drafts: list[dict[str, Any]] | None = None,
    resources: list[dict[str, Any]] | None = None,
    *,
    hook: str = "order-sign",
    selections: list[str] | None = None,
    encounter_id: str | None = None,
    now: datetime = NOW,
    params: ClinicalParams = PARAMS,
) -> ClinicalFacts:
    res = list(resources or [])
    if not any(r.get("resourceType") == "Patient" for r in res if isinstance(r, dict)):
        res.append(patient())
    return extract_facts(
        HookInput(
            hook=hook,
            patient_id="pat-1",
            encounter_id=encounter_id,
            draft_orders=list(drafts or []),
            selections=selections,
            resources=res,
        ),
        now=now,
        params=params,
        drug=drug(),
    )


def example_input(name: str) -> HookInput:
    """A HookInput from one of the example hook requests copied under fhir/examples/."""
    doc = json.loads((data_dir("fhir") / "examples" / f"{name}.json").read_text())
    resources: list[dict[str, Any]] = []
    for value in (doc.get("prefetch") or {}).values():
        if value.get("resourceType") == "Bundle":
            resources.extend(e["resource"] for e in value.get("entry", []))
        else:
            resources.append(value)
    ctx = doc["context"]
    drafts = [e["resource"] for e in (ctx.get("draftOrders") or {}).get("entry", [])]
    return HookInput(
        hook=doc["hook"],
        patient_id=ctx["patientId"],
        encounter_id=ctx.get("encounterId"),
        draft_orders=drafts,
        selections=ctx.get("selections"),
        resources=resources,
    )
