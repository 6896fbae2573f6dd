"""Hypothesis strategies for valid FHIR R4 data and whole CDS Hooks requests.

Rule authors use these to property-test a pack (see ``cds.testing.invariants`` and
``rules/README.md``). Everything generated is valid FHIR R4 (it passes the
``fhir.resources.R4B`` models; ``tests/testing`` checks that) and clinically plausible:
ages, weights, doses and lab values a real chart could hold, with times relative to an
explicit evaluation instant ``now``, so the same example evaluates the same way forever.

Why many small strategies rather than one big generator: hypothesis shrinks each small
choice separately, so a failing example comes back as the *smallest* chart that still
fails (one order, one lab, round numbers), which is what a rule author needs to read.
Products, codes, units and timing forms are ``sampled_from`` tables, so shrinking moves
towards the first (most ordinary) entry: the pack's first tablet, mg, three times daily.

What is generated for a drug comes from the pack under test, never from this module: the
strategies that write the pack's drug take ``drug``, a
:class:`~cds.testing.formulary.PackDrug` (``drug_of(pack)``): its products (the product
table, by family), its ingredient, its routes (intrathecal orders only for a pack that
declares that route), its dose grain (``dose_step``), a drug of each of its interacting
classes and the problems of its condition ValueSets.

Building blocks, each parameterisable:

- :func:`patients` (a Patient) and :func:`patient_data` (Patient, weight, height and
  pregnancy, coherent with the age);
- :func:`dose_quantities`, :func:`timings`, :func:`dosages`, :func:`tapers`;
- :func:`drug_requests` (the pack's drug, on each route it declares; every dose unit and
  timing form the dose normaliser reads), :func:`interacting_requests` (the pack's
  interacting classes), :func:`drug_statements` (home medication);
- :func:`creatinines`, :func:`egfrs`, :func:`crcl_measured`, :func:`vitals`,
  :func:`conditions` (the pack's condition ValueSets), :func:`encounters`;
- :func:`hook_requests`: a whole request for any hook, with prefetch complete, partial,
  ``null`` or an OperationOutcome.

Settings profiles (``ci``: quick and derandomised; ``deep``: many random examples) are
registered here; :func:`active_settings` returns the one named by the environment
variable ``CDS_HYPOTHESIS_PROFILE`` (default ``ci``).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from cds.testing import builders as b
from cds.testing.formulary import Concept, KitProduct, PackDrug, pack_drug

JSON = dict[str, Any]

__all__ = [
    "DEFAULT_NOW",
    "HOOKS",
    "PATIENT_ID",
    "PREFETCH_KEYS",
    "REQUIRED_PREFETCH_KEYS",
    "SCHEDULES",
    "active_settings",
    "active_settings_name",
    "bundle",
    "chronic_changes",
    "conditions",
    "creatinines",
    "crcl_measured",
    "default_routes",
    "dosages",
    "dose_quantities",
    "drug_of",
    "drug_requests",
    "drug_statements",
    "egfrs",
    "encounters",
    "hook_requests",
    "interacting_drugs",
    "interacting_requests",
    "intrathecal_dosages",
    "operation_outcome",
    "oral_dose_mg",
    "patient_data",
    "patients",
    "prefetch_damage",
    "problems",
    "request_resources",
    "suggestion_requests",
    "tapers",
    "timings",
    "vitals",
]

# ---- settings profiles ---------------------------------------------------------------------

PROFILE_ENV = "CDS_HYPOTHESIS_PROFILE"
_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
# No "explain" phase: on a whole chart it costs more than the shrink and says less than
# the invariant's own message.
_PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]
# ci: derandomised so a CI run is reproducible (and a strict xfail cannot flip at random);
# few examples, because every example runs the whole pipeline several times.
settings.register_profile(
    "ci",
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,  # derandomised: nothing to replay, and no .hypothesis/ in the cwd
    phases=_PHASES,
    suppress_health_check=_HEALTH,
    print_blob=False,
)
# deep: what a rule author runs before a release, or overnight.
settings.register_profile(
    "deep",
    max_examples=400,
    deadline=None,
    phases=_PHASES,
    suppress_health_check=_HEALTH,
    print_blob=True,
)


def active_settings_name() -> str:
    """``$CDS_HYPOTHESIS_PROFILE``, else ``ci``."""
    return os.environ.get(PROFILE_ENV, "") or "ci"


def active_settings(name: str | None = None) -> settings:
    """The settings profile named ``name``, else by ``$CDS_HYPOTHESIS_PROFILE``, else ``ci``."""
    return settings.get_profile(name or active_settings_name())


# ---- constants -----------------------------------------------------------------------------

DEFAULT_NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
PATIENT_ID = "pat-1"
HOOK_INSTANCE = "5f0c2a4e-7a3b-4c1d-9e2f-000000000001"
HOOKS = ("order-sign", "order-select", "patient-view")
PREFETCH_KEYS = (
    "patient",
    "medications",
    "medicationStatements",
    "renal",
    "weight",
    "vitals",
    "conditions",
    "procedures",
    "encounter",
)
REQUIRED_PREFETCH_KEYS = frozenset({"patient", "medications"})
GTS = "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation"
LOCAL = "https://posologic.example.org/fhir/CodeSystem/cds-local"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
FHIR_BASE = "https://ehr.example.org/fhir"

# Schedules: administrations per day, the timing code (and its system), the equivalent
# timing.repeat (frequency, period, periodUnit) and, where natural, the `when` events.
SCHEDULES: dict[str, tuple[float, str, tuple[int, float, str], tuple[str, ...]]] = {
    "TID": (3, GTS, (3, 1, "d"), ("MORN", "AFT", "EVE")),
    "BID": (2, GTS, (2, 1, "d"), ("MORN", "EVE")),
    "QID": (4, GTS, (4, 1, "d"), ("MORN", "AFT", "EVE", "NIGHT")),
    "QD": (1, GTS, (1, 1, "d"), ("MORN",)),
    "Q8H": (3, GTS, (1, 8, "h"), ()),
    "Q6H": (4, GTS, (1, 6, "h"), ()),
    "Q4H": (6, GTS, (1, 4, "h"), ()),
    "Q12H": (2, LOCAL, (1, 12, "h"), ()),
    "QHS": (1, LOCAL, (1, 1, "d"), ("HS",)),
    "AM": (1, GTS, (1, 1, "d"), ("MORN",)),
    "BED": (1, GTS, (1, 1, "d"), ("HS",)),
    "QOD": (0.5, GTS, (1, 2, "d"), ()),
}
TIMING_FORMS = ("code", "repeat", "when", "frequencyMax")


# Products, doses, interacting drugs and problems come from the pack under test
# (``cds.testing.formulary.PackDrug``): nothing here names a drug.
ORAL_ROUTES = ("oral", "nasogastric", "gastrostomy", None)
ITB_WRONG_ROUTES = ("iv", "im", "sc", "epidural")
ROUTE_CODES: dict[str, tuple[str, str, str]] = {
    **b.ROUTES,
    "gastrostomy": (b.SNOMED, "127490009", "Gastrostomy route"),
    "im": (b.SNOMED, "78421000", "Intramuscular route"),
    "sc": (b.SNOMED, "34206005", "Subcutaneous route"),
    "epidural": (b.SNOMED, "404820008", "Epidural route"),
}

EGFR_LOINCS = (
    "98979-8",
    "33914-3",
    "48642-3",
    "48643-1",
    "77147-7",
    "62238-1",
    "88293-6",
    "88294-4",
    "98980-6",
    "50384-7",
)
# creatinine: (LOINC, unit) for serum/plasma and blood, mg/dL and umol/L
CREATININE_CODES = {
    ("serum", "mg/dL"): "2160-0",
    ("serum", "umol/L"): "14682-9",
    ("blood", "mg/dL"): "38483-4",
    ("blood", "umol/L"): "59826-8",
}
UMOL_PER_MG_DL = 88.4
ENCOUNTER_CLASSES = ("AMB", "IMP", "EMER", "ACUTE", "OBSENC", "NONAC", "HH")


def _ago(now: datetime, *, days: float = 0, hours: float = 0) -> datetime:
    return now - timedelta(days=days, hours=hours)


def _day(t: datetime) -> str:
    return t.date().isoformat()


def _num(x: float) -> float | int:
    """JSON number without float noise: 20.0 -> 20, 3.75 stays."""
    r = round(x, 6)
    return int(r) if r == int(r) else r


# ---- patients ------------------------------------------------------------------------------


def patients(
    *,
    now: datetime = DEFAULT_NOW,
    min_age: int = 18,
    max_age: int = 95,
    sexes: Sequence[str | None] = ("male", "female", "other", "unknown", None),
    pid: str = PATIENT_ID,
) -> SearchStrategy[JSON]:
    """A Patient aged ``min_age``..``max_age`` at ``now``; ``None`` in ``sexes``: no gender."""
    return st.builds(
        b.patient,
        pid=st.just(pid),
        now=st.just(now),
        age=st.integers(min_age, max_age),
        sex=st.sampled_from(list(sexes)),
    )


def _expected_weight(age: int, sex: str | None) -> float:
    """A median-ish weight for the age (kg): enough to keep examples plausible."""
    if age < 1:
        return 8.0
    if age < 13:
        return 8.0 + 2.5 * age
    if age < 18:
        return 40.0 + 5.0 * (age - 13)
    return 66.0 if sex == "female" else 78.0


def _expected_height(age: int, sex: str | None) -> float:
    if age < 18:
        return min(75.0 + 6.0 * age, 170.0)
    return 163.0 if sex == "female" else 176.0


def _patient_data(
    *,
    now: datetime,
    pid: str,
    age: int,
    sex: str | None,
    weight_factor: float | None,
    weight_days_ago: float,
    height_factor: float | None,
    pregnancy_weeks: int | None,
) -> dict[str, list[JSON]]:
    out: dict[str, list[JSON]] = {"patient": [b.patient(pid=pid, now=now, age=age, sex=sex)]}
    body = []
    if weight_factor is not None:
        kg = round(_expected_weight(age, sex) * weight_factor, 1)
        body.append(b.weight(kg, _ago(now, days=weight_days_ago), pid=pid))
    if height_factor is not None:
        cm = round(_expected_height(age, sex) * height_factor, 1)
        body.append(b.height(cm, _ago(now, days=weight_days_ago), pid=pid))
    out["weight"] = body
    if pregnancy_weeks is not None and sex == "female" and 15 <= age <= 48:
        out["conditions"] = [b.condition("pregnancy", pid=pid, cid="cond-pregnancy")]
        out["vitals"] = [
            {
                **b.observation(
                    loinc="11884-4",
                    display="Gestational age",
                    value=pregnancy_weeks,
                    unit="wk",
                    when=_ago(now, days=1),
                    pid=pid,
                    category="exam",
                ),
                "id": "obs-gestation",
            }
        ]
    return out


def patient_data(
    *,
    now: datetime = DEFAULT_NOW,
    min_age: int = 18,
    max_age: int = 95,
    sexes: Sequence[str | None] = ("male", "female", "other", "unknown", None),
    weight: bool | None = None,
    max_weight_days_ago: int = 120,
    pregnancy: bool | None = None,
    pid: str = PATIENT_ID,
) -> SearchStrategy[dict[str, list[JSON]]]:
    """Patient, weight and height (coherent with the age) and pregnancy, by prefetch key.

    ``weight``: True always, False never, None either (a missing weight is a real case:
    the mg/kg and Cockcroft-Gault paths must cope). ``pregnancy``: likewise; it only
    applies to women aged 15-48 (a Condition plus a gestational age Observation).
    """
    factor = st.integers(70, 160).map(lambda p: p / 100)
    weights = factor if weight else st.none() if weight is False else st.none() | factor
    weeks = st.integers(6, 40)
    preg = weeks if pregnancy else st.none() if pregnancy is False else st.none() | weeks
    return st.builds(
        _patient_data,
        now=st.just(now),
        pid=st.just(pid),
        age=st.integers(min_age, max_age),
        sex=st.sampled_from(list(sexes)),
        weight_factor=weights,
        weight_days_ago=st.integers(0, max_weight_days_ago),
        height_factor=st.none() | st.integers(92, 108).map(lambda p: p / 100),
        pregnancy_weeks=preg,
    )


# ---- the pack's drug -----------------------------------------------------------------------


def drug_of(packs: Any) -> PackDrug:
    """The drug the strategies generate for ``packs`` (a compiled pack, a registry or a
    list of packs: the first one's), read from the pack (see ``cds.testing.formulary``)."""
    from cds.engine.pack import CompiledPack

    if isinstance(packs, PackDrug):
        return packs
    if isinstance(packs, CompiledPack):
        return pack_drug(packs)
    if hasattr(packs, "packs"):
        packs = packs.packs()
    first = list(packs)[:1]
    if not first:
        raise ValueError("no pack to take the drug from")
    return pack_drug(first[0])


def _product(drug: PackDrug, product: str | KitProduct | None) -> KitProduct:
    """``product`` (a key, a code or a KitProduct), else the drug's first solid oral product
    in the regimen (else its first oral product)."""
    if isinstance(product, KitProduct):
        return product
    if product is not None:
        return drug.product(product)
    orals = drug.oral_products(in_regimen=True) or drug.oral_products()
    return next((p for p in orals if p.solid), orals[0])


def _solids(drug: PackDrug) -> tuple[KitProduct, ...]:
    """The drug's solid oral products in the regimen (tablets, capsules), by strength."""
    solids = [p for p in drug.oral_products(in_regimen=True) if p.solid]
    return tuple(sorted(solids, key=lambda p: p.strength or 0))


# ---- doses and timing ----------------------------------------------------------------------


def _quantity(value: float, unit: str, product: KitProduct | None = None) -> JSON:
    """A dose Quantity in a written unit (``mcg-text``: "mcg" as free text, no UCUM code;
    ``tablet``: a count of the product's units of presentation)."""
    if unit == "mcg-text":
        return {"value": _num(value), "unit": "mcg"}
    if unit == "tablet":
        count = product.count_unit if product is not None else "{tablet}"
        return {"value": _num(value), "unit": count.strip("{}"), "system": b.UCUM, "code": count}
    code = {"mcg": "ug"}.get(unit, unit)
    return {"value": _num(value), "unit": unit, "system": b.UCUM, "code": code}


def _written(mg: float, unit: str, product: KitProduct | None) -> tuple[float, str]:
    """``mg`` expressed in ``unit`` for ``product``; falls back to mg where it cannot be."""
    if unit in ("ug", "mcg", "mcg-text"):
        return mg * 1000, unit
    if unit == "tablet" and product is not None and product.solid and product.strength:
        count = mg / product.strength
        step = 2 if product.halves else 1  # whole units, or halves of a scored tablet
        if abs(count * step - round(count * step)) < 1e-9 and count > 0:
            return count, "tablet"
    if unit == "mL" and product is not None and product.per_ml and product.strength:
        return mg / product.strength, "mL"
    return mg, "mg"


def dose_quantities(
    *,
    drug: PackDrug,
    mg: SearchStrategy[float] | None = None,
    units: Sequence[str] = ("mg", "ug", "mcg", "mcg-text", "tablet", "mL"),
    product: str | KitProduct | None = None,
) -> SearchStrategy[JSON]:
    """An oral dose Quantity of one of ``drug``'s products: an amount in mg written as mg,
    ug, mcg, units of presentation (``tablet``) or mL."""
    kit = _product(drug, product)
    return st.builds(
        lambda amount, unit: _quantity(*_written(amount, unit, kit), kit),
        mg if mg is not None else oral_dose_mg(step=drug.dose_step),
        st.sampled_from(list(units)),
    )


def oral_dose_mg(*, step: float, small: bool = True) -> SearchStrategy[float]:
    """Oral per-administration doses in mg: multiples of ``step`` (a pack's
    ``PackDrug.dose_step``, half its smallest tablet) up to 12 steps, then rarer ones
    (16, 20 and 24 steps).

    ``small`` adds 0.2 and 0.4 steps (children, and the "10 mcg for 10 mg" slips the
    plausibility rules exist for).
    """
    common = st.integers(1, 12).map(lambda k: round(k * step, 6))
    rare = [16 * step, 20 * step, 24 * step] + ([0.2 * step, 0.4 * step] if small else [])
    return st.one_of(common, st.sampled_from([round(x, 6) for x in rare]))


def _timing(schedule: str, form: str, start: datetime | None, end: datetime | None) -> JSON:
    per_day, system, (freq, period, unit), events = SCHEDULES[schedule]
    repeat: JSON = {}
    timing: JSON = {}
    if form == "code":
        timing["code"] = {"coding": [{"system": system, "code": schedule, "display": schedule}]}
    elif form == "when" and events:
        repeat["when"] = list(events)
    elif form == "frequencyMax" and unit == "d" and period == 1 and freq > 1:
        repeat.update({"frequency": 1, "frequencyMax": freq, "period": 1, "periodUnit": "d"})
    else:
        repeat.update({"frequency": freq, "period": _num(period), "periodUnit": unit})
    if start is not None:
        bounds = {"start": _day(start)}
        if end is not None:
            bounds["end"] = _day(end)
        repeat["boundsPeriod"] = bounds
    if repeat:
        timing["repeat"] = repeat
    return timing


def timings(
    *,
    schedules: Sequence[str] = tuple(SCHEDULES),
    forms: Sequence[str] = TIMING_FORMS,
    start: datetime | None = None,
) -> SearchStrategy[JSON]:
    """A Timing: a schedule (TID, Q6H...) written as ``timing.code``, ``timing.repeat``
    frequency/period, ``when`` events or ``frequencyMax`` (where the schedule allows it)."""
    return st.builds(
        _timing,
        st.sampled_from(list(schedules)),
        st.sampled_from(list(forms)),
        st.just(start),
        st.none(),
    )


def _route(route: str | None) -> JSON | None:
    if route is None:
        return None
    return {"coding": [b.coding(*ROUTE_CODES[route])]}


def _oral_dosage(
    *,
    product: KitProduct | None,
    mg: float,
    unit: str,
    schedule: str,
    form: str,
    route: str | None,
    prn: str,
    dose_range: bool,
    start: datetime | None = None,
    end: datetime | None = None,
    sequence: int | None = None,
) -> JSON:
    value, written = _written(mg, unit, product)
    d: JSON = {}
    if sequence is not None:
        d["sequence"] = sequence
    timing = _timing(schedule, form, start, end)
    if prn == "bare":
        timing.pop("code", None)
        rep = {k: v for k, v in (timing.get("repeat") or {}).items() if k == "boundsPeriod"}
        timing = {"repeat": rep} if rep else {}
    if timing:
        d["timing"] = timing
    if prn != "no":
        d["asNeededBoolean"] = True
    if prn == "max":
        per_day = SCHEDULES[schedule][0]
        d["maxDosePerPeriod"] = {
            "numerator": _quantity(value * per_day, written, product),
            "denominator": {"value": 1, "unit": "d", "system": b.UCUM, "code": "d"},
        }
    if route is not None:
        d["route"] = _route(route)
    if dose_range:
        d["doseAndRate"] = [
            {
                "doseRange": {
                    "low": _quantity(value / 2, written, product),
                    "high": _quantity(value, written, product),
                }
            }
        ]
    else:
        d["doseAndRate"] = [{"doseQuantity": _quantity(value, written, product)}]
    return d


def dosages(
    *,
    drug: PackDrug,
    product: str | KitProduct | None = None,
    mg: SearchStrategy[float] | None = None,
    units: Sequence[str] = ("mg", "ug", "mcg", "mcg-text", "tablet", "mL"),
    schedules: Sequence[str] = tuple(SCHEDULES),
    forms: Sequence[str] = TIMING_FORMS,
    routes: Sequence[str | None] = ORAL_ROUTES,
    prn: Sequence[str] = ("no", "no", "no", "max", "freq", "bare"),
    dose_range: bool | None = None,
    start: datetime | SearchStrategy[datetime | None] | None = None,
) -> SearchStrategy[JSON]:
    """One oral Dosage of one of ``drug``'s products (default: its first tablet or
    capsule): dose (any unit, or a ``doseRange``), timing (any form), route, and PRN as
    ``no``, ``max`` (with ``maxDosePerPeriod``), ``freq`` (frequency only) or ``bare``
    (neither: the maximum is unknown). ``start`` (a datetime or a strategy of them)
    becomes ``timing.repeat.boundsPeriod.start``."""
    ranges = st.booleans() if dose_range is None else st.just(dose_range)
    starts = start if isinstance(start, SearchStrategy) else st.just(start)
    return st.builds(
        _oral_dosage,
        product=st.just(_product(drug, product)),
        mg=mg if mg is not None else oral_dose_mg(step=drug.dose_step),
        unit=st.sampled_from(list(units)),
        schedule=st.sampled_from(list(schedules)),
        form=st.sampled_from(list(forms)),
        route=st.sampled_from(list(routes)),
        prn=st.sampled_from(list(prn)),
        dose_range=ranges,
        start=starts,
    )


def _taper(
    *,
    now: datetime,
    product: KitProduct,
    step: float,
    mg: float,
    admins: int,
    steps: int,
    interval_days: int,
    unit: str,
    route: str | None,
) -> list[JSON]:
    """Sequenced instructions: two dose steps less per dose each step (never below one
    step), then fewer doses."""
    out = []
    dose, n = mg, admins
    for i in range(steps):
        start = now + timedelta(days=i * interval_days)
        end = start + timedelta(days=interval_days - 1)
        schedule = {1: "QD", 2: "BID", 3: "TID", 4: "QID"}[n]
        out.append(
            _oral_dosage(
                product=product,
                mg=dose,
                unit=unit,
                schedule=schedule,
                form="repeat",
                route=route,
                prn="no",
                dose_range=False,
                start=start,
                end=end if i < steps - 1 else None,
                sequence=i + 1,
            )
        )
        if dose > 2 * step + 1e-9:
            dose = round(max(dose - 2 * step, step), 6)
        elif n > 1:
            n -= 1
    return out


def tapers(
    *,
    drug: PackDrug,
    now: datetime = DEFAULT_NOW,
    product: str | KitProduct | None = None,
    units: Sequence[str] = ("mg", "tablet"),
    routes: Sequence[str | None] = ("oral", None),
) -> SearchStrategy[list[JSON]]:
    """A taper of one of ``drug``'s products: 2-5 sequenced ``dosageInstruction``s, each
    with a ``boundsPeriod``, from 2-8 dose steps per dose down."""
    step = drug.dose_step
    return st.builds(
        _taper,
        now=st.just(now),
        product=st.just(_product(drug, product)),
        step=st.just(step),
        mg=st.integers(2, 8).map(lambda k: round(k * step, 6)),
        admins=st.integers(2, 4),
        steps=st.integers(2, 5),
        interval_days=st.sampled_from([3, 7]),
        unit=st.sampled_from(list(units)),
        route=st.sampled_from(list(routes)),
    )


def _itb_dosage(*, ug: float, form: str, route: str | None) -> JSON:
    d: JSON = {}
    if route is not None:
        d["route"] = _route(route)
    if form == "bolus":  # a screening bolus: a dose, no timing
        d["doseAndRate"] = [{"doseQuantity": _quantity(ug, "ug")}]
        return d
    value, unit = {
        "ug/d": (ug, "ug/d"),
        "mcg/d": (ug, "mcg/d"),
        "mg/d": (ug / 1000, "mg/d"),
        "ug/h": (ug / 24, "ug/h"),
    }[form]
    q: JSON = {"value": _num(value), "unit": unit}
    if unit != "mcg/d":
        q.update({"system": b.UCUM, "code": unit})
    d["doseAndRate"] = [{"rateQuantity": q}]
    return d


def intrathecal_dosages(
    *,
    ug: SearchStrategy[float] | None = None,
    forms: Sequence[str] = ("ug/d", "mcg/d", "mg/d", "ug/h", "bolus"),
    routes: Sequence[str | None] = ("intrathecal", "intrathecal", None, *ITB_WRONG_ROUTES),
) -> SearchStrategy[JSON]:
    """An intrathecal Dosage: a pump rate (ug/d, mcg/d, mg/d or ug/h) or a screening bolus;
    the route is mostly intrathecal, sometimes absent or wrong (IV, IM, SC, epidural)."""
    amounts = (
        ug
        if ug is not None
        else st.sampled_from(
            [450.0, 100.0, 300.0, 600.0, 800.0, 1200.0, 50.0, 75.0, 2500.0, 300000.0]
        )
    )
    return st.builds(
        _itb_dosage,
        ug=amounts,
        form=st.sampled_from(list(forms)),
        route=st.sampled_from(list(routes)),
    )


# ---- medication orders ---------------------------------------------------------------------


def _med_request(
    *,
    rid: str,
    status: str,
    product: KitProduct | None = None,
    drug: Concept | None = None,
    dosage_list: list[JSON],
    authored: datetime | None,
    refill_due: datetime | None = None,
    status_reason: bool = False,
    text: str | None = None,
    pid: str = PATIENT_ID,
) -> JSON:
    res = b.medication_request(
        rid=rid,
        status=status,
        product=product if product is not None else "tab20",
        drug=drug,
        dosages=dosage_list or None,
        authored=authored,
        pid=pid,
        validity_end=refill_due.date() if refill_due else None,
        text=text,
        status_reason=(b.SNOMED, "281647001", "Adverse reaction") if status_reason else None,
    )
    if status == "draft":
        res["intent"] = "order"
    return res


def _oral_order(
    *,
    rid: str,
    status: str,
    product: KitProduct,
    dosage_list: list[JSON],
    authored: datetime | None,
    status_reason: bool,
) -> JSON:
    return _med_request(
        rid=rid,
        status=status,
        product=product,
        dosage_list=dosage_list,
        authored=authored,
        status_reason=status_reason and status in ("stopped", "cancelled", "on-hold"),
    )


def _itb_order(
    *,
    rid: str,
    status: str,
    product: KitProduct,
    pump_text: str,
    dosage: JSON,
    authored: datetime | None,
    refill_due: datetime | None,
) -> JSON:
    # a product with an intrathecal form speaks for itself; the bare ingredient is a pump
    text = None if product.route == "intrathecal" else pump_text
    return _med_request(
        rid=rid,
        status=status,
        product=product,
        dosage_list=[dosage],
        authored=authored,
        refill_due=refill_due,
        text=text,
    )


def default_routes(drug: PackDrug) -> tuple[str, ...]:
    """The routes to generate for ``drug``: its oral route three times, and each other
    route it declares (intrathecal) once."""
    return tuple(r for route in drug.routes for r in ([route] * 3 if route == "oral" else [route]))


def drug_requests(
    *,
    drug: PackDrug,
    now: datetime = DEFAULT_NOW,
    rid: str = "rx-1",
    routes: Sequence[str] | None = None,
    statuses: Sequence[str] = ("draft",),
    products: Sequence[str] | None = None,
    regimen_only: bool = False,
    units: Sequence[str] = ("mg", "ug", "mcg", "mcg-text", "tablet", "mL"),
    schedules: Sequence[str] = tuple(SCHEDULES),
    forms: Sequence[str] = TIMING_FORMS,
    prn: Sequence[str] = ("no", "no", "no", "max", "freq", "bare"),
    max_instructions: int = 2,
    allow_taper: bool = True,
    started_days_ago: tuple[int, int] | None = None,
    start_in_days: tuple[int, int] | None = None,
    mg: SearchStrategy[float] | None = None,
) -> SearchStrategy[JSON]:
    """A MedicationRequest for the pack's drug.

    Oral: a product of the pack's table (tablets, capsules, liquids, every family; with
    ``regimen_only`` only the families whose doses count in the regimen), or the bare
    ingredient; one or two concurrent instructions (scheduled and/or PRN) or a taper.
    Intrathecal (only when ``routes`` names it; by default when the pack declares that
    route): a pump rate or a bolus, with a refill due date. ``products`` restricts the
    products (keys of ``drug.products``). ``started_days_ago`` (a range) dates
    ``authoredOn`` (active orders: how long the regimen has run); None leaves it out (a
    draft). ``start_in_days`` (a range) sometimes dates ``boundsPeriod.start`` after
    ``now`` (a draft that takes effect later).
    """
    routes = tuple(routes) if routes is not None else default_routes(drug)
    starts: SearchStrategy[datetime | None] = (
        st.none() | st.integers(*start_in_days).map(lambda d: now + timedelta(days=d))
        if start_in_days
        else st.none()
    )
    authored: SearchStrategy[datetime | None] = (
        st.integers(*started_days_ago).map(lambda d: _ago(now, days=d))
        if started_days_ago
        else st.none()
    )
    if products is not None:
        orals = tuple(drug.product(k) for k in products)
    else:
        orals = drug.oral_products(in_regimen=True if regimen_only else None)

    def oral_for(product: KitProduct) -> SearchStrategy[JSON]:
        one = dosages(
            drug=drug,
            product=product,
            mg=mg,
            units=units,
            schedules=schedules,
            forms=forms,
            prn=prn,
            start=starts,
        )
        lists = st.lists(one, min_size=1, max_size=max_instructions)
        if allow_taper:
            lists = lists | tapers(drug=drug, now=now, product=product)
        return st.builds(
            _oral_order,
            rid=st.just(rid),
            status=st.sampled_from(list(statuses)),
            product=st.just(product),
            dosage_list=lists,
            authored=authored,
            status_reason=st.booleans(),
        )

    parts: list[SearchStrategy[JSON]] = []
    for route in routes:
        if route == "oral" and orals:
            # one_of over a list, not sampled_from(...).flatmap: flatmap shrinks badly.
            # (hypothesis flattens nested one_of: each oral product and route is a branch
            # of its own, as likely as the intrathecal one)
            parts.append(st.one_of([oral_for(p) for p in orals]))
        elif route == "intrathecal" and route in drug.routes:
            itb = [p for p in drug.intrathecal_products() if p.route != "intrathecal"]
            itb += [p for p in drug.intrathecal_products() if p.route == "intrathecal"]
            parts.append(
                st.builds(
                    _itb_order,
                    rid=st.just(rid),
                    status=st.sampled_from(list(statuses)),
                    product=st.sampled_from(itb),
                    pump_text=st.just(f"{drug.name} 500 mcg/mL intrathecal solution (pump)"),
                    dosage=intrathecal_dosages(),
                    authored=authored,
                    refill_due=st.none()
                    | st.integers(-10, 60).map(lambda d: now + timedelta(days=d)),
                )
            )
    if not parts:
        raise ValueError(f"pack {drug.pack_id!r} has no products on the routes {routes}")
    return st.one_of(parts)


def _other_order(*, rid: str, status: str, drug: Concept, mg: float, schedule: str) -> JSON:
    return _med_request(
        rid=rid,
        status=status,
        drug=drug,
        dosage_list=[
            _oral_dosage(
                product=None,
                mg=mg,
                unit="mg",
                schedule=schedule,
                form="repeat",
                route="oral",
                prn="no",
                dose_range=False,
            )
        ],
        authored=None,
    )


def interacting_drugs(
    drug: PackDrug, classes: Sequence[str] | None = None, *, comedications: bool = True
) -> SearchStrategy[Concept]:
    """A drug of one of the pack's interacting classes (each class as likely, a concept
    of its ValueSets), or, with ``comedications``, of a co-medication set of the pack
    that no class holds (an anticonvulsant beside the epilepsy rule)."""
    wanted = set(classes) if classes is not None else None
    parts = [
        st.sampled_from(list(cs))
        for name, cs in drug.interactions
        if wanted is None or name in wanted
    ]
    if comedications:
        in_classes = set(drug.interacting())
        extra = [c for _, cs in drug.comedications for c in cs if c not in in_classes]
        if extra:
            parts.append(st.sampled_from(list(dict.fromkeys(extra))))
    if not parts:
        raise ValueError(f"pack {drug.pack_id!r} has no interacting class in {classes}")
    return st.one_of(parts)


def interacting_requests(
    *,
    drug: PackDrug,
    rid: str = "rx-other-1",
    classes: Sequence[str] | None = None,
    statuses: Sequence[str] = ("draft", "active"),
    include_comedications: bool = True,
) -> SearchStrategy[JSON]:
    """A MedicationRequest for another drug: one of the pack's interacting classes
    (``classes``: their names, default all; see :func:`interacting_drugs`), coded as the
    class ValueSet codes it (RxNorm or ATC)."""
    return st.builds(
        _other_order,
        rid=st.just(rid),
        status=st.sampled_from(list(statuses)),
        drug=interacting_drugs(drug, classes, comedications=include_comedications),
        mg=st.sampled_from([5.0, 10.0, 2.0, 300.0]),
        schedule=st.sampled_from(["TID", "BID", "QD", "Q6H"]),
    )


def _statement(
    *, sid: str, now: datetime, product: KitProduct, mg: float, schedule: str, days: int
) -> JSON:
    return {
        "resourceType": "MedicationStatement",
        "id": sid,
        "status": "active",
        "medicationCodeableConcept": {
            "coding": [product.concept.coding()],
            "text": product.concept.display,
        },
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "effectivePeriod": {"start": _day(_ago(now, days=days))},
        "dosage": [
            _oral_dosage(
                product=product,
                mg=mg,
                unit="mg",
                schedule=schedule,
                form="repeat",
                route="oral",
                prn="no",
                dose_range=False,
            )
        ],
    }


def drug_statements(
    *, drug: PackDrug, now: datetime = DEFAULT_NOW, sid: str = "ms-1"
) -> SearchStrategy[JSON]:
    """A home-medication MedicationStatement for the pack's drug taken by mouth (its
    second-smallest tablet or capsule; counts for chronic use)."""
    solids = _solids(drug)
    product = solids[min(1, len(solids) - 1)] if solids else _product(drug, None)
    return st.builds(
        _statement,
        sid=st.just(sid),
        now=st.just(now),
        product=st.just(product),
        mg=oral_dose_mg(step=drug.dose_step, small=False),
        schedule=st.sampled_from(["TID", "BID", "QID"]),
        days=st.integers(1, 400),
    )


# ---- observations, conditions, encounter ---------------------------------------------------


def _creatinine(
    *, now: datetime, mg_dl: float, unit: str, specimen: str, hours_ago: float, pid: str
) -> JSON:
    loinc = CREATININE_CODES[(specimen, unit)]
    value = mg_dl if unit == "mg/dL" else round(mg_dl * UMOL_PER_MG_DL, 1)
    display = "Creatinine [Mass/volume]" if unit == "mg/dL" else "Creatinine [Moles/volume]"
    return b.observation(
        loinc=loinc,
        display=display,
        value=value,
        unit=unit,
        when=_ago(now, hours=hours_ago),
        oid="cr",
        pid=pid,
    )


def creatinines(
    *,
    now: datetime = DEFAULT_NOW,
    units: Sequence[str] = ("mg/dL", "umol/L"),
    specimens: Sequence[str] = ("serum", "blood"),
    min_mg_dl: float = 0.4,
    max_mg_dl: float = 12.0,
    max_hours_ago: int = 24 * 400,
    pid: str = PATIENT_ID,
) -> SearchStrategy[JSON]:
    """A creatinine in mg/dL or umol/L (serum or blood LOINC), hours before ``now``."""
    lo, hi = round(min_mg_dl * 10), round(max_mg_dl * 10)
    mid = min(max(lo, 30), hi)  # most results sit in 0.4-3 mg/dL, where the bands are
    values = st.one_of(st.integers(lo, mid), st.integers(mid, hi)).map(lambda x: x / 10)
    return st.builds(
        _creatinine,
        now=st.just(now),
        mg_dl=values,
        unit=st.sampled_from(list(units)),
        specimen=st.sampled_from(list(specimens)),
        hours_ago=st.integers(1, max_hours_ago),
        pid=st.just(pid),
    )


def _egfr(*, now: datetime, value: int, loinc: str, hours_ago: float, pid: str) -> JSON:
    return {**b.egfr(value, _ago(now, hours=hours_ago), loinc=loinc, pid=pid), "id": "egfr"}


def egfrs(
    *,
    now: datetime = DEFAULT_NOW,
    loincs: Sequence[str] = EGFR_LOINCS,
    min_value: int = 5,
    max_value: int = 120,
    max_hours_ago: int = 24 * 400,
    pid: str = PATIENT_ID,
) -> SearchStrategy[JSON]:
    """A reported eGFR under any of the LOINC codes the pack knows (mL/min/1.73 m2)."""
    return st.builds(
        _egfr,
        now=st.just(now),
        value=st.integers(min_value, max_value),
        loinc=st.sampled_from(list(loincs)),
        hours_ago=st.integers(1, max_hours_ago),
        pid=st.just(pid),
    )


def _crcl(*, now: datetime, value: int, hours_ago: float, pid: str) -> JSON:
    return b.observation(
        loinc="2164-2",
        display="Creatinine renal clearance in 24 hour Urine",
        value=value,
        unit="mL/min",
        when=_ago(now, hours=hours_ago),
        oid="crcl",
        pid=pid,
    )


def crcl_measured(
    *, now: datetime = DEFAULT_NOW, pid: str = PATIENT_ID, max_hours_ago: int = 24 * 60
) -> SearchStrategy[JSON]:
    """A measured (24-h urine) creatinine clearance."""
    return st.builds(
        _crcl,
        now=st.just(now),
        value=st.integers(8, 130),
        hours_ago=st.integers(1, max_hours_ago),
        pid=st.just(pid),
    )


# kind -> (value strategy). Plausible ranges, with the alert thresholds inside them.
_VITAL_VALUES: dict[str, SearchStrategy[float]] = {
    "resp_rate": st.integers(4, 30).map(float),
    "spo2": st.integers(80, 100).map(float),
    "gcs": st.integers(3, 15).map(float),
    "sbp": st.integers(70, 180).map(float),
    "temperature": st.integers(355, 405).map(lambda x: x / 10),
    "rass": st.integers(-5, 4).map(float),
}


def _vital(*, now: datetime, kind: str, value: float, hours_ago: float, pid: str) -> JSON:
    when = _ago(now, hours=hours_ago)
    if kind == "rass":
        return b.observation(
            loinc="1345050000",
            system=b.SNOMED,
            display="RASS score",
            value=value,
            unit="{score}",
            when=when,
            oid="rass",
            pid=pid,
            category="survey",
        )
    return {**b.vital(kind, value, when, pid=pid), "id": kind.replace("_", "-")}


def vitals(
    *,
    now: datetime = DEFAULT_NOW,
    kinds: Sequence[str] = tuple(_VITAL_VALUES),
    max_hours_ago: int = 60,
    pid: str = PATIENT_ID,
) -> SearchStrategy[JSON]:
    """One vital sign or score (RR, SpO2, GCS, SBP, temperature, RASS), hours ago."""

    def one(kind: str) -> SearchStrategy[JSON]:
        return st.builds(
            _vital,
            now=st.just(now),
            kind=st.just(kind),
            value=_VITAL_VALUES[kind],
            hours_ago=st.integers(1, max_hours_ago),
            pid=st.just(pid),
        )

    return st.one_of([one(k) for k in kinds])


def _condition(*, now: datetime, concept: Concept, onset_days_ago: int | None, pid: str) -> JSON:
    res: JSON = {
        "resourceType": "Condition",
        "id": f"cond-{concept.slug}",
        "clinicalStatus": {"coding": [b.coding(CONDITION_CLINICAL, "active", "Active")]},
        "code": {"coding": [concept.coding()], "text": concept.display},
        "subject": {"reference": f"Patient/{pid}"},
    }
    if onset_days_ago is not None:
        res["onsetDateTime"] = b.iso(_ago(now, days=onset_days_ago))
    return res


def problems(
    drug: PackDrug, flags: Sequence[str] | None = None, *, near_misses: bool = True
) -> SearchStrategy[Concept]:
    """A problem the pack reads: a concept of each of its condition ValueSets (each flag
    as likely; dialysis, which the clinical layer reads for every pack, included), and,
    with ``near_misses``, the concepts those ValueSets exclude (end-stage renal disease
    is not dialysis)."""
    wanted = set(flags) if flags is not None else None
    parts = [
        st.sampled_from(list(cs))
        for name, cs in drug.conditions
        if wanted is None or name in wanted
    ]
    if near_misses and drug.near_misses and wanted is None:
        parts.append(st.sampled_from(list(drug.near_misses)))
    if not parts:
        raise ValueError(f"pack {drug.pack_id!r} reads no condition in {flags}")
    return st.one_of(parts)


def conditions(
    *,
    drug: PackDrug,
    now: datetime = DEFAULT_NOW,
    flags: Sequence[str] | None = None,
    pid: str = PATIENT_ID,
) -> SearchStrategy[JSON]:
    """An active Condition from the pack's condition ValueSets (see :func:`problems`;
    ``flags`` names the fact fields to cover, default all), with an onset some days
    before ``now`` or none."""
    return st.builds(
        _condition,
        now=st.just(now),
        concept=problems(drug, flags),
        onset_days_ago=st.none() | st.integers(0, 3000),
        pid=st.just(pid),
    )


def encounters(
    *, classes: Sequence[str] = ENCOUNTER_CLASSES, pid: str = PATIENT_ID
) -> SearchStrategy[JSON]:
    """An Encounter ``enc-1`` of a v3 ActCode class (IMP/ACUTE/NONAC/OBSENC are inpatient)."""
    return st.builds(
        b.encounter, eid=st.just("enc-1"), klass=st.sampled_from(list(classes)), pid=st.just(pid)
    )


# ---- whole requests ------------------------------------------------------------------------


def bundle(resources: list[JSON], kind: str = "searchset") -> JSON:
    """A Bundle with stable fullUrls (no random uuids: examples must replay exactly)."""
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {"fullUrl": f"{FHIR_BASE}/{r['resourceType']}/{r.get('id', i)}", "resource": r}
            for i, r in enumerate(resources)
        ],
    }


