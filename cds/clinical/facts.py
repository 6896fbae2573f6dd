"""The clinical facts a hook call produces: the contract between ``clinical`` and ``engine``.

Facts carry *measurements*, never verdicts: daily doses, renal values, ages, day counts,
ratios, codes and flags of identity ("this is an opioid", "the order was stopped"). Every
comparison with a pack number ("exceeds the ceiling", "in band 30-49", "stale") is a
durable_rules condition compiled from the pack. A field that cannot be known is ``None``
and is *omitted* from the engine fact, so a rule that needs it cannot fire on a guess.

Units are fixed so that facts written in different units compare equal:
oral doses in mg, intrathecal doses in ug, renal values in mL/min (CrCl) or
mL/min/1.73 m2 (eGFR), creatinine in mg/dL, weight in kg, height in cm, ages in
completed years, durations in (fractional) days or hours as named.

One engine fact per order of the pack's drug (with the patient context flattened into it),
one per (order, interacting class) pair, and one per request-level data problem: a typical
request asserts a handful of facts, not one per FHIR resource.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Route = Literal["oral", "intrathecal"]
Hook = Literal["order-select", "order-sign", "patient-view"]


RENAL_LABELS = {
    "crcl_measured": "measured CrCl",
    "crcl_cockcroft_gault": "CrCl (Cockcroft-Gault)",
    "egfr_reported": "eGFR",
    "egfr_ckd_epi_2021": "eGFR (CKD-EPI 2021)",
    "egfr_schwartz": "eGFR (bedside Schwartz)",
}
# Fields computed in ``ClinicalFacts.engine_facts`` rather than stored on a dataclass.
DERIVED_ORDER_FIELDS = frozenset(
    {
        "renal_label",
        "renal_unit",
        "renal_date",
        "renal_after_start",
        "continuing",
        "renal_text",
        "renal_detail",
    }
)
# Derived fields every fact carries (so a card can always name the renal situation).
ALWAYS_DERIVED = frozenset({"renal_text", "renal_detail"})
# Data issues about the patient (not one order): a card per draft order being checked.
PATIENT_LEVEL_ISSUES = frozenset({"measure-implausible", "measure-unreadable", "data-unavailable"})
# Statuses after which an order no longer runs (signing it stops, holds or voids it).
NOT_CONTINUING = frozenset({"stopped", "cancelled", "on-hold", "entered-in-error", "completed"})


def _num_text(x: float) -> str:
    if abs(x - round(x)) < 1e-9:
        return str(int(round(x)))
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}".rstrip("0").rstrip(".")


def renal_words(p: PatientFacts) -> tuple[str, str]:
    """(short, long) words for the renal situation a card names: "CrCl (Cockcroft-Gault)
    47.2" and "CrCl (Cockcroft-Gault) **47.2 mL/min** (2026-11-18)"; on dialysis with no
    result, "dialysis" (never "unknown unknown")."""
    r = p.renal
    if r is None:
        text = "dialysis" if p.on_dialysis else "no renal result"
        return text, (
            "dialysis (no renal result on record)" if p.on_dialysis else "no renal result"
        )
    label = RENAL_LABELS.get(r.kind, r.kind)
    value = _num_text(r.value)
    suffix = " on dialysis" if p.on_dialysis else ""
    return (
        f"{label} {value}{suffix}",
        f"{label} **{value} {r.unit}** ({r.effective.date().isoformat()}){suffix}",
    )


def _engine_value(value: Any) -> Any:
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        # Differences and ratios of measurements carry binary noise (1.2 - 0.9 =
        # 0.29999999999999993); at 1e-9 nothing clinical is lost and the policy's
        # boundaries ("+0.3 mg/dL fires", "+30% does not") hold exactly.
        return round(value, 9)
    raise TypeError(f"not an engine value: {value!r}")


def engine_fields(obj: Any, *, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Flat dict of the dataclass's engine-visible fields, ``None`` omitted.

    Fields whose metadata says ``engine=False`` (display data, raw resources) are skipped.
    """
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if f.name in exclude or not f.metadata.get("engine", True):
            continue
        value = getattr(obj, f.name)
        if value is None:
            continue
        v = _engine_value(value)
        if v is not None:
            out[f.name] = v
    return out


