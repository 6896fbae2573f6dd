"""Build real FHIR R4 resources and whole CDS Hooks requests from compact specs.

Vignettes and property tests describe a clinical situation in a few lines ("55 M, 80 kg,
creatinine 2.0 two days ago, 20 mg TID renewed"); these builders turn it into the JSON an
EHR would send, so every test goes through the same parsing as production. Times are
relative to an explicit ``now``.

Nothing here names a pack's drug: a product key (``tab10``, ``cap300``...), a pack's drug
name and a pack's local concept codes are looked up in the packs themselves
(``cds.testing.formulary``; by default every shipped pack, the vignette's own first).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cds.testing.formulary import Concept, Formulary, KitProduct

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
V3_ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
LOCAL = "https://posologic.example.org/fhir/CodeSystem/cds-local"

# Products of no pack, coded as some EHRs send them: key -> (RxNorm code, display). The
# packs' own products are looked up in their product tables (``cds.testing.formulary``).
OTHER_PRODUCTS: dict[str, tuple[str, str]] = {
    # another drug coded by RxNorm only (no ATC)
    "clonazepam-rxnorm": ("2598", "clonazepam 0.5 MG Oral Tablet"),
}
# Drugs of no pack: key -> (RxNorm ingredient, name, ATC). A pack's drug is named by its
# pack's ``drug.name`` (its ingredient codes come from its identity ValueSet).
OTHER_DRUGS: dict[str, tuple[str, str, str]] = {
    "oxycodone": ("7804", "oxycodone", "N02AA05"),
    "morphine": ("7052", "morphine", "N02AA01"),
    "lorazepam": ("6470", "lorazepam", "N05BA06"),
    "zolpidem": ("39993", "zolpidem", "N05CF02"),
    "pregabalin": ("187832", "pregabalin", "N02BF02"),
    "tizanidine": ("57258", "tizanidine", "M03BX02"),
    "levodopa": ("6375", "levodopa", "N04BA01"),
    "amitriptyline": ("704", "amitriptyline", "N06AA09"),
    "lithium": ("6448", "lithium", "N05AN01"),
    "levetiracetam": ("114477", "levetiracetam", "N03AX14"),
    "clonazepam": ("2598", "clonazepam", "N03AE01"),
    "hydromorphone": ("3423", "hydromorphone", "N02AA03"),
}
ROUTES = {
    "oral": (SNOMED, "26643006", "Oral route"),
    "intrathecal": (SNOMED, "72607000", "Intrathecal route"),
    "iv": (SNOMED, "47625008", "Intravenous route"),
    "nasogastric": (SNOMED, "127492001", "Nasogastric route"),
}
CONDITIONS: dict[str, tuple[str, str, str]] = {
    "haemodialysis": (SNOMED, "302497006", "Hemodialysis"),
    "esrd": (SNOMED, "46177005", "End-stage renal disease"),
    "ckd-5": (SNOMED, "433146000", "Chronic kidney disease stage 5"),
    "kidney-transplant": (SNOMED, "737295003", "Transplanted kidney present"),
    "epilepsy": (SNOMED, "84757009", "Epilepsy"),
    "seizure": (SNOMED, "91175000", "Seizure"),
    "cerebral-palsy": (SNOMED, "128188000", "Cerebral palsy"),
    "stroke": (SNOMED, "230690007", "Cerebrovascular accident"),
    "alcohol-use-disorder": (SNOMED, "7200002", "Alcoholism"),
    "delirium": (SNOMED, "2776000", "Delirium"),
    "pregnancy": (SNOMED, "77386006", "Pregnancy"),
    "confusion": (SNOMED, "286933003", "Confusional state"),
    "traumatic-brain-injury": (SNOMED, "127295002", "Traumatic brain injury"),
    "pruritus": (SNOMED, "418290006", "Itching"),
    "spasticity-increased": (LOCAL, "spasticity-increased", "Spasticity increased"),
}
# procedures / service requests: key -> (system, code, display)
PROCEDURES: dict[str, tuple[str, str, str]] = {
    "haemodialysis": (SNOMED, "302497006", "Hemodialysis"),
    "itb-pump-removal-cpt": (
        "http://www.ama-assn.org/go/cpt",
        "62365",
        "Removal of subcutaneous reservoir or pump, previously implanted for intrathecal or "
        "epidural infusion",
    ),
}
# UCUM annotations and words EHRs use for a count of the product's unit of presentation
COUNT_UNITS = ("{pill}", "{tablet}", "{tab}", "{capsule}", "tablet(s)", "TAB")
VITALS = {
    "resp_rate": ("9279-1", "Respiratory rate", "/min"),
    "spo2": ("2708-6", "Oxygen saturation in Arterial blood", "%"),
    "gcs": ("9269-2", "Glasgow coma score total", "{score}"),
    "sbp": ("8480-6", "Systolic blood pressure", "mm[Hg]"),
    "temperature": ("8310-5", "Body temperature", "Cel"),
    "gestational_age": ("49051-6", "Gestational age in weeks", "wk"),
    "crcl": ("2164-2", "Creatinine renal clearance in 24 hour Urine and Serum or Plasma", "mL/min"),
}
# observations coded outside LOINC: kind -> (system, code, display, unit)
OTHER_OBSERVATIONS: dict[str, tuple[str, str, str, str]] = {
    "rass": (SNOMED, "1345050000", "Richmond Agitation Sedation Scale score", "{score}"),
    "delirium_screen": (LOCAL, "delirium-screen", "Delirium screen result", ""),
}


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def coding(system: str, code: str, display: str) -> dict[str, Any]:
    return {"system": system, "code": code, "display": display}


def patient(
    *,
    pid: str = "pat-1",
    now: datetime,
    age: int | None = 55,
    sex: str | None = "male",
    birth_date: str | None = None,
) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Patient", "id": pid}
    if sex:
        res["gender"] = sex
    if birth_date:
        res["birthDate"] = birth_date
    elif age is not None:
        # a birthday 60 days before now, `age` years ago: completed years == age
        b = (now - timedelta(days=60)).date()
        try:
            res["birthDate"] = b.replace(year=b.year - age).isoformat()
        except ValueError:  # 29 February
            res["birthDate"] = (b - timedelta(days=1)).replace(year=b.year - age).isoformat()
    return res


def observation(
    *,
    loinc: str,
    display: str,
    value: float,
    unit: str,
    code: str | None = None,
    when: datetime,
    oid: str | None = None,
    pid: str = "pat-1",
    category: str = "laboratory",
    system: str = LOINC,
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid or f"obs-{uuid.uuid4().hex[:10]}",
        "status": "final",
        "category": [
            {
                "coding": [
                    coding(
                        "http://terminology.hl7.org/CodeSystem/observation-category",
                        category,
                        category.replace("-", " ").title(),
                    )
                ]
            }
        ],
        "code": {"coding": [coding(system, loinc, display)]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": iso(when),
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": code or unit},
    }


def weight(kg: float, when: datetime, pid: str = "pat-1", unit: str = "kg") -> dict[str, Any]:
    return observation(
        loinc="29463-7",
        display="Body weight",
        value=kg,
        unit=unit,
        when=when,
        pid=pid,
        category="vital-signs",
        oid="wt-1",
    )


def height(cm: float, when: datetime, pid: str = "pat-1") -> dict[str, Any]:
    return observation(
        loinc="8302-2",
        display="Body height",
        value=cm,
        unit="cm",
        when=when,
        pid=pid,
        category="vital-signs",
        oid="ht-1",
    )


def creatinine(
    value: float, unit: str | None, when: datetime, oid: str | None = None, pid: str = "pat-1"
) -> dict[str, Any]:
    if unit is None:  # a result sent without any unit (A5: never a silent guess)
        res = observation(
            loinc="2160-0",
            display="Creatinine [Mass/volume] in Serum or Plasma",
            value=value,
            unit="",
            when=when,
            oid=oid,
            pid=pid,
        )
        res["valueQuantity"] = {"value": value}
        return res
    loinc, display = (
        ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma")
        if unit == "mg/dL"
        else ("14682-9", "Creatinine [Moles/volume] in Serum or Plasma")
    )
    return observation(
        loinc=loinc,
        display=display,
        value=value,
        unit="umol/L" if unit != "mg/dL" else unit,
        when=when,
        oid=oid,
        pid=pid,
    )


def egfr(
    value: float, when: datetime, loinc: str = "98979-8", pid: str = "pat-1"
) -> dict[str, Any]:
    return observation(
        loinc=loinc,
        display="eGFR (CKD-EPI 2021)",
        value=value,
        unit="mL/min/{1.73_m2}",
        when=when,
        pid=pid,
    )


def vital(kind: str, value: float | bool, when: datetime, pid: str = "pat-1") -> dict[str, Any]:
    """A vital sign or score; ``kind`` is a key of VITALS or OTHER_OBSERVATIONS (a boolean
    value, e.g. a delirium screen, becomes ``valueBoolean``)."""
    if kind in VITALS:
        system = LOINC
        code, display, unit = VITALS[kind]
    else:
        system, code, display, unit = OTHER_OBSERVATIONS[kind]
    res = observation(
        loinc=code,
        display=display,
        value=value,
        unit=unit,
        when=when,
        pid=pid,
        category="vital-signs" if kind != "crcl" else "laboratory",
        system=system,
    )
    if isinstance(value, bool):
        del res["valueQuantity"]
        res["valueBoolean"] = value
    return res


def _formulary(formulary: Formulary | None) -> Formulary:
    if formulary is not None:
        return formulary
    from cds.testing.formulary import default_formulary

    return default_formulary()


def concept_for(
    key: str | Concept, table: dict[str, tuple[str, str, str]], formulary: Formulary | None
) -> tuple[str, str, str]:
    """(system, code, display) of a problem or procedure: a key of ``table``, a concept,
    else a concept code of a pack's terminology (a pack's own local codes)."""
    if not isinstance(key, str):
        return key.system, key.code, key.display
    if key in table:
        return table[key]
    found = _formulary(formulary).concept(key)
    if found is None:
        raise KeyError(f"no concept {key!r} (not in {sorted(table)} nor any pack's ValueSets)")
    return found.system, found.code, found.display


def medication_concept(
    *,
    product: str | KitProduct | None = None,
    drug: str | Concept | None = None,
    text: str | None = None,
    coded: bool = True,
    formulary: Formulary | None = None,
) -> dict[str, Any]:
    """A ``medicationCodeableConcept``: another drug (``drug``: a key of OTHER_DRUGS, a
    pack's drug name or a Concept) or a product (``product``: a key of OTHER_PRODUCTS,
    a pack product's key or code, or a KitProduct). ``coded=False``: the text alone."""
    if drug is not None:
        if not isinstance(drug, str):
            codings = [drug.coding()]
            name = drug.display
        elif drug in OTHER_DRUGS:
            code, name, atc = OTHER_DRUGS[drug]
            codings = [coding(RXNORM, code, name), coding(ATC, atc, name)]
        else:
            found = _formulary(formulary).drug_named(drug)
            if found is None:
                raise KeyError(f"no drug {drug!r} (not in OTHER_DRUGS nor any pack's drug)")
            name = found.name
            codings = [coding(c.system, c.code, name) for c in found.ingredient]
        return {"coding": codings, "text": name}
    key = product if product is not None else "tab20"
    if isinstance(key, str) and key in OTHER_PRODUCTS:
        code, display = OTHER_PRODUCTS[key]
        concept = coding(RXNORM, code, display)
    else:
        kit = _formulary(formulary).product(key) if isinstance(key, str) else key
        concept = kit.concept.coding()
        display = kit.concept.display
    if not coded:
        return {"text": text or display}
    return {"coding": [concept], "text": text or display}


def procedure(
    key: str | Concept,
    *,
    status: str = "completed",
    when: datetime | None = None,
    pid: str = "pat-1",
    resource_type: str = "Procedure",
    rid: str | None = None,
    formulary: Formulary | None = None,
) -> dict[str, Any]:
    """A Procedure (or, with ``resource_type="ServiceRequest"``, a planned one); ``key``
    as :func:`concept_for` reads it."""
    system, code, display = concept_for(key, PROCEDURES, formulary)
    res: dict[str, Any] = {
        "resourceType": resource_type,
        "id": rid or f"proc-{key if isinstance(key, str) else key.slug}",
        "status": status,
        "code": {"coding": [coding(system, code, display)], "text": display},
        "subject": {"reference": f"Patient/{pid}"},
    }
    if resource_type == "ServiceRequest":
        res["intent"] = "order"
    if when is not None:
        res["performedDateTime" if resource_type == "Procedure" else "occurrenceDateTime"] = iso(
            when
        )
    return res


def condition(
    key: str | Concept,
    *,
    pid: str = "pat-1",
    onset: datetime | None = None,
    cid: str | None = None,
    formulary: Formulary | None = None,
) -> dict[str, Any]:
    """An active Condition; ``key`` as :func:`concept_for` reads it."""
    system, code, display = concept_for(key, CONDITIONS, formulary)
    res: dict[str, Any] = {
        "resourceType": "Condition",
        "id": cid or f"cond-{key if isinstance(key, str) else key.slug}",
        "clinicalStatus": {
            "coding": [
                coding(
                    "http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active"
                )
            ]
        },
        "code": {"coding": [coding(system, code, display)], "text": display},
        "subject": {"reference": f"Patient/{pid}"},
    }
    if onset is not None:
        res["onsetDateTime"] = iso(onset)
    return res


def encounter(eid: str, klass: str = "IMP", pid: str = "pat-1") -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": eid,
        "status": "in-progress",
        "class": coding(V3_ACT, klass, klass),
        "subject": {"reference": f"Patient/{pid}"},
    }