def operation_outcome(text: str = "the EHR could not run this prefetch query") -> JSON:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "exception", "diagnostics": text}],
    }


def _renumber(resources: list[JSON], prefix: str) -> list[JSON]:
    return [{**r, "id": f"{prefix}-{i + 1}"} for i, r in enumerate(resources)]


def _link(draft: JSON, active: list[JSON], replaces: int | None) -> JSON:
    if replaces is None or not active:
        return draft
    target = active[replaces % len(active)]
    return {**draft, "priorPrescription": {"reference": f"MedicationRequest/{target['id']}"}}


def _assemble(
    *,
    hook: str,
    people: dict[str, list[JSON]],
    active: list[JSON],
    statements: list[JSON],
    drafts: list[tuple[JSON, int | None]],
    others: list[JSON],
    labs: list[JSON],
    obs: list[JSON],
    problems: list[JSON],
    encounter: JSON | None,
    select_first: bool,
    damage: tuple[str, frozenset[str]],
) -> JSON:
    """Build the request the parts describe: ids numbered, links made, prefetch filled."""
    active = _renumber(active, "rx-active")
    others = _renumber(others, "rx-other")
    meds = active + [o for o in others if o["status"] != "draft"]
    draft_res = [
        _link(d, active, r)
        for d, r in zip(
            _renumber([d for d, _ in drafts], "rx-draft"), [r for _, r in drafts], strict=True
        )
    ]
    draft_res += [o for o in others if o["status"] == "draft"]
    seen: set[str] = set()
    problem_list = []
    for c in people.get("conditions", []) + problems:
        if c["id"] not in seen:
            seen.add(c["id"])
            problem_list.append(c)
    context: JSON = {"userId": "Practitioner/prac-1", "patientId": PATIENT_ID}
    if encounter is not None:
        context["encounterId"] = encounter["id"]
    if hook != "patient-view":
        context["draftOrders"] = bundle(draft_res, kind="collection")
    if hook == "order-select":
        chosen = draft_res[:1] if select_first else draft_res
        context["selections"] = [f"MedicationRequest/{d['id']}" for d in chosen]
    prefetch: JSON = {
        "patient": people["patient"][0],
        "medications": bundle(meds),
        "medicationStatements": bundle(_renumber(statements, "ms")) if statements else None,
        "renal": bundle(_renumber(labs, "lab")),
        "weight": bundle(people.get("weight", [])),
        "vitals": bundle(people.get("vitals", []) + _renumber(obs, "vital")),
        "conditions": bundle(problem_list),
        "procedures": None,
        "encounter": encounter,
    }
    mode, keys = damage
    for key in keys:
        if mode == "partial":
            prefetch.pop(key, None)
        elif mode == "null":
            prefetch[key] = None
        elif mode == "outcome":
            prefetch[key] = operation_outcome()
    return {"hook": hook, "hookInstance": HOOK_INSTANCE, "context": context, "prefetch": prefetch}


