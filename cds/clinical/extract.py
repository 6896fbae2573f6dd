"""Entry point of the clinical layer: one hook request's resources -> :class:`ClinicalFacts`.

Why a single pure function: the engine must get the same facts for the same request at the
same instant (replays, vignettes, the suggestion re-check), so ``now`` and ``params`` are
arguments and nothing here reads a clock, a file other than the cached terminology, or the
network. It never raises on bad data: an unusable resource becomes a :class:`DataIssue` and
the rest still produces facts. Only programming errors raise.

Steps: index the resources (drop junk, other patients' data and duplicates) -> read medication
records (drafts and prefetch) -> the regimen before/after signing -> observations, conditions,
renal value and patient context -> one :class:`OrderFacts` per checked order of the pack's
drug -> interaction pairs.

Which orders are checked:
- order-sign: every draft of the drug, whatever its status (a re-signed stop is a draft too);
- order-select: the drug's drafts named in ``selections`` (all of them when it is empty);
  the other drafts still count in the regimen after signing and for interactions;
- both: also every active order (or home-use statement) of the drug that continues after signing
  (not replaced or stopped by a draft), as ``is_draft=False``: part A's conventions check
  "the regimen after signing with A6-A8", so a draft opioid next to a chronic order (D12)
  or low vitals on it must reach the rules; draft-only rules guard on ``is_draft``;
- patient-view: every active order and home-use statement of the drug (``is_draft=False``).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from cds.clinical.conditions import read_conditions
from cds.clinical.context import Context
from cds.clinical.drugspec import DrugSpec
from cds.clinical.facts import ClinicalFacts, OrderFacts
from cds.clinical.fhirdata import (
    JSON,
    as_dict,
    as_dicts,
    as_str,
    codings,
    concept_texts,
    parse_datetime,
    ref_id,
    resource_ref,
)
from cds.clinical.interactions import interaction_facts, other_drugs_after_signing
from cds.clinical.observations import read_observations
from cds.clinical.order_facts import build_order_facts, patient_history
from cds.clinical.orders import MedRecord, read_record
from cds.clinical.params import ClinicalParams
from cds.clinical.patient import assemble_patient
from cds.clinical.regimen import build_regimen
from cds.clinical.validation import invalid_fields

__all__ = ["HookInput", "extract_facts", "extraction_memo"]
T = TypeVar("T")

_TYPES = frozenset({
    "Patient", "Encounter", "Observation", "MedicationRequest", "MedicationStatement",
    "Condition", "Medication", "Procedure", "ServiceRequest",
})  # fmt: skip
_MED_TYPES = ("MedicationRequest", "MedicationStatement")
# Fields whose JSON type is checked on medication records (a wrong type is reported).
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "status": str, "authoredOn": str, "dosageInstruction": list, "dosage": list,
    "medicationCodeableConcept": dict, "medicationReference": dict, "medication": dict,
    "priorPrescription": dict, "dispenseRequest": dict, "effectivePeriod": dict,
    "effectiveDateTime": str,
}  # fmt: skip
_DATE_FIELDS = ("authoredOn", "effectiveDateTime")


@dataclass
class HookInput:
    """What the hooks layer hands the clinical layer for one request."""

    hook: str  # "order-select" | "order-sign" | "patient-view"
    patient_id: str
    encounter_id: str | None
    draft_orders: list[dict[str, Any]]  # resources of context.draftOrders
    selections: list[str] | None  # order-select: ["MedicationRequest/id", ...]
    resources: list[dict[str, Any]] = field(default_factory=list)  # prefetch/fetched, flat
    unavailable: list[str] = field(default_factory=list)  # prefetch keys not obtained


# Per-evaluation memo of the steps that read only the prefetch resources, never the drafts
# (indexing, the medication records already on file, the observations): the suggestion
# re-check extracts the same request again with one draft changed (cds.hooks.pipeline), and
# these steps were most of its cost. Keyed by the identity of the resource list (kept alive
# with the entry) and the pack; a step's data issues are recorded and raised again, in the
# same place, so the facts and their issues are those of a fresh extraction.
_MEMO: contextvars.ContextVar[dict[tuple[Any, ...], Any] | None] = contextvars.ContextVar(
    "cds_extraction_memo", default=None
)


@contextmanager
def extraction_memo() -> Iterator[None]:
    """Within this block, extractions of the same resource list share their resource-only
    steps (one evaluation: the request and its suggestion re-checks)."""
    token = _MEMO.set({})
    try:
        yield
    finally:
        _MEMO.reset(token)


def _reused(step: str, source: object, ctx: Context, fn: Callable[[Context], T]) -> T:
    memo = _MEMO.get()
    if memo is None:
        return fn(ctx)
    key = (step, id(source), id(ctx.params), id(ctx.drug), ctx.now, ctx.patient_id)
    hit = memo.get(key)
    if hit is None or hit[0] is not source:
        scratch = Context(
            now=ctx.now,
            params=ctx.params,
            drug=ctx.drug,
            patient_id=ctx.patient_id,
            medications=ctx.medications,
        )
        hit = (source, fn(scratch), scratch.issues)
        memo[key] = hit
    for d in hit[2]:
        ctx.issue(
            d.issue,
            d.detail,
            ref=d.resource_ref,
            order_id=d.order_id,
            measure=d.measure,
            value_text=d.value_text,
        )
    result: T = hit[1]
    return result


def _subject_ok(res: JSON, ctx: Context, own: str) -> bool:
    for key in ("subject", "patient"):
        value = res.get(key)
        if value is None:
            continue
        if type(value) is dict and value.get("reference") == own:  # the common case
            continue
        target = ref_id(value, "Patient")
        if target is not None and not target.startswith("#") and target != ctx.patient_id:
            return False
    return True


def _newer(a: JSON, b: JSON, ctx: Context) -> bool:
    """a was updated after b (meta.lastUpdated); unknown: keep the first seen."""
    ta = parse_datetime((as_dict(a.get("meta")) or {}).get("lastUpdated"), ctx.tz)
    tb = parse_datetime((as_dict(b.get("meta")) or {}).get("lastUpdated"), ctx.tz)
    return ta is not None and tb is not None and ta > tb


def index_resources(resources: list[Any], ctx: Context) -> dict[str, list[JSON]]:
    """Resources by type: junk reported, other patients' data dropped, duplicates merged."""
    by_type: dict[str, list[JSON]] = {t: [] for t in _TYPES}
    position: dict[tuple[str, str], int] = {}
    own = f"Patient/{ctx.patient_id}"
    stack = list(resources)[::-1]
    while stack:
        res = stack.pop()
        if not isinstance(res, dict):
            ctx.issue("unusable-resource", "a resource that is not a JSON object", ref="?")
            continue
        rtype = res.get("resourceType")
        if not isinstance(rtype, str):
            ctx.issue("unusable-resource", "a resource without resourceType", ref="?")
            continue
        if rtype == "Bundle":  # tolerated: a bundle that was not flattened
            stack.extend(e.get("resource") for e in as_dicts(res.get("entry"))[::-1])
            continue
        if rtype not in _TYPES:
            continue
        rid = as_str(res.get("id"))
        if rtype == "Patient":
            if rid is not None and rid != ctx.patient_id:
                ctx.issue(
                    "other-patient",
                    "a Patient other than the context patient",
                    ref=resource_ref(res),
                )
                continue
        elif not _subject_ok(res, ctx, own):
            ctx.issue(
                "other-patient",
                f"{resource_ref(res)}: belongs to another patient",
                ref=resource_ref(res),
            )
            continue
        bucket = by_type[rtype]
        key = (rtype, rid) if rid else None
        if key is not None and key in position:
            i = position[key]
            if _newer(res, bucket[i], ctx):
                bucket[i] = res
            continue
        if key is not None:
            position[key] = len(bucket)
        bucket.append(res)
    return by_type


