"""Problem-list and procedure flags: dialysis, epilepsy, histories, origin, pregnancy...

Why: A5-A9 each ask a yes/no question of the problem list. A Condition counts when its
code (or, for the few sets that allow it, its text) is in the set's ValueSet and it is not
entered in error or refuted; *current* sets also need a clinicalStatus of active,
recurrence or relapse (or none at all), while *history* sets (seizures, baclofen
withdrawal, the cerebral origin of spasticity) count whatever the clinical status, since a
resolved stroke is still why the patient is spastic. STU3 status strings and R4 coded
statuses are both read.

Procedures add dialysis (a dialysis procedure in the last ``dialysis_procedure_days``) and a
planned or recent intrathecal pump removal (Procedure or ServiceRequest).
"""

from __future__ import annotations

from dataclasses import dataclass
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

_CURRENT = frozenset({"active", "recurrence", "relapse"})
_EXCLUDED_VERIFICATION = frozenset({"entered-in-error", "refuted"})

# flag -> (ValueSet id, counts whatever the clinical status)
CONDITION_SETS: dict[str, tuple[str, bool]] = {
    "on_dialysis": ("dialysis", False),
    "epilepsy": ("epilepsy", False),
    "seizure_history": ("seizure-history", True),
    "withdrawal_history": ("baclofen-withdrawal-history", True),
    "cerebral_origin": ("cerebral-origin", True),
    "alcohol_use_disorder": ("alcohol-use-disorder", False),
    "pregnant": ("pregnancy", False),
    "pregnancy_third_trimester": ("pregnancy-third-trimester", False),
}
# flags that also need an onset (else recorded date) in a recent window
RECENT_SETS: dict[str, str] = {
    "delirium_recent": "delirium",
    "itb_withdrawal_sign": "itb-withdrawal-signs",
}


@dataclass
class ConditionFlags:
    on_dialysis: bool = False
    epilepsy: bool = False
    seizure_history: bool = False
    withdrawal_history: bool = False
    cerebral_origin: bool = False
    alcohol_use_disorder: bool = False
    alcohol_condition_ids: tuple[str, ...] = ()
    pregnant: bool = False
    pregnancy_third_trimester: bool = False  # the problem list says so (no gestational age)
    pregnancy_ended: datetime | None = None  # latest abatement of a pregnancy condition
    delirium_recent: bool = False
    itb_withdrawal_sign: bool = False
    pump_removal: bool = False


def _status_code(value: object) -> str | None:
    text = as_str(value)
    if text is not None:
        return text.lower()
    items = codings(value)
    return items[0][1].lower() if items else None


def _hits(ctx: Context, concept: object) -> frozenset[str]:
    """ValueSets a condition/procedure code (or, where a set allows it, its text) is in."""
    return ctx.term.hits(codings(concept), concept_texts(concept))


def read_conditions(
    conditions: list[JSON], procedures: list[JSON], requests: list[JSON], ctx: Context
) -> ConditionFlags:
    flags = ConditionFlags()
    p = ctx.params
    recent_days = {
        "delirium_recent": p.delirium_condition_days,
        "itb_withdrawal_sign": p.itb_withdrawal_sign_days,
    }
    aud_ids: list[str] = []
    for cond in conditions:
        if _status_code(cond.get("verificationStatus")) in _EXCLUDED_VERIFICATION:
            continue
        clinical = _status_code(cond.get("clinicalStatus"))
        current = clinical is None or clinical in _CURRENT
        hits = _hits(ctx, cond.get("code"))
        if not hits:
            continue
        if not current and "pregnancy" in hits:
            ended = parse_datetime(cond.get("abatementDateTime"), ctx.tz) or parse_datetime(
                cond.get("recordedDate"), ctx.tz
            )
            if ended is not None and (
                flags.pregnancy_ended is None or ended > flags.pregnancy_ended
            ):
                flags.pregnancy_ended = ended
        for flag, (vs_id, history) in CONDITION_SETS.items():
            if (current or history) and vs_id in hits:
                setattr(flags, flag, True)
                if flag == "alcohol_use_disorder":
                    aud_ids.append(as_str(cond.get("id")) or "?")
        if not current:
            continue
        for flag, vs_id in RECENT_SETS.items():
            if vs_id not in hits:
                continue
            onset = parse_datetime(cond.get("onsetDateTime"), ctx.tz)
            if onset is None:
                onset, _ = period_bounds(cond.get("onsetPeriod"), ctx.tz)
            if onset is None:
                onset = parse_datetime(cond.get("recordedDate") or cond.get("assertedDate"), ctx.tz)
            if onset is not None and ctx.now - timedelta(days=recent_days[flag]) <= onset:
                setattr(flags, flag, True)
    flags.alcohol_condition_ids = tuple(aud_ids)
    for proc in procedures:
        status = (as_str(proc.get("status")) or "").lower()
        if status in ("entered-in-error", "not-done"):
            continue
        when = parse_datetime(proc.get("performedDateTime"), ctx.tz)
        if when is None:
            start, end = period_bounds(proc.get("performedPeriod"), ctx.tz)
            when = end or start
        planned = status in ("preparation", "in-progress", "on-hold")
        hits = _hits(ctx, proc.get("code"))
        if "dialysis" in hits and (
            status == "in-progress"
            or (when is not None and when >= ctx.now - timedelta(days=p.dialysis_procedure_days))
        ):
            flags.on_dialysis = True
        if "itb-pump-removal" in hits and (
            planned
            or (when is not None and when >= ctx.now - timedelta(days=p.pump_removal_lookback_days))
        ):
            flags.pump_removal = True
    for req in requests:
        status = (as_str(req.get("status")) or "").lower()
        code = as_dict(req.get("code"))
        if code is not None and "concept" in code:  # R5 CodeableReference
            code = as_dict(code.get("concept"))
        if status in ("draft", "active", "on-hold") and "itb-pump-removal" in _hits(ctx, code):
            flags.pump_removal = True
    return flags
