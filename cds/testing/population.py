"""A synthetic population as a Bulk Data export, built with the testing kit's builders.

For tests and benchmarks: every patient follows a *scenario* chosen so that each kind of
patient-view rule can fire (renal drift on the current regimen, AKI, an overdue
intrathecal refill, fever with a pump, low respiratory rate) beside patients with nothing
to say (none of the drug, a stable regimen, years of history outside the look-back
window). Scenario numbers come from the patient-view vignettes of the first pack, whose
drug has oral 10 and 20 mg tablets (``tab10``, ``tab20``) and an intrathecal route: the
drug is that pack's (:func:`scenario_drug`), or the one given, named by its product keys.
Resources are real FHIR R4 JSON from ``cds.testing.builders``; some orders name their
product through a shared ``Medication`` resource, as EHR exports do, and some patients carry
home-medication statements, unrelated drugs, labs and conditions.

``write_export`` writes ``Patient.ndjson``, ``Medication.ndjson`` and the other types,
splitting a type over ``Type.000.ndjson``, ``Type.001.ndjson``... like ``$export``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cds.testing import builders as b
from cds.testing.formulary import Formulary, PackDrug, default_formulary

#: scenario -> (weight, the card category and indicator a patient-view call gives, or None)
SCENARIOS: dict[str, tuple[int, tuple[str, str] | None]] = {
    "no-drug": (55, None),
    "stable": (14, None),
    "long-history": (5, None),
    "renal-drift": (6, ("renal-adjustment", "warning")),
    "renal-drift-critical": (4, ("renal-adjustment", "critical")),
    "aki": (4, ("renal-adjustment", "warning")),
    "itb-refill-overdue": (4, ("withdrawal-risk", "critical")),
    "itb-fever": (3, ("withdrawal-risk", "warning")),
    "low-respiratory-rate": (5, ("side-effect", "warning")),
}
#: The products the scenarios order (keys of the drug's product table), shared in the
#: export as Medication resources (an export's formulary) referenced by some orders.
SHARED_PRODUCTS = ("tab10", "tab20")


def scenario_drug() -> PackDrug:
    """The first shipped pack's drug that has what the scenarios order: the shared
    products and an intrathecal route."""
    for drug in default_formulary().drugs:
        keys = {p.key for p in drug.products}
        if "intrathecal" in drug.routes and set(SHARED_PRODUCTS) <= keys:
            return drug
    raise LookupError("no shipped pack has the products and routes the scenarios need")


def shared_medications(drug: PackDrug | None = None) -> dict[str, dict[str, Any]]:
    """The shared Medication resources (``med-tab10``...), by product key."""
    drug = drug or scenario_drug()
    out = {}
    for key in SHARED_PRODUCTS:
        product = drug.product(key)
        out[key] = {
            "resourceType": "Medication",
            "id": f"med-{key}",
            "code": {"coding": [product.concept.coding()], "text": product.concept.display},
        }
    return out


_NOISE_DRUGS = ("amitriptyline", "levetiracetam", "lithium", "levodopa")
_NOISE_CONDITIONS = ("epilepsy", "stroke", "esrd")


@dataclass
class SyntheticPatient:
    id: str
    scenario: str
    resources: list[dict[str, Any]] = field(default_factory=list)

    @property
    def expected(self) -> tuple[str, str] | None:
        return SCENARIOS[self.scenario][1]


def _ids(resources: list[dict[str, Any]], pid: str) -> None:
    """Ids unique across the export (the builders reuse ``wt-1``, ``cr-1``...)."""
    for i, res in enumerate(resources):
        if res["resourceType"] != "Patient":
            res["id"] = f"{pid}-{res['resourceType'][:3].lower()}-{i}"


def _order(
    pid: str,
    rid: str,
    now: datetime,
    *,
    product: str,
    dose: float,
    frequency: int,
    start_days: float,
    shared_medication: bool,
    status: str = "active",
    end_days: float | None = None,
    formulary: Formulary | None = None,
) -> dict[str, Any]:
    start = now - timedelta(days=start_days)
    end = now - timedelta(days=end_days) if end_days is not None else None
    res = b.medication_request(
        rid=rid,
        pid=pid,
        status=status,
        product=product,
        authored=start,
        dosages=[b.dosage(dose=dose, frequency=frequency, start=start, end=end)],
        formulary=formulary,
    )
    if shared_medication:
        del res["medicationCodeableConcept"]
        res["medicationReference"] = {"reference": f"Medication/med-{product}"}
    return res


def _pump(pid: str, now: datetime, refill_due_days_ago: float, drug: PackDrug) -> dict[str, Any]:
    return b.medication_request(
        rid=f"{pid}-pump",
        pid=pid,
        product=drug.product("ingredient"),
        text=f"{drug.name} 500 mcg/mL intrathecal solution (implanted pump)",
        authored=now - timedelta(days=200),
        validity_end=(now - timedelta(days=refill_due_days_ago)).date(),
        dosages=[b.dosage(dose=None, rate_per_day=450, unit="ug", route="intrathecal")],
    )


def _statement(pid: str, now: datetime) -> dict[str, Any]:
    return {
        "resourceType": "MedicationStatement",
        "id": f"{pid}-home",
        "status": "active",
        "medicationCodeableConcept": {
            "coding": [b.coding(b.RXNORM, *b.OTHER_DRUGS["pregabalin"][:2])],
            "text": "pregabalin",
        },
        "subject": {"reference": f"Patient/{pid}"},
        "effectivePeriod": {"start": b.iso(now - timedelta(days=300))},
    }


def build_patient(
    pid: str, scenario: str, now: datetime, rng: random.Random, drug: PackDrug | None = None
) -> SyntheticPatient:
    """One patient of ``scenario`` at the instant ``now`` (``drug``: see :func:`scenario_drug`)."""
    drug = drug or scenario_drug()
    formulary = Formulary((drug,))
    days, hours = (lambda d: now - timedelta(days=d)), (lambda h: now - timedelta(hours=h))
    res: list[dict[str, Any]] = [b.patient(pid=pid, now=now, age=55, sex="male")]
    res.append(b.weight(80, days(2), pid=pid))
    shared = rng.random() < 0.5
    if scenario == "no-drug":
        res.append(b.creatinine(round(rng.uniform(0.7, 1.6), 2), "mg/dL", days(30), pid=pid))
        other = rng.choice(_NOISE_DRUGS)
        res.append(
            b.medication_request(
                rid=f"{pid}-rx", pid=pid, drug=other, authored=days(100),
                dosages=[b.dosage(dose=10, frequency=1)],
            )
        )  # fmt: skip
    elif scenario == "stable":
        res.append(b.creatinine(0.9, "mg/dL", days(20), pid=pid))
        res.append(
            _order(pid, f"{pid}-rx", now, product="tab10", dose=10, frequency=3,
                   start_days=300, shared_medication=shared, formulary=formulary)
        )  # fmt: skip
    elif scenario == "long-history":
        for k in range(1, 9):  # four years of yearly-ish results, most outside the window
            res.append(b.creatinine(0.9, "mg/dL", days(180 * k + 5), pid=pid))
        res.append(b.creatinine(0.9, "mg/dL", days(40), pid=pid))
        res.append(
            _order(pid, f"{pid}-old", now, product="tab20", dose=20, frequency=4,
                   start_days=1500, status="stopped", end_days=1200, shared_medication=False,
                   formulary=formulary)
        )  # fmt: skip
        res.append(
            _order(pid, f"{pid}-rx", now, product="tab10", dose=10, frequency=3,
                   start_days=400, shared_medication=shared, formulary=formulary)
        )  # fmt: skip
    elif scenario in ("renal-drift", "renal-drift-critical"):
        latest = 2.0 if scenario == "renal-drift" else 4.0
        res.append(b.creatinine(0.9, "mg/dL", days(365), pid=pid))
        res.append(b.creatinine(round((0.9 + latest) / 2, 2), "mg/dL", days(180), pid=pid))
        res.append(b.creatinine(latest, "mg/dL", days(2), pid=pid))
        dose = 20 if scenario == "renal-drift" else 10
        res.append(
            _order(pid, f"{pid}-rx", now, product=f"tab{dose}", dose=dose, frequency=3,
                   start_days=360, shared_medication=shared, formulary=formulary)
        )  # fmt: skip
    elif scenario == "aki":
        res.append(b.creatinine(0.9, "mg/dL", hours(30), pid=pid))
        res.append(b.creatinine(1.3, "mg/dL", hours(6), pid=pid))
        res.append(
            _order(pid, f"{pid}-rx", now, product="tab10", dose=10, frequency=3,
                   start_days=60, shared_medication=shared, formulary=formulary)
        )  # fmt: skip
    elif scenario in ("itb-refill-overdue", "itb-fever"):
        res.append(b.creatinine(0.9, "mg/dL", days(2), pid=pid))
        if scenario == "itb-refill-overdue":
            res.append(_pump(pid, now, refill_due_days_ago=rng.choice([1, 3, 10]), drug=drug))
        else:
            res.append(_pump(pid, now, refill_due_days_ago=-30, drug=drug))
            res.append(b.vital("temperature", 38.4, hours(3), pid=pid))
    elif scenario == "low-respiratory-rate":
        res.append(b.creatinine(0.9, "mg/dL", days(2), pid=pid))
        res.append(b.vital("resp_rate", 10, hours(1), pid=pid))
        res.append(
            _order(pid, f"{pid}-rx", now, product="tab20", dose=20, frequency=3,
                   start_days=200, shared_medication=shared, formulary=formulary)
        )  # fmt: skip
    else:
        raise ValueError(f"unknown scenario {scenario!r}")
    # Noise every chart has: vitals, a condition, a home medication, an old encounter.
    res.append(b.vital("sbp", rng.randint(105, 150), days(rng.randint(3, 200)), pid=pid))
    if rng.random() < 0.3 and scenario not in ("itb-fever",):
        res.append(b.condition(rng.choice(_NOISE_CONDITIONS[:2]), pid=pid, onset=days(900)))
    if rng.random() < 0.2 and not scenario.startswith("itb"):
        res.append(_statement(pid, now))
    if rng.random() < 0.3:
        enc = b.encounter(f"{pid}-enc", klass="AMB", pid=pid)
        enc["status"] = "finished"
        enc["period"] = {"start": b.iso(days(500)), "end": b.iso(days(500))}
        res.append(enc)
    _ids(res, pid)
    return SyntheticPatient(id=pid, scenario=scenario, resources=res)


def generate(
    n: int, *, now: datetime, seed: int = 0, prefix: str = "pt", drug: PackDrug | None = None
) -> Iterator[SyntheticPatient]:
    """``n`` patients, scenarios drawn by weight; the first patients cover every scenario
    (``drug``: see :func:`scenario_drug`)."""
    drug = drug or scenario_drug()
    rng = random.Random(seed)
    names = list(SCENARIOS)
    weights = [SCENARIOS[s][0] for s in names]
    width = max(6, len(str(n)))
    for i in range(n):
        scenario = names[i] if i < len(names) else rng.choices(names, weights)[0]
        yield build_patient(f"{prefix}{i:0{width}d}", scenario, now, rng, drug)


def write_export(
    folder: Path,
    patients: Iterable[SyntheticPatient],
    *,
    lines_per_file: int = 200_000,
    drug: PackDrug | None = None,
) -> dict[str, int]:
    """Write the patients as ``$export`` NDJSON files (the shared Medications of
    ``drug``, see :func:`scenario_drug`, first); resources written per type."""
    folder.mkdir(parents=True, exist_ok=True)
    handles: dict[str, Any] = {}
    counts: dict[str, int] = {}

    def write(res: dict[str, Any]) -> None:
        rtype = res["resourceType"]
        n = counts.get(rtype, 0)
        if n % lines_per_file == 0:
            if rtype in handles:
                handles[rtype].close()
            handles[rtype] = (folder / f"{rtype}.{n // lines_per_file:03d}.ndjson").open(
                "w", encoding="utf-8"
            )
        handles[rtype].write(json.dumps(res, separators=(",", ":")) + "\n")
        counts[rtype] = n + 1

    try:
        for med in shared_medications(drug).values():
            write(med)
        for p in patients:
            for res in p.resources:
                write(res)
    finally:
        for fh in handles.values():
            fh.close()
    return counts