# Order fields an interaction fact carries (a pair's card may depend on the order's change)
_ORDER_ON_PAIR = ("route", "is_draft", "change", "family", "new_start", "indication")


def _engine_value_or_none(obj: Any, name: str) -> Any:
    value = getattr(obj, name, None)
    return None if value is None else _engine_value(value)


def display(default: Any = None) -> Any:
    """A field kept for cards and the console, never asserted into the engine."""
    return field(default=default, metadata={"engine": False})


def display_factory(factory: Any) -> Any:
    return field(default_factory=factory, metadata={"engine": False})


@dataclass
class RenalMeasure:
    """The renal value A5 chose, with what the card must name."""

    kind: Literal[
        "crcl_measured",
        "crcl_cockcroft_gault",
        "egfr_reported",
        "egfr_ckd_epi_2021",
        "egfr_schwartz",
    ]
    value: float  # mL/min or mL/min/1.73 m2
    unit: str  # "mL/min" or "mL/min/1.73m2"
    effective: datetime  # date of the result it rests on (the creatinine for computed ones)
    weight_kg: float | None = None  # weight used (Cockcroft-Gault)
    weight_kind: Literal["actual", "adjusted"] | None = None
    creatinine_mg_dl: float | None = None
    sex_used: Literal["male", "female", "lower-of-both"] | None = None
    source_ids: list[str] = field(default_factory=list)  # Observation ids it used


@dataclass
class PatientFacts:
    """Patient context, flattened into every order fact."""

    age: int | None = None  # completed years at now
    age_days: int | None = None
    sex: Literal["male", "female", "other", "unknown"] = "unknown"
    weight_kg: float | None = None  # newest weight
    weight_age_days: float | None = None  # how old that weight is
    height_cm: float | None = None
    inpatient: bool = False
    # A5 renal value (None when none can be had)
    renal_value: float | None = None
    renal_kind: str | None = None  # RenalMeasure.kind
    renal_is_egfr: bool | None = None
    renal_age_hours: float | None = None  # age at now of the result renal_value rests on
    egfr_for_beers: float | None = None  # eGFR reported, else CKD-EPI 2021, else CrCl
    renal_needed_missing_height: bool = False  # under 18, creatinine but no height/eGFR
    on_dialysis: bool = False
    # AKI inputs (KDIGO thresholds live in the pack): newest creatinine minus the lowest
    # value in the 48 h before it, and newest / lowest in the 7 days before it
    creatinine_rise_48h_mg_dl: float | None = None
    creatinine_ratio_7d: float | None = None
    creatinine_unusable: bool = False  # missing/unconvertible unit or implausible value
    creatinine_unusable_text: str | None = None  # "150 mg/dL, 2026-12-14, Observation/cr-1"
    # A7 observations, newest within their window (24 h by default), else None
    resp_rate: float | None = None
    spo2: float | None = None
    gcs: float | None = None
    gcs_drop_48h: float | None = None  # previous value within 48 h minus newest
    rass: float | None = None
    sbp: float | None = None
    temp_max_24h_c: float | None = None
    # Context true of every drug
    pregnant: bool = False  # active pregnancy condition or a current gestational age
    pregnancy_trimester: int | None = None  # None when pregnant but no gestational age
    pump_active: bool = False  # an intrathecal pump order of the drug is active
    # The pack's own questions (pack.yaml conditions, comedications, observations): each a
    # fact field of its own, flattened into every fact; the pack's rules name them.
    flags: dict[str, bool | float] = display_factory(dict)
    # display only
    renal: RenalMeasure | None = display()
    weight_effective: datetime | None = display()


@dataclass
class DosageStep:
    """One step in time of an order (concurrent instructions already summed)."""

    sequence: int | None
    daily: float | None  # mg (oral) or ug (intrathecal); None when not computable
    admin_per_day: float | None
    single_max: float | None  # largest single administration
    single_min: float | None
    start: datetime | None = None
    end: datetime | None = None


