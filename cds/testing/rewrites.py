"""Request surgery: the same request with one thing changed, for the invariants to compare.

Each rewrite returns a deep copy. Those about doses and schedules touch only the orders of
the packs' drugs (``drugs``: :class:`~cds.testing.formulary.PackDrug`, recognised the way
the clinical layer recognises them, by the identity and family ValueSets); the rest of
the chart (other drugs, labs, problems) is left as written.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from cds.clinical.units import mass_unit
from cds.testing import strategies as strat
from cds.testing.formulary import Concept, PackDrug

JSON = dict[str, Any]
Drugs = PackDrug | Sequence[PackDrug]

__all__ = [
    "MAX_CREATININE_MG_DL",
    "UNIT_REWRITES",
    "add_interacting_drug",
    "all_resources",
    "bundle_resources",
    "creatinine_in_other_unit",
    "doses_in_micrograms",
    "drug_orders",
    "lower_renal_function",
    "raise_doses",
    "shuffled",
    "timing_in_other_form",
]

UCUM = "http://unitsofmeasure.org"


def bundle_resources(value: Any) -> list[JSON]:
    """The resources of a Bundle (or the resource itself; nothing for anything else)."""
    if isinstance(value, dict) and value.get("resourceType") == "Bundle":
        return [
            e["resource"]
            for e in value.get("entry") or []
            if isinstance(e, dict) and isinstance(e.get("resource"), dict)
        ]
    if isinstance(value, dict) and isinstance(value.get("resourceType"), str):
        return [value]
    return []


def all_resources(request: JSON) -> list[JSON]:
    """Every resource of the prefetch and the draft orders."""
    out = [r for v in (request.get("prefetch") or {}).values() for r in bundle_resources(v)]
    out += bundle_resources((request.get("context") or {}).get("draftOrders"))
    return out


def _as_list(drugs: Drugs) -> list[PackDrug]:
    return [drugs] if isinstance(drugs, PackDrug) else list(drugs)


def drug_orders(request: JSON, drugs: Drugs) -> list[JSON]:
    """The MedicationRequests and MedicationStatements (drafts, prefetch) of ``drugs``."""
    resources = all_resources(request)
    meds = {str(r.get("id")): r for r in resources if r.get("resourceType") == "Medication"}
    wanted = _as_list(drugs)
    return [
        r
        for r in resources
        if r.get("resourceType") in ("MedicationRequest", "MedicationStatement")
        and any(d.matches(r, meds) for d in wanted)
    ]


def _dose_quantities(med: JSON) -> Iterator[JSON]:
    """Every dose-bearing Quantity of an order: doses, ranges, rates and PRN maxima."""
    for d in med.get("dosageInstruction") or med.get("dosage") or []:
        for dr in d.get("doseAndRate") or []:
            for key in ("doseQuantity", "rateQuantity"):
                if isinstance(dr.get(key), dict):
                    yield dr[key]
            rng = dr.get("doseRange") or {}
            for key in ("low", "high"):
                if isinstance(rng.get(key), dict):
                    yield rng[key]
        num = (d.get("maxDosePerPeriod") or {}).get("numerator")
        if isinstance(num, dict):
            yield num


def _observations(request: JSON, loincs: Iterable[str]) -> list[JSON]:
    wanted = set(loincs)
    return [
        r
        for r in all_resources(request)
        if r.get("resourceType") == "Observation"
        and any(c.get("code") in wanted for c in (r.get("code") or {}).get("coding") or [])
    ]


def doses_in_micrograms(request: JSON, drugs: Drugs) -> JSON:
    """The request with every dose of ``drugs`` written in mg (or mg/d) rewritten in ug
    (x 1000), and every dose in ug or mcg rewritten in mg: the same doses, other units."""
    out = copy.deepcopy(request)
    for med in drug_orders(out, drugs):
        for q in _dose_quantities(med):
            unit = str(q.get("code") or q.get("unit") or "")
            num, _, per = unit.partition("/")
            mass = mass_unit(num)
            if mass == "mg":
                q.update(value=q["value"] * 1000, unit=f"ug/{per}" if per else "ug")
            elif mass == "ug":
                q.update(value=q["value"] / 1000, unit=f"mg/{per}" if per else "mg")
            else:
                continue
            q["system"], q["code"] = UCUM, q["unit"]
    return out


_CREATININE_SWAP = {
    "2160-0": "14682-9",
    "38483-4": "59826-8",
    "14682-9": "2160-0",
    "59826-8": "38483-4",
}


def creatinine_in_other_unit(request: JSON, drugs: Drugs = ()) -> JSON:
    """The request with each creatinine in the other unit: mg/dL x 88.4 = umol/L
    (``drugs`` is unused: every rewrite takes the same arguments)."""
    out = copy.deepcopy(request)
    for obs in _observations(out, _CREATININE_SWAP):
        q = obs.get("valueQuantity") or {}
        coding = obs["code"]["coding"]
        mg = (q.get("code") or q.get("unit")) == "mg/dL"
        q["value"] = q["value"] * strat.UMOL_PER_MG_DL if mg else q["value"] / strat.UMOL_PER_MG_DL
        q["unit"] = q["code"] = "umol/L" if mg else "mg/dL"
        for c in coding:
            c["code"] = _CREATININE_SWAP.get(c.get("code"), c.get("code"))
            c.pop("display", None)
    return out


_REPEAT_OF_CODE = {code: v[2] for code, v in strat.SCHEDULES.items()}
_CODE_OF_REPEAT: dict[tuple[int, float, str], tuple[str, str]] = {}
for _code, _v in strat.SCHEDULES.items():
    _CODE_OF_REPEAT.setdefault(_v[2], (_code, _v[1]))


def timing_in_other_form(request: JSON, drugs: Drugs) -> JSON:
    """The request with each schedule of ``drugs`` written the other way: ``timing.code``
    TID as ``timing.repeat`` 3 per 1 d, and a plain repeat as its code."""
    out = copy.deepcopy(request)
    for med in drug_orders(out, drugs):
        for d in med.get("dosageInstruction") or med.get("dosage") or []:
            timing = d.get("timing")
            if not isinstance(timing, dict):
                continue
            repeat = timing.get("repeat") or {}
            codes = [c.get("code") for c in (timing.get("code") or {}).get("coding") or []]
            if codes and codes[0] in _REPEAT_OF_CODE:
                freq, period, unit = _REPEAT_OF_CODE[codes[0]]
                del timing["code"]
                repeat.update(frequency=freq, period=period, periodUnit=unit)
                timing["repeat"] = repeat
                continue
            plain = (repeat.get("frequency"), repeat.get("period"), repeat.get("periodUnit"))
            if set(repeat) - {"frequency", "period", "periodUnit", "boundsPeriod"}:
                continue
            if plain in _CODE_OF_REPEAT:
                code, system = _CODE_OF_REPEAT[plain]
                for k in ("frequency", "period", "periodUnit"):
                    repeat.pop(k)
                if not repeat:
                    timing.pop("repeat")
                timing["code"] = {"coding": [{"system": system, "code": code}]}
    return out


UNIT_REWRITES: tuple[tuple[str, Callable[[JSON, Drugs], JSON]], ...] = (
    ("doses mg <-> ug", doses_in_micrograms),
    ("creatinine mg/dL <-> umol/L", creatinine_in_other_unit),
    ("timing.code <-> timing.repeat", timing_in_other_form),
)


def raise_doses(request: JSON, factor: float, drugs: Drugs) -> JSON:
    """Every dose of ``drugs`` (drafts, active orders, home medication) times ``factor``."""
    out = copy.deepcopy(request)
    for med in drug_orders(out, drugs):
        for q in _dose_quantities(med):
            if isinstance(q.get("value"), int | float):
                q["value"] = q["value"] * factor
    return out


_CREATININE = ("2160-0", "38483-4", "14682-9", "59826-8")
_CLEARANCE = ("2164-2", *strat.EGFR_LOINCS)
MAX_CREATININE_MG_DL = 20.0  # stay under the packs' plausibility bound (25 mg/dL)


def lower_renal_function(request: JSON, factor: float) -> JSON | None:
    """Creatinines times ``factor``, eGFRs and clearances divided by it; None when that
    would push a creatinine past :data:`MAX_CREATININE_MG_DL` (an implausible value is a
    data-quality card, not a worse kidney) or when there is no renal result to change."""
    out = copy.deepcopy(request)
    crs = _observations(out, _CREATININE)
    clears = _observations(out, _CLEARANCE)
    if not crs and not clears:
        return None
    for obs in crs:
        q = obs.get("valueQuantity") or {}
        mg = q["value"] if q.get("code") == "mg/dL" else q["value"] / strat.UMOL_PER_MG_DL
        if mg * factor > MAX_CREATININE_MG_DL:
            return None
        q["value"] = q["value"] * factor
    for obs in clears:
        obs["valueQuantity"]["value"] = obs["valueQuantity"]["value"] / factor
    return out


def add_interacting_drug(request: JSON, drug: str | Concept) -> JSON:
    """The request plus an order for ``drug`` (a Concept, e.g. from a pack's interacting
    class, or a name ``builders.medication_concept`` knows): a draft on order hooks,
    active otherwise."""
    from cds.testing import builders as b

    out = copy.deepcopy(request)
    ctx = out.setdefault("context", {})
    order = b.medication_request(
        rid="rx-added-1",
        drug=drug,
        status="draft" if "draftOrders" in ctx else "active",
        dosages=[b.dosage(dose=5, frequency=3)],
        pid=str(ctx.get("patientId", "pat-1")),
    )
    if "draftOrders" in ctx:
        ctx["draftOrders"].setdefault("entry", []).append({"resource": order})
    else:
        meds = (out.get("prefetch") or {}).get("medications")
        if not isinstance(meds, dict) or meds.get("resourceType") != "Bundle":
            return out  # no medication list to add it to: nothing to compare
        meds.setdefault("entry", []).append({"resource": order})
    return out


def shuffled(request: JSON, rng: random.Random) -> JSON:
    """The request with every prefetch Bundle's entries and the draft orders shuffled."""
    out = copy.deepcopy(request)
    for value in (out.get("prefetch") or {}).values():
        if isinstance(value, dict) and isinstance(value.get("entry"), list):
            rng.shuffle(value["entry"])
    drafts = (out.get("context") or {}).get("draftOrders")
    if isinstance(drafts, dict) and isinstance(drafts.get("entry"), list):
        rng.shuffle(drafts["entry"])
    return out