def prefetch_damage(
    *,
    modes: Sequence[str] = ("complete", "partial", "null", "outcome"),
    damage_required: bool = False,
) -> SearchStrategy[tuple[str, frozenset[str]]]:
    """(mode, keys): ``complete`` (nothing missing), ``partial`` (keys absent), ``null``
    (keys fetched but empty) or ``outcome`` (the EHR's fetch failed: an OperationOutcome).
    Required keys (Patient, medications) are only touched with ``damage_required``: without
    a fhirServer that is a 412, which most invariants cannot learn anything from."""
    keys = [k for k in PREFETCH_KEYS if damage_required or k not in REQUIRED_PREFETCH_KEYS]
    return st.tuples(
        st.sampled_from(list(modes)),
        st.frozensets(st.sampled_from(keys), min_size=1, max_size=3),
    ).map(lambda t: ("complete", frozenset()) if t[0] == "complete" else t)


def hook_requests(
    *,
    drug: PackDrug,
    now: datetime = DEFAULT_NOW,
    hooks: Sequence[str] = HOOKS,
    min_age: int = 0,
    max_age: int = 100,
    routes: Sequence[str] | None = None,
    regimen_only: bool = False,
    min_drafts: int = 0,
    max_drafts: int = 2,
    min_active: int = 0,
    max_active: int = 2,
    max_others: int = 1,
    min_labs: int = 0,
    max_labs: int = 3,
    max_vitals: int = 2,
    max_conditions: int = 2,
    interacting_classes: Sequence[str] | None = None,
    prefetch_modes: Sequence[str] = ("complete", "complete", "partial", "null", "outcome"),
    damage_required: bool = False,
    draft_mg: SearchStrategy[float] | None = None,
    labs: SearchStrategy[JSON] | None = None,
    draft_orders: SearchStrategy[JSON] | None = None,
    draft_statuses: Sequence[str] = (
        "draft",
        "draft",
        "draft",
        "active",
        "stopped",
        "cancelled",
        "on-hold",
    ),
    link_drafts: SearchStrategy[int | None] | None = None,
) -> SearchStrategy[JSON]:
    """A whole CDS Hooks request for one of ``hooks``, every part drawn from the strategies
    above for the pack's ``drug`` (see :func:`drug_of`): the patient (with weight, height,
    pregnancy), active and draft orders of the drug (a draft may replace an active one via
    ``priorPrescription``; ``routes`` default to the pack's, ``regimen_only`` keeps the
    product families whose doses count), home medication, drugs of the pack's interacting
    classes (``interacting_classes``: their names, default all; ``()`` none), renal labs,
    vitals, the pack's conditions, an encounter, and the prefetch in one of
    ``prefetch_modes``. Ids are stable (``rx-draft-1``, ``lab-2``...). ``labs`` replaces
    the renal-result strategy (e.g. ``creatinines(units=("umol/L",))``) and
    ``draft_orders`` the draft strategy (e.g. ``drug_requests(drug=d, prn=("no",),
    max_instructions=1, allow_taper=False)``); the ``min_*`` and ``max_*`` bounds size
    each list."""
    if draft_orders is None:
        draft_orders = drug_requests(
            drug=drug,
            now=now,
            statuses=draft_statuses,
            routes=routes,
            regimen_only=regimen_only,
            mg=draft_mg,
            start_in_days=(0, 5),
        )
    links = link_drafts if link_drafts is not None else st.none() | st.integers(0, 1)
    drafts = st.tuples(draft_orders, links)
    active = drug_requests(
        drug=drug,
        now=now,
        statuses=("active", "active", "active", "on-hold", "stopped", "completed"),
        routes=routes,
        regimen_only=regimen_only,
        started_days_ago=(1, 400),
        allow_taper=False,
    )
    classes = [n for n, _ in drug.interactions]
    if interacting_classes is not None:
        classes = [c for c in interacting_classes if c in classes]
    others = interacting_requests(drug=drug, classes=classes) if classes else None
    if labs is None:
        labs = st.one_of(creatinines(now=now), egfrs(now=now), crcl_measured(now=now))
    return st.builds(
        _assemble,
        hook=st.sampled_from(list(hooks)),
        people=patient_data(now=now, min_age=min_age, max_age=max_age),
        active=st.lists(active, min_size=min_active, max_size=max_active),
        statements=st.lists(drug_statements(drug=drug, now=now), max_size=1),
        drafts=st.lists(drafts, min_size=min_drafts, max_size=max_drafts),
        others=st.lists(others, max_size=max_others) if others is not None else st.just([]),
        labs=st.lists(labs, min_size=min_labs, max_size=max_labs),
        obs=st.lists(vitals(now=now), max_size=max_vitals),
        problems=st.lists(conditions(drug=drug, now=now), max_size=max_conditions),
        encounter=st.none() | encounters(),
        select_first=st.booleans(),
        damage=prefetch_damage(modes=prefetch_modes, damage_required=damage_required),
    )


