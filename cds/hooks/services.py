"""The services this CDS service offers, and what each asks the EHR to prefetch.

The prefetch templates cover everything the rules read: the patient, medications (with
their Medication resources), home medications, renal labs, weight and height, recent
vitals, conditions, procedures (dialysis) and the encounter (inpatient or not). Only the
Patient and the medications are required: without them no rule can run (412).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cds.hooks.prefetch import PrefetchKey

RENAL_CODES = ",".join(
    f"http://loinc.org|{c}"
    for c in (
        "2160-0",
        "38483-4",
        "14682-9",
        "59826-8",
        "2164-2",
        "33914-3",
        "48642-3",
        "48643-1",
        "77147-7",
        "62238-1",
        "88293-6",
        "88294-4",
        "98979-8",
        "98980-6",
        "50384-7",
        "35591-7",
    )
)
BODY_CODES = ",".join(f"http://loinc.org|{c}" for c in ("29463-7", "3141-9", "8302-2"))
VITAL_CODES = ",".join(
    [
        f"http://loinc.org|{c}"
        for c in (
            "9279-1",
            "2708-6",
            "59408-5",
            "9269-2",
            "8480-6",
            "85354-9",
            "8310-5",
            "11884-4",
            "18185-9",
            "49051-6",
        )
    ]
    + ["http://snomed.info/sct|1345050000"]
)

PATIENT = "{{context.patientId}}"
COMMON: dict[str, PrefetchKey] = {
    "patient": PrefetchKey(f"Patient/{PATIENT}", required=True),
    "medications": PrefetchKey(
        f"MedicationRequest?patient={PATIENT}&_include=MedicationRequest:medication&_count=100",
        required=True,
    ),
    "medicationStatements": PrefetchKey(
        f"MedicationStatement?patient={PATIENT}&_count=100", required=False
    ),
    "renal": PrefetchKey(
        f"Observation?patient={PATIENT}&code={RENAL_CODES}&_sort=-date&_count=50", required=False
    ),
    "weight": PrefetchKey(
        f"Observation?patient={PATIENT}&code={BODY_CODES}&_sort=-date&_count=20", required=False
    ),
    "vitals": PrefetchKey(
        f"Observation?patient={PATIENT}&code={VITAL_CODES}&date=ge{{{{today() - 2 days}}}}"
        "&_sort=-date&_count=100",
        required=False,
    ),
    "conditions": PrefetchKey(f"Condition?patient={PATIENT}&_count=100", required=False),
    "procedures": PrefetchKey(
        f"Procedure?patient={PATIENT}&date=ge{{{{today() - 90 days}}}}&_count=100", required=False
    ),
    # planned procedures carry no performed date, so the dated search above misses them
    "plannedProcedures": PrefetchKey(
        f"Procedure?patient={PATIENT}&status=preparation,in-progress,on-hold&_count=100",
        required=False,
    ),
    "serviceRequests": PrefetchKey(
        f"ServiceRequest?patient={PATIENT}&status=draft,active,on-hold&_count=100",
        required=False,
    ),
    "encounter": PrefetchKey("Encounter/{{context.encounterId}}", required=False),
}


@dataclass(frozen=True)
class ServiceDef:
    id: str
    hook: str
    title: str
    description: str
    prefetch: dict[str, PrefetchKey]

    def discovery(self, version: str) -> dict[str, Any]:
        return {
            "version": version,
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "prefetch": {k: v.template for k, v in self.prefetch.items()},
            "usageRequirements": (
                "Send a JWT signed by a registered issuer (ES384 or RS384). Prefetch as listed "
                "or grant fhirAuthorization with read access to Patient, MedicationRequest, "
                "MedicationStatement, Medication, Observation, Condition, Procedure and "
                "Encounter. Cards cite the rule pack version that produced them."
            ),
        }


SERVICES: dict[str, ServiceDef] = {
    s.id: s
    for s in (
        ServiceDef(
            id="baclofen-order-select",
            hook="order-select",
            title="Baclofen dosing and safety (order select)",
            description=(
                "Checks the selected baclofen orders: route, dose ceilings, titration speed, "
                "renal dose adjustment, intrathecal dosing; and the regimen after signing for "
                "withdrawal risk, side effects and interactions."
            ),
            prefetch=COMMON,
        ),
        ServiceDef(
            id="baclofen-order-sign",
            hook="order-sign",
            title="Baclofen dosing and safety (order sign)",
            description=(
                "Checks every draft baclofen order before signing, including stops and "
                "reductions of a chronic regimen (withdrawal risk) with a taper suggestion."
            ),
            prefetch=COMMON,
        ),
        ServiceDef(
            id="baclofen-patient-view",
            hook="patient-view",
            title="Baclofen regimen review (chart open)",
            description=(
                "Reviews the active baclofen regimen against new renal results, overdue "
                "intrathecal pump refills and observations such as respiratory rate and "
                "sedation scores."
            ),
            prefetch=COMMON,
        ),
    )
}


def discovery_document(version: str) -> dict[str, Any]:
    """Discovery; each service carries ``version`` (CDS Hooks 3.0): the pack version(s)."""
    return {"services": [s.discovery(version) for s in SERVICES.values()]}