def dosage(
    *,
    dose: float | None,
    unit: str = "mg",
    frequency: float | None = None,
    period: float = 1,
    period_unit: str = "d",
    timing_code: str | None = None,
    route: str | None = "oral",
    prn: bool = False,
    max_per_day: float | None = None,
    sequence: int | None = None,
    start: datetime | date | None = None,
    end: datetime | date | None = None,
    rate_per_day: float | None = None,
    text: str | None = None,
    event: datetime | None = None,
    unit_text: str | None = None,
) -> dict[str, Any]:
    """One Dosage. ``unit`` is the Quantity's UCUM ``code`` (``{pill}``, ``mg``...);
    ``unit_text`` its human ``unit`` when an EHR writes one that differs ("tablet(s)")."""
    d: dict[str, Any] = {}
    if sequence is not None:
        d["sequence"] = sequence
    if text:
        d["text"] = text
    timing: dict[str, Any] = {}
    if frequency is not None:
        timing["repeat"] = {"frequency": frequency, "period": period, "periodUnit": period_unit}
    if timing_code:
        timing["code"] = {
            "coding": [
                coding(
                    "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation",
                    timing_code,
                    timing_code,
                )
            ]
        }
    if start is not None:
        timing.setdefault("repeat", {})["boundsPeriod"] = {
            "start": start.date().isoformat() if isinstance(start, datetime) else str(start)
        }
        if end is not None:
            timing["repeat"]["boundsPeriod"]["end"] = (
                end.date().isoformat() if isinstance(end, datetime) else str(end)
            )
    if event is not None:
        timing["event"] = [iso(event)]
    if timing:
        d["timing"] = timing
    if prn:
        d["asNeededBoolean"] = True
        if max_per_day is not None:
            d["maxDosePerPeriod"] = {
                "numerator": {"value": max_per_day, "unit": unit, "system": UCUM, "code": unit},
                "denominator": {"value": 1, "unit": "d", "system": UCUM, "code": "d"},
            }
    if route:
        d["route"] = {"coding": [coding(*ROUTES[route])]}
    if rate_per_day is not None:
        d["doseAndRate"] = [
            {
                "rateQuantity": {
                    "value": rate_per_day,
                    "unit": f"{unit}/d",
                    "system": UCUM,
                    "code": f"{unit}/d",
                }
            }
        ]
    elif dose is not None:
        code = {"mcg": "ug"}.get(unit, unit)
        quantity: dict[str, Any] = {"value": dose, "unit": unit_text or unit}
        if not unit_text or unit != unit_text:
            quantity.update(system=UCUM, code=code)
        d["doseAndRate"] = [{"doseQuantity": quantity}]
    return d


