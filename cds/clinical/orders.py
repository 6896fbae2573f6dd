"""Medication orders and statements as typed records (identity, route, dose, dates, links).

Why a record type: the regimen, titration, withdrawal and interaction steps all reason over
the same few properties of each MedicationRequest/MedicationStatement (status, route, daily
dose, start, what it replaces). Reading them once, defensively, from the raw JSON keeps
those steps free of FHIR spelling questions (STU3/R4/R5) and of bad-data handling.

Route (A1): ``dosageInstruction.route`` first (oral and enteral-tube routes are oral;
intrathecal). An injection route (IV, IM, SC, epidural) names an injectable product, so the
dose is read in ug like an intrathecal product unless the product is known to be oral (the
pack flags the wrong route). With no route (or an unrecognised one) the product decides; with
neither, oral and ``route_unknown``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from cds.clinical.context import Context
from cds.clinical.dosing import OrderDose, parse_dosage
from cds.clinical.drugs import (
    MedicationConcept,
    comedication_flags,
    drug_classes,
    drug_identity,
    product_kind,
    product_of,
    resolve_medication,
)
from cds.clinical.fhirdata import (
    JSON,
    as_dict,
    as_dicts,
    as_list,
    as_num,
    as_str,
    codings,
    concept_texts,
    parse_datetime,
    period_bounds,
    ref_id,
    resource_ref,
)
from cds.clinical.terminology import Product
from cds.clinical.units import Strength

STOP_STATUSES = frozenset({"stopped", "cancelled", "on-hold"})
_STATUS_ALIASES = {"suspended": "on-hold", "recorded": "active", "canceled": "cancelled"}

_ROUTE_VALUESETS = (
    ("oral", "route-oral"),
    ("intrathecal", "route-intrathecal"),
    ("iv", "route-intravenous"),
    ("im", "route-intramuscular"),
    ("sc", "route-subcutaneous"),
    ("epidural", "route-epidural"),
)
_INJECTION_ROUTES = frozenset({"iv", "im", "sc", "epidural"})
TUBE_VS = "route-enteral-tube"


@dataclass
class MedRecord:
    """One MedicationRequest or MedicationStatement, read once."""

    ref: str
    id: str | None
    kind: Literal["request", "statement"]
    status: str
    is_draft: bool
    resource: JSON
    med: MedicationConcept
    name: str
    matched: str | None = None  # the pack's drug: "code" | "name" | None (another drug)
    route: Literal["oral", "intrathecal"] = "oral"
    route_unknown: bool = False
    route_given: str | None = None
    product_kind: str = "unknown"
    dose: OrderDose | None = None
    start: datetime | None = None
    end: datetime | None = None
    authored: datetime | None = None
    validity_end: datetime | None = None
    prior_id: str | None = None
    based_on: set[str] = field(default_factory=set)
    classes: set[str] = field(default_factory=set)  # interacting classes (another drug)
    comedications: set[str] = field(default_factory=set)  # co-medication flags it raises
    reason_codings: list[tuple[str, str, str]] = field(default_factory=list)
    reason_texts: list[str] = field(default_factory=list)
    event: datetime | None = None  # first timing.event (a one-off administration time)
    product: Product | None = None  # the product-table row the order names, if any
    strength: Strength | None = None  # from its Medication, else the product table
    family: str | None = None  # the pack's product family (None: the pack has none)
    product_stated: bool = True  # False: only the ingredient is named (no product or form)
    route_tube: bool = False  # given by an enteral tube (nasogastric, gastrostomy...)
    indication_codings: list[tuple[str, str, str]] = field(default_factory=list)
    indication_texts: list[str] = field(default_factory=list)
    indication_refs: list[str] = field(default_factory=list)  # Condition ids (reasonReference)
    supplement_indices: list[int] = field(default_factory=list)  # dosageInstruction positions

    @property
    def is_bolus(self) -> bool:
        return self.dose is not None and self.dose.bolus is not None

    @property
    def contributes(self) -> bool:
        """Counts in a regimen (not stopped, cancelled, held, finished or in error)."""
        return self.status not in STOP_STATUSES | {"completed", "entered-in-error", "not-taken"}


def normalise_status(value: object) -> str:
    status = (as_str(value) or "unknown").lower()
    return _STATUS_ALIASES.get(status, status)


def route_given(dosages: list[JSON], ctx: Context) -> str | None:
    """The written route of the first instruction that has one, as a route kind."""
    for d in dosages:
        route = as_dict(d.get("route"))
        if route is None:
            continue
        for hits in (ctx.term.code_hits(codings(route)), ctx.term.text_hits(concept_texts(route))):
            for kind, vs_id in _ROUTE_VALUESETS:
                if vs_id in hits:
                    return kind
        return "other"
    return None


def choose_route(given: str | None, product: str) -> tuple[Literal["oral", "intrathecal"], bool]:
    """(route, route_unknown) by A1: the written route, else the product, else oral."""
    if given in ("oral", "intrathecal"):
        return given, False  # type: ignore[return-value]
    if given in _INJECTION_ROUTES and product != "oral":
        return "intrathecal", False
    if product in ("oral", "intrathecal"):
        return product, False  # type: ignore[return-value]
    return "oral", True


def _reasons(resource: JSON) -> tuple[list[tuple[str, str, str]], list[str]]:
    concepts: list[JSON | None] = list(as_dicts(resource.get("statusReason")))
    concepts += as_dicts(resource.get("reasonCode"))
    concepts += as_dicts(resource.get("reasonNotTaken"))
    for r in as_dicts(resource.get("reason")):  # R5 CodeableReference
        concepts.append(as_dict(r.get("concept")) or r)
    items: list[tuple[str, str, str]] = []
    texts: list[str] = []
    for c in concepts:
        if c is not None:
            items.extend(codings(c))
            texts.extend(concept_texts(c))
    return items, texts


def _family(med: MedicationConcept, ctx: Context) -> str | None:
    """The product family: the product table's, else a family ValueSet's, else the default
    (an order naming only the ingredient, read as the family nearly all prescribing is)."""
    product = product_of(med, ctx.term)
    if product is not None and product.family:
        return product.family
    hits = ctx.term.hits(med.codings + med.ingredient_codings, med.texts)
    for f in ctx.drug.families:
        if f.valueset and f.valueset in hits:
            return f.name
    return ctx.drug.default_family


def _indication(resource: JSON) -> tuple[list[tuple[str, str, str]], list[str], list[str]]:
    """The order's stated reasons (reasonCode, one object or a list; R5 reason concepts) and
    the Conditions it names (reasonReference)."""
    items: list[tuple[str, str, str]] = []
    texts: list[str] = []
    refs: list[str] = []
    concepts = as_dicts(resource.get("reasonCode"))
    if isinstance(resource.get("reasonCode"), dict):
        concepts = [resource["reasonCode"]]
    for r in as_dicts(resource.get("reason")):
        if as_dict(r.get("concept")) is not None:
            concepts.append(r["concept"])
        target = ref_id(r.get("reference"), "Condition")
        if target:
            refs.append(target)
    for c in concepts:
        items.extend(codings(c))
        texts.extend(concept_texts(c))
    for r in as_list(resource.get("reasonReference")):
        target = ref_id(r, "Condition")
        if target:
            refs.append(target)
    return items, texts, refs


def _supplement_test(ctx: Context) -> Any:
    """The pack's test of a post-dialysis supplement dosage (None: the pack has none)."""
    vs_id = ctx.drug.supplement_valueset
    if vs_id is None:
        return None
    per_week = ctx.drug.supplement_max_per_week
    term = ctx.term

    def test(dosage: JSON) -> bool:
        timing = as_dict(dosage.get("timing")) or {}
        repeat = as_dict(timing.get("repeat")) or {}
        unit = as_str(repeat.get("periodUnit"))
        if unit is not None and unit.lower() in ("wk", "week", "weeks"):
            freq = as_num(repeat.get("frequency")) or 1
            period = as_num(repeat.get("period")) or 1
            if period > 0 and freq / period <= per_week:
                return True
        concepts = [as_dict(timing.get("code")), as_dict(dosage.get("asNeededCodeableConcept"))]
        concepts += as_dicts(dosage.get("additionalInstruction"))
        texts = [t for k in ("text", "patientInstruction") if (t := as_str(dosage.get(k)))]
        for c in concepts:
            if c is not None and vs_id in term.hits(codings(c), concept_texts(c)):
                return True
        return bool(texts) and vs_id in term.text_hits(texts)

    return test