@dataclass
class OrderFacts:
    """One order of the pack's drug as the rules see it (after the regimen arithmetic)."""

    order_id: str
    route: Route  # unknown routes are treated as oral (route_unknown=True)
    status: str  # draft, active, stopped, cancelled, on-hold
    is_draft: bool
    route_unknown: bool = False
    route_given: str | None = None  # oral, intrathecal, iv, im, sc, epidural, other
    product_kind: Literal["oral", "intrathecal", "unknown"] = "unknown"
    matched_by_name: bool = False
    # dose (mg oral, ug intrathecal); ceilings use the highest step
    dose_computable: bool = True
    dose_problem: str | None = None  # why not computable (unit, strength...)
    daily: float | None = None  # this order, highest step
    first_step_daily: float | None = None
    admin_per_day: float | None = None  # this order, first step
    single_max: float | None = None
    single_min: float | None = None
    prn: bool = False
    prn_only: bool = False
    prn_max_unknown: bool = False
    is_taper: bool = False  # sequenced instructions
    tapering: bool = False  # steps that never rise and end lower (a wean)
    # regimen after signing, same route (oral orders add up)
    regimen_daily: float | None = None  # highest-step total after signing
    regimen_first_daily: float | None = None  # first-step total after signing
    regimen_admin_per_day: float | None = None
    regimen_daily_per_kg: float | None = None  # needs a weight from the last 30 days
    weight_recent_days: float | None = None  # age of the weight used for mg/kg
    scheduled_orders: int = 0  # scheduled orders by this route after signing
    # False when a dose in the current or after-signing regimen (this route) could not be
    # computed: the regimen totals are then lower bounds (a rule may still fire on them)
    regimen_complete: bool = True
    # titration (A4 oral, A9 intrathecal)
    new_start: bool = False  # no order/statement of the drug in the look-back window
    current_daily: float | None = None  # regimen before signing this draft
    increase_daily: float | None = None  # regimen_first_daily - current_daily (when > 0)
    increase_per_admin: float | None = None  # increase_daily / regimen_admin_per_day
    days_on_current: float | None = None  # current start -> effect time, calendar days
    step_up_fraction: float | None = None  # intrathecal: new/replaced - 1
    change_24h_fraction: float | None = None  # intrathecal: new/daily 24 h ago - 1
    pump_first_order: bool = False  # no intrathecal order of the drug in the look-back
    bolus_ug: float | None = None
    bolus_interval_hours: float | None = None
    # withdrawal (A6)
    chronic_user: bool = False
    change: Literal["new", "same", "increase", "decrease", "stop"] | None = None
    prior_daily: float | None = None  # daily by this route before the change
    after_daily: float | None = None  # daily by this route after signing
    after_to_prior: float | None = None  # after_daily / prior_daily
    adverse_reason: bool = False  # stop/reduction coded as adverse reaction/toxicity/overdose
    refill_overdue_days: float | None = None  # now - refill due; > 0 means overdue
    pump_removal: bool = False
    # product family, indication and timing (packs with product families, e.g. an
    # immediate-release and a once-daily product line; None where the pack has none)
    family: str | None = None
    family_switch: bool = False  # replaces a regimen of another family of the drug
    product_stated: bool = True  # False: only the ingredient is named (no product or form)
    route_tube: bool = False  # given by an enteral tube
    indication: str | None = None  # the pack's indication (order reason, else problem list)
    max_interval_hours: float | None = None  # longest gap between scheduled doses
    step_rise_per_admin_max: float | None = None  # largest rise between sequenced steps
    rate_excess: float | None = None  # regimen above the pack's linear titration allowance
    # post-dialysis supplement doses of this order (kept apart from the maintenance dose)
    supplement: bool = False
    supplement_single_max: float | None = None
    supplement_per_week: float | None = None
    # the order as received passes FHIR R4B validation (False: a DataIssue names the
    # fields; a suggestion that edits this resource may not round-trip)
    fhir_valid: bool = True
    # display only
    resource: dict[str, Any] | None = display()  # the order as received (JSON)
    steps: list[DosageStep] = display_factory(list)
    medication_text: str | None = display()
    strength_per_ml: float | None = display()  # mg/mL (oral) or ug/mL, for mL doses
    dose_unit_written: str | None = display()  # the unit the prescriber wrote
    replaces: str | None = display()  # id of the active order it replaces
    current_resource: dict[str, Any] | None = display()  # that active order (JSON)
    current_start: datetime | None = display()
    duplicate_ids: list[str] = display_factory(list)
    # what the dispensable-dose chooser and the taper need (suggestions)
    product: Any = display()  # the product-table row (terminology.Product) it names
    strength: Any = display()  # units.Strength of what it names
    current_per_admin: float | None = display()  # the replaced order's dose, in effect now
    current_admins: float | None = display()
    current_order_daily: float | None = display()  # that order's daily dose now
    regimen_ids: list[str] = display_factory(list)  # orders of this route after signing
    co_cut_ids: list[str] = display_factory(list)  # other drafts cutting their own dose
    supplement_indices: list[int] = display_factory(list)  # its post-dialysis dosages
    # the pack's dose schedules: how far the order's steps run above each (``above_<name>``
    # over every step, ``above_<name>_later`` over the steps after the first)
    schedule_excess: dict[str, float] = display_factory(dict)

    @property
    def continuing(self) -> bool:
        """The order runs after signing (not stopped, held, cancelled or finished)."""
        return self.status not in NOT_CONTINUING