def medication_request(
    *,
    rid: str,
    status: str = "active",
    product: str | KitProduct = "tab20",
    dosages: list[dict[str, Any]] | None = None,
    authored: datetime | date | None = None,
    pid: str = "pat-1",
    prior: str | None = None,
    drug: str | Concept | None = None,
    validity_end: date | None = None,
    text: str | None = None,
    status_reason: tuple[str, str, str] | None = None,
    coded: bool = True,
    formulary: Formulary | None = None,
) -> dict[str, Any]:
    """A MedicationRequest for ``product`` (or another ``drug``), as
    :func:`medication_concept` names it; ``coded=False`` names it by its text only.
    Product keys are looked up in ``formulary`` (default: every shipped pack)."""
    med = medication_concept(
        product=product, drug=drug or None, text=text, coded=coded, formulary=formulary
    )
    res: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": med,
        "subject": {"reference": f"Patient/{pid}"},
    }
    if authored is not None:
        res["authoredOn"] = (
            authored.date().isoformat() if isinstance(authored, datetime) else str(authored)
        )
    if dosages:
        res["dosageInstruction"] = dosages
    if prior:
        res["priorPrescription"] = {"reference": f"MedicationRequest/{prior}"}
    if validity_end is not None:
        res["dispenseRequest"] = {"validityPeriod": {"end": validity_end.isoformat()}}
    if status_reason:
        res["statusReason"] = {"coding": [coding(*status_reason)]}
    return res