def _bolus_marked(med: MedicationConcept, dosages: list[JSON], ctx: Context) -> bool:
    """The order is a one-off screening bolus: its product or words say so, or its timing
    names a single administration (``timing.event``, or ``repeat.count`` 1)."""
    texts = list(med.texts)
    for d in dosages:
        texts += [t for k in ("text", "patientInstruction") if (t := as_str(d.get(k)))]
        timing = as_dict(d.get("timing"))
        if timing is not None:
            if as_list(timing.get("event")):
                return True
            repeat = as_dict(timing.get("repeat"))
            if repeat is not None and repeat.get("count") == 1:
                return True
    marker = ctx.drug.screening_bolus
    return marker is not None and marker in ctx.term.hits(med.codings, texts)


def read_record(resource: JSON, *, is_draft: bool, ctx: Context) -> MedRecord:
    """Read a MedicationRequest or MedicationStatement (identity first; the dose only for
    the pack's drug)."""
    kind: Literal["request", "statement"] = (
        "statement" if resource.get("resourceType") == "MedicationStatement" else "request"
    )
    drug = ctx.drug
    med = resolve_medication(resource, ctx.medications, ctx.term, drug.identity)
    rec = MedRecord(
        ref=resource_ref(resource),
        id=as_str(resource.get("id")),
        kind=kind,
        status=normalise_status(resource.get("status")),
        is_draft=is_draft,
        resource=resource,
        med=med,
        name=med.name or "unnamed medication",
    )
    tz = ctx.tz
    rec.matched = drug_identity(med, ctx.term, drug.identities) if med.present else None
    if rec.matched is not None and drug.families:
        rec.family = _family(med, ctx)
    if kind == "request":
        rec.prior_id = ref_id(resource.get("priorPrescription"), "MedicationRequest")
    else:
        for key in ("basedOn", "derivedFrom", "partOf"):
            for r in as_list(resource.get(key)):
                target = ref_id(r, "MedicationRequest")
                if target and not target.startswith("#"):
                    rec.based_on.add(target)
    if rec.matched is None or not drug.in_regimen(rec.family):
        # Other drugs only need identity and links (interactions, co-medication flags); so
        # does a family outside the regimen (a prodrug), for the other family's pairs.
        if med.present:
            rec.classes = drug_classes(med, ctx.term, drug.interactions)
            rec.comedications = comedication_flags(
                med, ctx.term, drug.comedications, drug.class_valuesets
            )
        if rec.matched is None:
            return rec
    if kind == "request":
        rec.authored = parse_datetime(resource.get("authoredOn"), tz)
        dispense = as_dict(resource.get("dispenseRequest"))
        if dispense is not None:
            _, rec.validity_end = period_bounds(dispense.get("validityPeriod"), tz)
        dosages = as_dicts(resource.get("dosageInstruction"))
    else:
        start, end = period_bounds(resource.get("effectivePeriod"), tz)
        rec.start = start or parse_datetime(resource.get("effectiveDateTime"), tz)
        rec.end = end
        rec.authored = parse_datetime(resource.get("dateAsserted"), tz)
        dosages = as_dicts(resource.get("dosage")) or as_dicts(resource.get("dosageInstruction"))
    rec.reason_codings, rec.reason_texts = _reasons(resource)
    rec.indication_codings, rec.indication_texts, rec.indication_refs = _indication(resource)
    for d in dosages:
        timing = as_dict(d.get("timing"))
        if timing is not None and rec.event is None:
            events = [parse_datetime(e, tz) for e in as_list(timing.get("event"))]
            rec.event = min((e for e in events if e is not None), default=None)
    product = product_of(med, ctx.term)
    rec.product_kind = product_kind(med, product, ctx.term)
    rec.route_given = route_given(dosages, ctx)
    rec.route_tube = any(
        TUBE_VS in ctx.term.hits(codings(r), concept_texts(r))
        for d in dosages
        if (r := as_dict(d.get("route"))) is not None
    )
    rec.product_stated = product is not None or med.form_kind != "unknown" or bool(med.strength)
    rec.route, rec.route_unknown = choose_route(rec.route_given, rec.product_kind)
    strength = med.strength or (product.strength if product is not None else None)
    rec.product, rec.strength = product, strength
    supplement = _supplement_test(ctx)
    rec.dose = parse_dosage(
        dosages,
        strength=strength,
        intrathecal=rec.route == "intrathecal",
        unit=ctx.drug.unit_of(rec.route),
        term=ctx.term,
        tz=tz,
        bolus_marked=rec.route == "intrathecal" and _bolus_marked(med, dosages, ctx),
        is_supplement=supplement,
    )
    if supplement is not None and rec.dose.supplement_single_max is not None:
        rec.supplement_indices = [
            i for i, d in enumerate(dosages) if isinstance(d, dict) and supplement(d)
        ]
    if rec.dose.steps:
        rec.start = rec.start or rec.dose.steps[0].start
        rec.end = rec.end or rec.dose.steps[-1].end
    rec.start = rec.start or rec.authored
    return rec