def _check_fields(rec: MedRecord, ctx: Context) -> None:
    res = rec.resource
    for key, expected in _FIELD_TYPES.items():
        if key in res and not isinstance(res[key], expected):
            ctx.issue(
                "invalid-field",
                f"{rec.ref}: field '{key}' has the wrong type",
                ref=rec.ref,
                order_id=rec.id or "",
            )
    for key in _DATE_FIELDS:
        if isinstance(res.get(key), str) and parse_datetime(res[key], ctx.tz) is None:
            ctx.issue(
                "invalid-field",
                f"{rec.ref}: field '{key}' is not a FHIR date",
                ref=rec.ref,
                order_id=rec.id or "",
            )


class _Indications:
    """The pack's indication of an order: the order's own reason (a code, words, or the
    Condition it references) first, else the problem list, each in the pack's priority
    order, else the pack's default. ``None`` when the pack names no indications."""

    def __init__(self, conditions: list[JSON], on_list: dict[str, list[str]], ctx: Context) -> None:
        self.ctx = ctx
        self.by_id = {cid: c for c in conditions if (cid := as_str(c.get("id")))}
        self.on_list = frozenset(on_list)

    def _first(self, hits: frozenset[str] | set[str]) -> str | None:
        return next((name for name, vs in self.ctx.drug.indications if vs in hits), None)

    def of(self, rec: MedRecord) -> str | None:
        drug = self.ctx.drug
        if not drug.indications:
            return None
        hits = set(self.ctx.term.hits(rec.indication_codings, rec.indication_texts))
        for ref in rec.indication_refs:
            cond = self.by_id.get(ref)
            if cond is not None:
                code = cond.get("code")
                hits |= self.ctx.term.hits(codings(code), concept_texts(code))
        return self._first(hits) or self._first(self.on_list) or drug.indication_default