def medication_statement(
    *,
    rid: str,
    status: str = "active",
    product: str | KitProduct = "tab20",
    dosages: list[dict[str, Any]] | None = None,
    start: datetime | date | None = None,
    pid: str = "pat-1",
    drug: str | Concept | None = None,
    based_on: str | None = None,
    asserted: datetime | None = None,
    formulary: Formulary | None = None,
) -> dict[str, Any]:
    """A home-use MedicationStatement (what the patient takes, known from the history)."""
    med = medication_concept(product=product, drug=drug or None, formulary=formulary)
    res: dict[str, Any] = {
        "resourceType": "MedicationStatement",
        "id": rid,
        "status": status,
        "medicationCodeableConcept": med,
        "subject": {"reference": f"Patient/{pid}"},
    }
    if start is not None:
        res["effectivePeriod"] = {
            "start": start.date().isoformat() if isinstance(start, datetime) else str(start)
        }
    if asserted is not None:
        res["dateAsserted"] = iso(asserted)
    if dosages:
        res["dosage"] = dosages
    if based_on:
        res["basedOn"] = [{"reference": f"MedicationRequest/{based_on}"}]
    return res


def bundle(resources: list[dict[str, Any]], kind: str = "searchset") -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": r} for r in resources],
    }


def hook_request(
    *,
    hook: str,
    now: datetime,
    patient_res: dict[str, Any],
    drafts: list[dict[str, Any]] | None = None,
    selections: list[str] | None = None,
    medications: Sequence[dict[str, Any]] = (),
    labs: Sequence[dict[str, Any]] = (),
    body: Sequence[dict[str, Any]] = (),
    vitals: Sequence[dict[str, Any]] = (),
    conditions: Sequence[dict[str, Any]] = (),
    encounter_res: dict[str, Any] | None = None,
    hook_instance: str | None = None,
    procedures: list[dict[str, Any]] | None = None,
    statements: Sequence[dict[str, Any]] | None = None,
    service_requests: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A whole CDS Hooks request with every prefetch key the service asks for.

    ``drafts`` may hold other draft resources than MedicationRequests (a ServiceRequest
    planning a procedure); ``selections`` defaults to every draft.
    """
    pid = patient_res["id"]
    context: dict[str, Any] = {"userId": "Practitioner/prac-1", "patientId": pid}
    if encounter_res is not None:
        context["encounterId"] = encounter_res["id"]
    if hook in ("order-select", "order-sign"):
        context["draftOrders"] = bundle(list(drafts or []), kind="collection")
    if hook == "order-select":
        context["selections"] = (
            selections
            if selections is not None
            else [f"{d['resourceType']}/{d['id']}" for d in (drafts or [])]
        )
    prefetch: dict[str, Any] = {
        "patient": patient_res,
        "medications": bundle(list(medications)),
        "medicationStatements": bundle(list(statements)) if statements else None,
        "renal": bundle(list(labs)),
        "weight": bundle(list(body)),
        "vitals": bundle(list(vitals)),
        "conditions": bundle(list(conditions)),
        "procedures": bundle(list(procedures)) if procedures is not None else None,
        "plannedProcedures": None,
        "serviceRequests": bundle(list(service_requests)) if service_requests else None,
        "encounter": encounter_res,
    }
    return {
        "hook": hook,
        "hookInstance": hook_instance or str(uuid.uuid4()),
        "context": context,
        "prefetch": prefetch,
    }