def suggestion_requests(*, drug: PackDrug, now: datetime = DEFAULT_NOW) -> SearchStrategy[JSON]:
    """Order-sign and order-select requests likely to carry suggestions in every category
    that has them: a chronic regimen (often replaced, raised, cut or stopped), renal function
    across every band (dialysis included), doses above the ceilings, new starts, and a second
    scheduled order (duplicates). Oral products whose doses count in the regimen only. For
    the "no alert loops" property."""
    step = drug.dose_step
    common: dict[str, Any] = dict(
        drug=drug,
        now=now,
        hooks=("order-sign", "order-sign", "order-select"),
        min_age=18,
        routes=("oral",),
        regimen_only=True,
        max_others=1,
        min_labs=1,
        max_labs=2,
        prefetch_modes=("complete",),
        labs=st.one_of(creatinines(now=now), egfrs(now=now)),
    )
    changes = hook_requests(min_drafts=1, max_drafts=2, max_active=2, **common)
    # a chronic regimen replaced by a lower dose or stopped (tapers, "continue", A6 offers)
    step_downs = hook_requests(
        min_drafts=1,
        max_drafts=1,
        min_active=1,
        max_active=2,
        draft_statuses=("draft", "stopped", "stopped", "on-hold", "cancelled"),
        draft_mg=st.sampled_from([round(k * step, 6) for k in (1, 2, 3, 4)]),
        link_drafts=st.integers(0, 1),
        **common,
    )
    return st.one_of(changes, step_downs, chronic_changes(drug=drug, now=now))