@dataclass
class InteractionFacts:
    """An order of the drug paired with one interacting class present in the regimen."""

    order_id: str
    drug_class: str  # the pack's interacting class (opioid, sedative, levodopa, ...)
    pair_has_draft: bool  # the drug's order or the other order is a draft here
    drug_names: str = ""  # display names joined, for the card
    other_ids: list[str] = display_factory(list)


@dataclass
class DataIssue:
    """A request-level data problem (an unusable resource, a unit slip in a lab).

    Every issue is kept with the audit record of the call (the pharmacist console shows
    them); only the codes a pack has a rule for become a prescriber's card: the ones that
    stop a check from running (an implausible weight, an unreadable creatinine), never a
    malformed field the prescriber cannot fix.
    """

    issue: str  # stable code, e.g. measure-implausible, creatinine-unit, invalid-field
    detail: str  # plain words, no PHI beyond resource ids
    order_id: str = ""  # the order it concerns, "" for the request
    measure: str | None = None  # measure-*: what was measured ("Weight", "eGFR")
    value_text: str | None = None  # measure-*: the value as received ("800 kg")
    resource_ref: str | None = display()


@dataclass
class ClinicalFacts:
    """Everything one evaluation needs, at one explicit instant."""

    now: datetime
    hook: Hook
    patient: PatientFacts
    drug: str = "the drug"  # the pack's drug, in words (cards)
    new_start_days: float | None = None  # the pack's new-start look-back (card words)
    orders: list[OrderFacts] = field(default_factory=list)
    interactions: list[InteractionFacts] = field(default_factory=list)
    issues: list[DataIssue] = field(default_factory=list)

    def engine_facts(self) -> list[dict[str, Any]]:
        """The flat facts asserted into one engine session."""
        base = {"hook": self.hook}
        patient = engine_fields(self.patient)
        for name, value in self.patient.flags.items():
            v = _engine_value(value)
            if v is not None:
                patient[name] = v
        renal = self.patient.renal
        patient["renal_text"], patient["renal_detail"] = renal_words(self.patient)
        if renal is not None:
            patient["renal_label"] = RENAL_LABELS.get(renal.kind, renal.kind)
            patient["renal_unit"] = renal.unit
            patient["renal_date"] = renal.effective.date().isoformat()
        out: list[dict[str, Any]] = []
        for o in self.orders:
            fact = {
                "kind": "order",
                **base,
                **patient,
                **engine_fields(o),
                **{k: _engine_value(v) for k, v in o.schedule_excess.items()},
                "continuing": o.continuing,
            }
            if renal is not None and o.current_start is not None:
                fact["renal_after_start"] = renal.effective > o.current_start
            out.append(fact)
        by_id = {o.order_id: o for o in self.orders}
        for i in self.interactions:
            order = by_id.get(i.order_id)
            extra = (
                {k: v for k in _ORDER_ON_PAIR if (v := _engine_value_or_none(order, k)) is not None}
                if order
                else {}
            )
            out.append({"kind": "interaction", **base, **patient, **extra, **engine_fields(i)})
        drafts = [o.order_id for o in self.orders if o.is_draft]
        for d in self.issues:
            fact = {"kind": "data_issue", **base, **engine_fields(d)}
            if d.issue in PATIENT_LEVEL_ISSUES and not d.order_id:
                # a patient's measure concerns every order being checked: one card per order
                # and category (Conventions), merged with that order's other data problems;
                # with no draft of the pack's drug it concerns none of this pack's checks
                out.extend({**fact, "order_id": oid} for oid in drafts)
            else:
                out.append(fact)
        return out