def _selected_ids(selections: list[str] | None) -> set[str] | None:
    if not selections:
        return None
    out = set()
    for s in selections:
        if isinstance(s, str) and s.strip():
            out.add(s.strip().rstrip("/").split("/")[-1])
    return out or None


def extract_facts(
    inp: HookInput, *, now: datetime, params: ClinicalParams, drug: DrugSpec
) -> ClinicalFacts:
    """Facts for one hook call at the instant ``now`` (timezone-aware), for the pack's
    ``drug`` (its identity, flags and classes) with the pack's ``params``."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    ctx = Context(now=now, params=params, drug=drug, patient_id=inp.patient_id)
    idx = _reused("index", inp.resources, ctx, lambda c: index_resources(inp.resources, c))
    for key in inp.unavailable:
        ctx.issue(
            "data-unavailable",
            f"the {key} data could not be obtained from the EHR (not prefetched, not fetchable)",
            measure=key,
        )
    ctx.medications = {rid: m for m in idx["Medication"] if (rid := as_str(m.get("id")))}

    draft_resources = [
        r
        for r in inp.draft_orders
        if isinstance(r, dict) and r.get("resourceType") == "MedicationRequest"
    ]
    drafts = [read_record(r, is_draft=True, ctx=ctx) for r in draft_resources]
    for i, d in enumerate(drafts):
        if d.id is None:
            d.id = f"draft-{i + 1}"
    before = _reused(
        "records",
        inp.resources,
        ctx,
        lambda c: [read_record(r, is_draft=False, ctx=c) for t in _MED_TYPES for r in idx[t]],
    )

    selected = _selected_ids(inp.selections) if inp.hook == "order-select" else None
    # A draft naming no medication is normal while an order is being built (order-select)
    # and is no order of the drug either way: not a data issue. A reference we could not
    # follow may hide the drug, so that one is reported.
    for d in drafts:
        if selected is not None and d.id not in selected:
            continue
        if d.med.unresolved_reference and not d.matched:
            ctx.issue(
                "unresolved-medication",
                f"{d.ref}: medication reference could not be resolved",
                ref=d.ref,
                order_id=d.id or "",
            )
    for rec in drafts + before:
        if rec.matched:
            _check_fields(rec, ctx)

    # The drug's regimen, and apart from it each product family whose doses never add to
    # the drug's (a prodrug of it): such a family has its own regimen for its own orders,
    # and is another drug for interactions and co-medication flags.
    def in_regimen(r: MedRecord) -> bool:
        return bool(r.matched) and drug.in_regimen(r.family)

    regimens = [
        build_regimen([r for r in before if in_regimen(r)], [d for d in drafts if in_regimen(d)])
    ]
    apart = sorted({r.family for r in drafts + before if r.matched and not in_regimen(r)} - {None})
    for fam in apart:
        regimens.append(
            build_regimen(
                [r for r in before if r.matched and r.family == fam],
                [d for d in drafts if d.matched and d.family == fam],
            )
        )
    obs = _reused(
        "observations", inp.resources, ctx, lambda c: read_observations(idx["Observation"], c)
    )
    # a planned procedure may be among the drafts being signed (a pump removal ordered now)
    draft_requests = [
        r
        for r in inp.draft_orders
        if isinstance(r, dict) and r.get("resourceType") == "ServiceRequest"
    ]
    flags = read_conditions(
        idx["Condition"], idx["Procedure"], idx["ServiceRequest"] + draft_requests, ctx
    )
    patients = idx["Patient"]
    patient, _ = assemble_patient(
        patient=patients[0] if patients else None,
        encounters=idx["Encounter"],
        encounter_id=inp.encounter_id,
        obs=obs,
        flags=flags,
        ctx=ctx,
    )
    others = other_drugs_after_signing(
        [r for r in before if not in_regimen(r)], [d for d in drafts if not in_regimen(d)]
    )
    for comed in drug.comedications:
        members = [
            r
            for r in others
            if comed.name in r.comedications and (r.is_draft or not comed.drafts_only)
        ]
        if comed.count:
            patient.flags[comed.name] = float(len({r.name.strip().lower() for r in members}))
        else:
            patient.flags[comed.name] = bool(members)
    patient.flags.update(flags.onsets)
    indications = _Indications(idx["Condition"], flags.condition_ids, ctx)

    pairs: list[tuple[OrderFacts, MedRecord]] = []
    for reg in regimens:
        if inp.hook == "patient-view":
            # the active regimen: orders and the home-use statements that are not the
            # record of one of those orders (a statement based on an active order is it)
            checked = [r for r in reg.current if r not in reg.stand_ins]
        else:
            checked = [d for d in reg.drafts if selected is None or d.id in selected]
            # The active orders and home-use statements that go on unchanged after signing
            # are part of the regimen the A6-A8 rules judge (a draft opioid next to a
            # chronic order, home use known only from a MedicationStatement); they are facts
            # with is_draft=False, which the draft-only rules skip.
            checked += [r for r in reg.after if not r.is_draft]
        hist = patient_history(reg, ctx)
        if reg is regimens[0]:
            patient.pump_active = hist.pump_active
        for rec in checked:
            facts = build_order_facts(
                rec,
                reg,
                hist,
                patient,
                ctx,
                pump_removal_planned=any(flags.procedures.values()),
            )
            facts.indication = indications.of(rec)
            bad = invalid_fields(rec.resource)
            if bad:
                facts.fhir_valid = False
                ctx.issue(
                    "invalid-resource",
                    f"{rec.ref}: fails FHIR R4B validation at {', '.join(bad)}",
                    ref=rec.ref,
                    order_id=facts.order_id,
                )
            pairs.append((facts, rec))
    interactions = interaction_facts(
        pairs, others, classes=drug.interactions, condition_ids=flags.condition_ids
    )
    return ClinicalFacts(
        now=now,
        hook=inp.hook,  # type: ignore[arg-type]
        patient=patient,
        drug=drug.name,
        new_start_days=params.new_start_lookback_days,
        orders=[f for f, _ in pairs],
        interactions=interactions,
        issues=ctx.issues,
    )