# Renal situations for chronic_changes: (creatinine mg/dL for a 55-year-old 80 kg man, or
# None for no result, and dialysis): CrCl from above 90 mL/min down to dialysis.
_RENAL_SITUATIONS: dict[str, tuple[float | None, bool]] = {
    "normal": (0.9, False),
    "mild": (1.4, False),  # CrCl 67
    "moderate": (2.0, False),  # CrCl 47
    "severe": (3.4, False),  # CrCl 28
    "failure": (7.0, False),  # CrCl 13
    "dialysis": (6.0, True),
    "none": (None, False),
}


@st.composite
def chronic_changes(draw: Any, *, drug: PackDrug, now: datetime = DEFAULT_NOW) -> JSON:
    """A chronic scheduled oral regimen of the pack's drug (one or two orders, months old,
    of its tablets or capsules) and a draft that renews, raises, lowers or stops one of
    them, across renal function from normal to dialysis, sometimes with a seizure
    history: the situations whose fixes are tapers, "continue", renal doses and their
    interplay (the A6 "as offered" exception). Doses are multiples of the pack's dose
    step (``PackDrug.dose_step``)."""
    step = drug.dose_step
    solids = _solids(drug)
    if not solids:
        raise ValueError(f"pack {drug.pack_id!r} has no tablet or capsule in its regimen")
    per_admin = draw(st.sampled_from([round(k * step, 6) for k in (2, 4, 6, 8, 10, 12)]))
    admins = draw(st.sampled_from([2, 3, 4]))
    product = draw(st.sampled_from(list(solids)))
    strength = float(product.strength or 1)
    unit = draw(st.sampled_from(["mg", "{pill}"]))

    def dose(mg: float) -> tuple[float, str]:
        count = mg / strength
        whole = abs(count - round(count)) < 1e-9
        if unit == "{pill}" and (product.halves or whole):
            return count, unit
        return mg, "mg"

    active_dose, active_unit = dose(per_admin)
    actives = [
        b.medication_request(
            rid="rx-active-1",
            product=product,
            dosages=[b.dosage(dose=active_dose, unit=active_unit, frequency=admins)],
            authored=now - timedelta(days=draw(st.integers(20, 400))),
        )
    ]
    if draw(st.booleans()):
        second = solids[min(1, len(solids) - 1)]
        actives.append(
            b.medication_request(
                rid="rx-active-2",
                product=second,
                dosages=[
                    b.dosage(dose=second.strength, frequency=draw(st.sampled_from([1, 2, 3])))
                ],
                authored=now - timedelta(days=200),
            )
        )
    change = draw(st.sampled_from(["stop", "hold", "lower", "lower", "same", "raise"]))
    status = {"stop": "stopped", "hold": "on-hold"}.get(change, "draft")
    new_mg = {
        "lower": draw(st.sampled_from([round(k * step, 6) for k in (1, 2, 3, 4)])),
        "same": per_admin,
        "raise": per_admin + draw(st.sampled_from([2 * step, 4 * step])),
    }.get(change, per_admin)
    new_admins = (
        draw(st.sampled_from([admins, max(1, admins - 1)])) if change == "lower" else admins
    )
    draft_dose, draft_unit = dose(new_mg)
    draft = b.medication_request(
        rid="rx-draft-1",
        status=status,
        product=product,
        dosages=[b.dosage(dose=draft_dose, unit=draft_unit, frequency=new_admins)],
        prior="rx-active-1",
    )
    renal = draw(st.sampled_from(list(_RENAL_SITUATIONS)))
    scr, dialysis = _RENAL_SITUATIONS[renal]
    labs = [b.creatinine(scr, "mg/dL", now - timedelta(days=2), oid="lab-1")] if scr else []
    conditions = [b.condition("haemodialysis")] if dialysis else []
    if draw(st.integers(0, 5)) == 0:
        conditions.append(b.condition("seizure"))
    age = draw(st.sampled_from([45, 55, 70, 80]))
    return b.hook_request(
        hook=draw(st.sampled_from(["order-sign", "order-select"])),
        now=now,
        patient_res=b.patient(now=now, age=age, sex=draw(st.sampled_from(["male", "female"]))),
        drafts=[draft],
        medications=actives,
        labs=labs,
        body=[b.weight(80, now - timedelta(days=3))],
        conditions=conditions,
        hook_instance=HOOK_INSTANCE,
    )


def request_resources(request: JSON) -> list[JSON]:
    """Every FHIR resource in a request (prefetch values, their Bundle entries, drafts),
    for validation: what an EHR would send must be valid FHIR R4."""
    out: list[JSON] = []

    def add(value: Any) -> None:
        if not isinstance(value, dict) or "resourceType" not in value:
            return
        out.append(value)
        if value["resourceType"] == "Bundle":
            for e in value.get("entry") or []:
                add(e.get("resource"))

    for value in (request.get("prefetch") or {}).values():
        add(value)
    add((request.get("context") or {}).get("draftOrders"))
    return out


def deep_copy(request: JSON) -> JSON:
    """A copy safe to edit (strategies share nothing, but the invariants edit requests)."""
    return copy.deepcopy(request)
