"""Fixes as real FHIR: corrected MedicationRequests and taper plans.

Pure functions of an order's facts and the fired findings' suggestion specs (numbers
already resolved from the pack). Every dose suggestion on one order uses the lowest
daily dose that all the fired rules allow (part A, card conventions), so two cards on
one order never suggest different doses. The pipeline re-evaluates each suggested
resource before offering it; what fails that check is never shown.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cds.clinical.facts import OrderFacts, PatientFacts
from cds.engine.findings import Finding

UCUM = "http://unitsofmeasure.org"
EPS = 1e-9


@dataclass(frozen=True)
class DosePlan:
    """A corrected regimen for one order: per-administration dose x administrations."""

    per_admin: float  # mg (oral)
    admin_per_day: int
    start: datetime | None = None  # titration: when the new dose may begin
    reasons: tuple[str, ...] = ()

    @property
    def daily(self) -> float:
        return self.per_admin * self.admin_per_day


@dataclass(frozen=True)
class TaperStep:
    per_admin: float
    admin_per_day: int
    start: datetime
    end: datetime | None  # None: the open-ended target


@dataclass(frozen=True)
class Suggestion:
    """One suggestion of a card: label, and the actions (FHIR) it carries."""

    label: str
    actions: tuple[dict[str, Any], ...]
    recommended: bool
    kind: str  # dose, taper, continue
    rule_ids: tuple[str, ...]


def round_down(x: float, step: float) -> float:
    return math.floor(x / step + EPS) * step


def _ordered_admins(order: OrderFacts) -> int | None:
    n = order.admin_per_day
    if n is None or n <= 0 or abs(n - round(n)) > EPS:
        return None  # fractional (QOD) schedules are left to the prescriber
    return int(round(n))


def dose_plan(
    order: OrderFacts,
    patient: PatientFacts,
    findings: list[Finding],
    *,
    rounding: float,
    now: datetime,
) -> DosePlan | None:
    """The one corrected dose for ``order`` that every fired dose rule allows."""
    specs = [
        f
        for f in findings
        if f.suggestion and f.suggestion.kind in ("dose_limit", "titration_step")
    ]
    if not specs or order.route != "oral" or not order.dose_computable:
        return None
    admins = _ordered_admins(order)
    ordered_daily = order.regimen_daily if order.regimen_daily is not None else order.daily
    own_daily = order.first_step_daily if order.first_step_daily is not None else order.daily
    if admins is None or ordered_daily is None or own_daily is None or order.is_taper:
        return None
    others = max(0.0, ordered_daily - (order.daily or 0.0))  # other oral orders' share
    daily_caps: list[float] = []
    single_caps: list[float] = []
    start: datetime | None = None
    forced_admins: int | None = None
    for f in specs:
        p = f.suggestion.params if f.suggestion else {}
        if f.suggestion and f.suggestion.kind == "dose_limit":
            limit = p.get("daily_max")
            if order.new_start and p.get("daily_max_new_start") is not None:
                limit = p["daily_max_new_start"]
            if p.get("daily_max_per_kg") is not None:
                if patient.weight_kg is None:
                    continue
                limit = p["daily_max_per_kg"] * patient.weight_kg
            if limit is None:
                continue
            allowed = float(limit)
            if p.get("fraction_of_ordered") is not None:
                allowed = min(p["fraction_of_ordered"] * ordered_daily, allowed)
            daily_caps.append(allowed - others)
            if p.get("single_max") is not None:
                single_caps.append(float(p["single_max"]))
        else:  # titration_step
            child = patient.age is not None and patient.age < p.get("adult_age", 18)
            if order.new_start:
                if child or p.get("start_per_admin") is None:
                    continue  # children: text only (about 0.3 mg/kg/day in 2-4 doses)
                forced_admins = int(p["start_admin_per_day"])
                daily_caps.append(p["start_per_admin"] * forced_admins - others)
                single_caps.append(float(p["start_per_admin"]))
            elif order.regimen_admin_per_day:
                # nothing active now (a restart after a hold or a gap): the step is from 0
                current_per_admin = (order.current_daily or 0.0) / order.regimen_admin_per_day
                step = p["step_per_admin"]
                daily_caps.append((current_per_admin + step) * order.regimen_admin_per_day - others)
                days = p.get("min_interval_days_paediatric") if child else p["min_interval_days"]
                if order.current_start is not None and days is not None:
                    earliest = order.current_start + timedelta(days=float(days))
                    if earliest > now:
                        start = earliest
    if not daily_caps:
        return None
    target = min(daily_caps)
    n = forced_admins or admins
    per_admin = round_down(target / n, rounding)
    if single_caps:
        per_admin = min(per_admin, round_down(min(single_caps), rounding))
    if per_admin <= 0:
        n = int(round_down(target, rounding) / rounding + EPS)
        per_admin = rounding
        if n <= 0:
            return None
    if per_admin * n >= own_daily - EPS and n == admins and start is None:
        return None  # nothing lower to suggest, and no later start either
    if per_admin * n > own_daily + EPS:
        return None  # a fix never raises the order it corrects
    return DosePlan(
        per_admin=per_admin, admin_per_day=n, start=start, reasons=tuple(f.rule_id for f in specs)
    )


def taper_steps(
    *,
    per_admin: float,
    admins: int,
    target_daily: float,
    step: float,
    floor: float,
    interval_days: float,
    start: datetime,
) -> list[TaperStep]:
    """Reverse titration: -step per dose every interval until <= floor, then one dose fewer
    a day, then stop; a taper to a lower target ends on the target (open-ended)."""
    plan: list[tuple[float, int]] = []
    p, n = per_admin, admins
    while n > 0:
        if p > floor + EPS:
            p = max(p - step, 0.0)
            if p <= EPS:
                p, n = floor, n  # never a zero dose
        else:
            n -= 1
        if n > 0:
            plan.append((p, n))
    out: list[TaperStep] = []
    day = start
    span = timedelta(days=interval_days)
    for p, n in plan:
        if target_daily > EPS and p * n <= target_daily + EPS:
            break
        out.append(TaperStep(p, n, day, day + span - timedelta(days=1)))
        day += span
    if target_daily > EPS:
        out.append(TaperStep(-1.0, -1, day, None))  # placeholder: the target itself
    return out


# ---- FHIR rendering ------------------------------------------------------------------------


def _quantity(order: OrderFacts, mg: float) -> dict[str, Any]:
    """A dose in the unit the prescriber wrote (mL of the product when written in mL)."""
    unit = (order.dose_unit_written or "mg").lower()
    if unit in ("ml", "mL".lower()) and order.strength_per_ml:
        value = mg / order.strength_per_ml
        return {"value": _num(value), "unit": "mL", "system": UCUM, "code": "mL"}
    if unit in ("ug", "mcg"):
        return {"value": _num(mg * 1000), "unit": "ug", "system": UCUM, "code": "ug"}
    return {"value": _num(mg), "unit": "mg", "system": UCUM, "code": "mg"}


def _num(x: float) -> float | int:
    r = round(x, 6)
    return int(r) if abs(r - round(r)) < EPS else r


def _timing(
    admins: int, start: datetime | None = None, end: datetime | None = None
) -> dict[str, Any]:
    repeat: dict[str, Any] = {"frequency": admins, "period": 1, "periodUnit": "d"}
    if start is not None:
        bounds = {"start": start.date().isoformat()}
        if end is not None:
            bounds["end"] = end.date().isoformat()
        repeat["boundsPeriod"] = bounds
    return {"repeat": repeat}


def _base_instruction(resource: dict[str, Any]) -> dict[str, Any]:
    di = resource.get("dosageInstruction") or [{}]
    first = di[0] if isinstance(di, list) and di and isinstance(di[0], dict) else {}
    keep = {
        k: v for k, v in first.items() if k in ("route", "method", "site", "patientInstruction")
    }
    return copy.deepcopy(keep)


def _corrected(resource: dict[str, Any]) -> dict[str, Any]:
    new = copy.deepcopy(resource)
    if new.get("status") in ("stopped", "cancelled", "on-hold"):
        new["status"] = "active"  # the order continues, on the corrected dose
    return new


def fmt_dose(x: float) -> str:
    return str(_num(x))


FREQ_WORDS = {1: "once daily", 2: "twice daily", 3: "three times daily", 4: "four times daily"}


def freq_words(n: int) -> str:
    return FREQ_WORDS.get(n, f"{n} times daily")


def dose_resource(order: OrderFacts, plan: DosePlan) -> dict[str, Any] | None:
    """The draft with its dose (and, if needed, frequency or start) corrected."""
    if not order.resource:
        return None
    new = _corrected(order.resource)
    di = new.get("dosageInstruction")
    if not isinstance(di, list) or len(di) != 1 or not isinstance(di[0], dict):
        return None  # several instructions: the prescriber restructures, no automatic fix
    inst = di[0]
    inst.pop("text", None)
    qty = _quantity(order, plan.per_admin)
    inst["doseAndRate"] = [{"doseQuantity": qty}]
    raw_timing = inst.get("timing")
    timing: dict[str, Any] = raw_timing if isinstance(raw_timing, dict) else {}
    if plan.admin_per_day != _ordered_admins(order) or plan.start is not None or "code" in timing:
        raw_repeat = timing.get("repeat")
        repeat: dict[str, Any] = raw_repeat if isinstance(raw_repeat, dict) else {}
        inst["timing"] = _timing(plan.admin_per_day, plan.start)
        if plan.start is None and isinstance(repeat.get("boundsPeriod"), dict):
            inst["timing"]["repeat"]["boundsPeriod"] = copy.deepcopy(repeat["boundsPeriod"])
    if "maxDosePerPeriod" in inst:  # a PRN maximum must not outlive the corrected dose
        total = _quantity(order, plan.daily)
        inst["maxDosePerPeriod"] = {
            "numerator": total,
            "denominator": {"value": 1, "unit": "d", "system": UCUM, "code": "d"},
        }
    if "maxDosePerAdministration" in inst:
        inst["maxDosePerAdministration"] = copy.deepcopy(qty)
    inst["text"] = f"{fmt_dose(plan.per_admin)} mg {freq_words(plan.admin_per_day)}" + (
        f" from {plan.start.date().isoformat()}" if plan.start else ""
    )
    return new


def taper_resource(
    order: OrderFacts,
    steps: list[TaperStep],
    target: DosePlan | None,
) -> dict[str, Any] | None:
    """One MedicationRequest with sequenced dosage instructions (the taper)."""
    if not order.resource or not steps:
        return None
    new = _corrected(order.resource)
    base = _base_instruction(order.resource)
    instructions = []
    for i, s in enumerate(steps, start=1):
        inst = copy.deepcopy(base)
        inst["sequence"] = i
        if s.end is None and target is not None:
            p, n = target.per_admin, target.admin_per_day
            inst["text"] = f"Then {fmt_dose(p)} mg {freq_words(n)}"
            inst["timing"] = _timing(n, s.start)
        else:
            p, n = s.per_admin, s.admin_per_day
            inst["text"] = (
                f"{fmt_dose(p)} mg {freq_words(n)} "
                f"from {s.start.date().isoformat()} to {s.end.date().isoformat()}"
                if s.end
                else f"{fmt_dose(p)} mg {freq_words(n)}"
            )
            inst["timing"] = _timing(n, s.start, s.end)
        inst["doseAndRate"] = [{"doseQuantity": _quantity(order, p)}]
        instructions.append(inst)
    new["dosageInstruction"] = instructions
    return new


def taper_for(
    order: OrderFacts, finding: Finding, *, now: datetime
) -> tuple[list[TaperStep], DosePlan | None] | None:
    """Taper from the dose before the change down to the new dose (or to a stop)."""
    p = finding.suggestion.params if finding.suggestion else {}
    admins = _ordered_admins(order)
    if order.prior_daily is None or admins is None or order.route != "oral":
        return None
    per_admin = order.prior_daily / admins
    target: DosePlan | None = None
    target_daily = order.after_daily or 0.0
    if order.change == "decrease" and target_daily > 0:
        steps0 = order.steps[0] if order.steps else None
        t_admins = _ordered_admins(order) or admins
        t_per = steps0.single_max if steps0 and steps0.single_max else target_daily / t_admins
        target = DosePlan(per_admin=t_per, admin_per_day=t_admins)
        target_daily = target.daily
    start = datetime(now.year, now.month, now.day, tzinfo=now.tzinfo)
    steps = taper_steps(
        per_admin=per_admin,
        admins=admins,
        target_daily=target_daily,
        step=float(p["step_per_admin"]),
        floor=float(p["floor_per_admin"]),
        interval_days=float(p["interval_days"]),
        start=start,
    )
    return steps, target


def describe_taper(steps: list[TaperStep], target: DosePlan | None) -> str:
    """Compact words for a taper, e.g. "15, 10, 5 mg 4x/day, then 5 mg 3x, 2x, 1x/day (3 days
    each); stop on day 19". The full schedule is in the suggested resource."""
    timed = [s for s in steps if s.end is not None]
    seq = [(s.per_admin, s.admin_per_day) for s in timed]
    described: list[str] = []
    i = 0
    while i < len(seq):
        p, n = seq[i]
        j = i
        doses = [fmt_dose(p)]
        while j + 1 < len(seq) and seq[j + 1][1] == n and abs(seq[j + 1][0] - seq[j][0]) > EPS:
            j += 1
            doses.append(fmt_dose(seq[j][0]))
        if j > i:
            described.append(f"{', '.join(doses)} mg {n}x/day")
        else:
            freqs = [f"{n}x"]
            while j + 1 < len(seq) and abs(seq[j + 1][0] - p) < EPS:
                j += 1
                freqs.append(f"{seq[j][1]}x")
            described.append(f"{fmt_dose(p)} mg {', '.join(freqs)}/day")
        i = j + 1
    text = ", then ".join(described)
    first_end, last_end = (timed[0].end, timed[-1].end) if timed else (None, None)
    if timed and first_end is not None:
        text += f" ({(first_end - timed[0].start).days + 1} days each)"
    if target is not None:
        text += f", then {fmt_dose(target.per_admin)} mg {target.admin_per_day}x/day"
    elif timed and last_end is not None:
        text += f"; stop on day {(last_end - timed[0].start).days + 2}"
    return text
