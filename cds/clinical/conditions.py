"""Problem-list and procedure flags: dialysis and pregnancy for every drug, and the pack's own.

Why: the rules ask yes/no questions of the problem list and of planned procedures. Two are
true of every drug and feed the generic patient context: dialysis (renal function) and
pregnancy. The others are the pack's (``pack.yaml`` ``conditions:`` and ``procedures:``):
epilepsy, a history of seizures, a cerebral origin of spasticity, a planned pump removal...

A Condition counts when its code (or, for the few sets that allow it, its text) is in the
flag's ValueSet and it is not entered in error or refuted; a flag also needs a
clinicalStatus of active, recurrence or relapse (or none at all), unless it is a *history*
flag (a resolved stroke is still why the patient is spastic). A *recent* flag needs an onset
(else recorded date) in its window, or a positive screen observation. STU3 status strings
and R4 coded statuses are both read.

Procedures: dialysis (a dialysis procedure in the last ``dialysis_procedure_days``), and each
pack procedure flag: a ServiceRequest that is draft, active or on hold, a Procedure in
preparation, in progress or on hold, or one done within its look-back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cds.clinical.context import Context
from cds.clinical.fhirdata import (
    JSON,
    as_dict,
    as_str,
    codings,
    concept_texts,
    parse_datetime,
    period_bounds,
)
from cds.clinical.history import calendar_days

_CURRENT = frozenset({"active", "recurrence", "relapse"})
_EXCLUDED_VERIFICATION = frozenset({"entered-in-error", "refuted"})
_PLANNED = frozenset({"preparation", "in-progress", "on-hold"})
DIALYSIS_VS = "dialysis"
PREGNANCY_VS = "pregnancy"
THIRD_TRIMESTER_VS = "pregnancy-third-trimester"


@dataclass
class ConditionFlags:
    on_dialysis: bool = False
    pregnant: bool = False
    pregnancy_third_trimester: bool = False  # the problem list says so (no gestational age)
    pregnancy_ended: datetime | None = None  # latest abatement of a pregnancy condition
    flags: dict[str, bool] = field(default_factory=dict)  # the pack's condition flags
    condition_ids: dict[str, list[str]] = field(default_factory=dict)  # ValueSet -> ids
    procedures: dict[str, bool] = field(default_factory=dict)  # the pack's procedure flags
    onsets: dict[str, float] = field(default_factory=dict)  # onset field -> days since onset


def _status_code(value: object) -> str | None:
    text = as_str(value)
    if text is not None:
        return text.lower()
    items = codings(value)
    return items[0][1].lower() if items else None


def _hits(ctx: Context, concept: object) -> frozenset[str]:
    """ValueSets a condition/procedure code (or, where a set allows it, its text) is in."""
    return ctx.term.hits(codings(concept), concept_texts(concept))


def _onset(cond: JSON, ctx: Context) -> datetime | None:
    onset = parse_datetime(cond.get("onsetDateTime"), ctx.tz)
    if onset is None:
        onset, _ = period_bounds(cond.get("onsetPeriod"), ctx.tz)
    if onset is None:
        onset = parse_datetime(cond.get("recordedDate") or cond.get("assertedDate"), ctx.tz)
    return onset


def read_conditions(
    conditions: list[JSON], procedures: list[JSON], requests: list[JSON], ctx: Context
) -> ConditionFlags:
    out = ConditionFlags()
    p = ctx.params
    wanted = ctx.drug.conditions
    out.flags = {f.name: False for f in wanted}
    for cond in conditions:
        if _status_code(cond.get("verificationStatus")) in _EXCLUDED_VERIFICATION:
            continue
        clinical = _status_code(cond.get("clinicalStatus"))
        current = clinical is None or clinical in _CURRENT
        hits = _hits(ctx, cond.get("code"))
        if not hits:
            continue
        if current:
            for vs_id in hits:
                out.condition_ids.setdefault(vs_id, []).append(as_str(cond.get("id")) or "?")
            out.on_dialysis |= DIALYSIS_VS in hits
            out.pregnant |= PREGNANCY_VS in hits
            out.pregnancy_third_trimester |= THIRD_TRIMESTER_VS in hits
        elif PREGNANCY_VS in hits:
            ended = parse_datetime(cond.get("abatementDateTime"), ctx.tz) or parse_datetime(
                cond.get("recordedDate"), ctx.tz
            )
            if ended is not None and (out.pregnancy_ended is None or ended > out.pregnancy_ended):
                out.pregnancy_ended = ended
        for flag in wanted:
            if flag.valueset not in hits or not (current or flag.history):
                continue
            onset = _onset(cond, ctx)
            if flag.recent_days is not None and (
                onset is None or onset < ctx.now - timedelta(days=flag.recent_days)
            ):
                continue
            out.flags[flag.name] = True
            if flag.onset_field and onset is not None and current:
                days = float(calendar_days(onset, ctx.now))
                prev = out.onsets.get(flag.onset_field)
                out.onsets[flag.onset_field] = days if prev is None else min(prev, days)
    out.procedures = {f.name: False for f in ctx.drug.procedures}
    for proc in procedures:
        status = (as_str(proc.get("status")) or "").lower()
        if status in ("entered-in-error", "not-done"):
            continue
        when = parse_datetime(proc.get("performedDateTime"), ctx.tz)
        if when is None:
            start, end = period_bounds(proc.get("performedPeriod"), ctx.tz)
            when = end or start
        hits = _hits(ctx, proc.get("code"))
        if DIALYSIS_VS in hits and (
            status == "in-progress"
            or (when is not None and when >= ctx.now - timedelta(days=p.dialysis_procedure_days))
        ):
            out.on_dialysis = True
        for flag in wanted:
            if (
                flag.procedure_days is not None
                and flag.valueset in hits
                and (
                    status == "in-progress"
                    or (when is not None and when >= ctx.now - timedelta(days=flag.procedure_days))
                )
            ):
                out.flags[flag.name] = True
        for pf in ctx.drug.procedures:
            if pf.valueset in hits and (
                status in _PLANNED
                or (when is not None and when >= ctx.now - timedelta(days=pf.lookback_days))
            ):
                out.procedures[pf.name] = True
    for req in requests:
        status = (as_str(req.get("status")) or "").lower()
        code = as_dict(req.get("code"))
        if code is not None and "concept" in code:  # R5 CodeableReference
            code = as_dict(code.get("concept"))
        if status not in ("draft", "active", "on-hold"):
            continue
        hits = _hits(ctx, code)
        for pf in ctx.drug.procedures:
            if pf.valueset in hits:
                out.procedures[pf.name] = True
    return out
