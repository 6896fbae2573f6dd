"""Dose planner: the one corrected dose an order's fired dose rules all allow.

Every dose suggestion on one order (A3 ceilings, A4 titration, A5 renal) uses the lowest
daily dose that all the fired rules allow (part A, card conventions), so two cards on one
order never suggest different doses. The numbers come from the findings' suggestion specs
(already resolved from the pack); the amount is rounded down to the pack's multiple, split
over the ordered administrations (fewer when that rounds to nothing), and made dispensable.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from cds.clinical.facts import OrderFacts, PatientFacts
from cds.engine.findings import Finding
from cds.suggestions.dispense import Dispenser
from cds.suggestions.model import EPS, DosePlan

DOSE_KINDS = ("dose_limit", "titration_step", "titration_rate", "schedule", "labelled_start")


def ordered_admins(order: OrderFacts) -> int | None:
    n = order.admin_per_day
    if n is None or n <= 0 or abs(n - round(n)) > EPS:
        return None  # fractional (QOD) schedules are left to the prescriber
    return int(round(n))


def daily_limit(order: OrderFacts, patient: PatientFacts, findings: list[Finding]) -> float | None:
    """The lowest daily dose of this order (its share of the regimen) that the fired
    ``dose_limit`` rules allow, whatever the order's shape (a sequenced start too); None
    when none sets one."""
    ordered = order.regimen_daily if order.regimen_daily is not None else order.daily
    others = max(0.0, (ordered or 0.0) - (order.daily or 0.0))
    limits = []
    for f in findings:
        if not f.suggestion or f.suggestion.kind != "dose_limit":
            continue
        p = f.suggestion.params
        limit = p.get("daily_max")
        if order.new_start and p.get("daily_max_new_start") is not None:
            limit = p["daily_max_new_start"]
        if p.get("daily_max_field") is not None:
            value = f.fact.get(p["daily_max_field"])
            limit = (
                value if isinstance(value, int | float) and not isinstance(value, bool) else None
            )
        if p.get("daily_max_per_kg") is not None:
            limit = p["daily_max_per_kg"] * patient.weight_kg if patient.weight_kg else None
        if limit is not None:
            limits.append(float(limit) - others)
    return min(limits) if limits else None


def dose_plan(
    order: OrderFacts,
    patient: PatientFacts,
    findings: list[Finding],
    *,
    dispenser: Dispenser,
    now: datetime,
    base_daily: float | None = None,
    limits_only: bool = False,
) -> DosePlan | None:
    """The one corrected dose for ``order`` that every fired dose rule allows.

    ``base_daily`` replaces the ordered regimen as the base of "a fraction of the ordered
    dose" (the A6 exception computes the renal offer from the dose before the change);
    ``limits_only`` keeps the limits and ignores the fractions (the highest dose a taper or
    "continue" may start at: it is lowering the dose anyway).
    """
    specs = [
        f
        for f in findings
        if f.suggestion
        and f.suggestion.kind in DOSE_KINDS
        and f.suggestion.kind != "labelled_start"
    ]
    if not specs or order.route != "oral" or not order.dose_computable:
        return None
    admins = ordered_admins(order)
    ordered_daily = order.regimen_daily if order.regimen_daily is not None else order.daily
    own_daily = order.first_step_daily if order.first_step_daily is not None else order.daily
    if admins is None or ordered_daily is None or own_daily is None or order.is_taper:
        return None
    others = max(0.0, ordered_daily - (order.daily or 0.0))  # other oral orders' share
    base = ordered_daily if base_daily is None else base_daily
    daily_caps: list[float] = []
    single_caps: list[float] = []
    start: datetime | None = None
    forced_admins: int | None = None
    start_plan: tuple[float, int, float] | None = None
    admins_cap: int | None = None
    min_per_admin = 0.0
    step_caps: list[float] = []  # per-administration steps, judged at the fix's own count
    when: str | None = None
    rate: dict | None = None
    for f in specs:
        assert f.suggestion is not None
        p = f.suggestion.params
        if f.suggestion.kind == "schedule":
            # the same daily dose at another number of administrations
            forced_admins = int(p["admins_per_day"])
            when = p.get("when") or when
            daily_caps.append(own_daily)
            continue
        if f.suggestion.kind == "titration_rate":
            if order.new_start or not order.regimen_admin_per_day:
                continue
            rate = p
            if p.get("one_step"):
                step_caps.append(float(p["step_per_admin"]))
                current_per_admin = (order.current_daily or 0.0) / order.regimen_admin_per_day
                step = p["step_per_admin"]
                daily_caps.append((current_per_admin + step) * order.regimen_admin_per_day - others)
            else:
                daily_caps.append(own_daily)  # the ordered dose is kept; its start moves
            continue
        if f.suggestion.kind == "dose_limit":
            if p.get("admins_fixed") is not None:
                forced_admins = int(p["admins_fixed"])
            if p.get("admins_per_day") is not None:
                cap = int(p["admins_per_day"])
                admins_cap = cap if admins_cap is None else min(admins_cap, cap)
            min_per_admin = max(min_per_admin, float(p.get("min_per_admin") or 0.0))
            limit = p.get("daily_max")
            if order.new_start and p.get("daily_max_new_start") is not None:
                limit = p["daily_max_new_start"]
            if p.get("daily_max_field") is not None:
                value = f.fact.get(p["daily_max_field"])
                if isinstance(value, bool) or not isinstance(value, int | float):
                    continue
                limit = float(value)
            if p.get("daily_max_per_kg") is not None:
                if patient.weight_kg is None:
                    continue
                limit = p["daily_max_per_kg"] * patient.weight_kg
            if limit is None:
                if p.get("single_max") is None:
                    continue
                # a single-dose cap alone: the same schedule, each dose at most the cap
                single_caps.append(float(p["single_max"]))
                daily_caps.append(own_daily)
                continue
            allowed = float(limit)
            if p.get("fraction_of_ordered") is not None and not limits_only:
                allowed = min(p["fraction_of_ordered"] * base, allowed)
            daily_caps.append(allowed - others)
            if p.get("single_max") is not None:
                single_caps.append(float(p["single_max"]))
        else:  # titration_step
            child = patient.age is not None and patient.age < p.get("adult_age", 18)
            if order.new_start:
                if child or p.get("start_per_admin") is None:
                    continue  # children: text only (about 0.3 mg/kg/day in 2-4 doses)
                # the labelled start (5 mg TID) is the suggestion when it is the tightest
                # limit; a lower renal start is split over the ordered administrations
                start_admins = int(p["start_admin_per_day"])
                start_cap = p["start_per_admin"] * start_admins - others
                start_plan = (start_cap, start_admins, float(p["start_per_admin"]))
                daily_caps.append(start_cap)
            elif order.regimen_admin_per_day:
                # nothing active now (a restart after a gap): the step is from 0
                step_caps.append(float(p["step_per_admin"]))
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
    if start_plan is not None and start_plan[0] <= target + EPS:
        forced_admins = start_plan[1]
        single_caps.append(start_plan[2])
    n = forced_admins or admins
    if admins_cap is not None and forced_admins is None:
        n = min(n, admins_cap)

    def floor(x: float) -> float:
        return dispenser.floor_amount(
            x, product=order.product, strength=order.strength, family=order.family
        )

    # A step limit is per administration of the regimen after the fix: a fix that also
    # changes the count (TID to once daily) may add only step x its own count
    others_admins = max(0.0, (order.regimen_admin_per_day or 0.0) - admins)

    def per_admin_for(k: int) -> float:
        cap = target
        for step in step_caps:
            cap = min(cap, (order.current_daily or 0.0) + step * (k + others_admins) - others)
        value = floor(cap / k)
        if single_caps:
            value = min(value, floor(min(single_caps)))
        return value

    per_admin = per_admin_for(n)
    # never below the pack's smallest sensible dose: fewer administrations a day instead
    while min_per_admin > EPS and per_admin < min_per_admin - EPS and n > 1:
        n -= 1
        per_admin = per_admin_for(n)
    if min_per_admin > EPS and per_admin < min_per_admin - EPS:
        return None
    if per_admin <= 0:
        step = dispenser.policy.rounding
        if step is None:
            return None
        n = int(dispenser.round_down(target) / step + EPS)
        per_admin = step
        if n <= 0:
            return None
    if rate is not None and order.current_start is not None and order.current_daily is not None:
        rise = per_admin * n + others - order.current_daily
        if rise > EPS:
            days = float(rate["interval_days"]) * math.ceil(
                rise / float(rate["per_interval"]) - EPS
            )
            earliest = order.current_start + timedelta(days=days)
            if earliest > now:
                start = earliest if start is None else max(start, earliest)
    if per_admin * n >= own_daily - EPS and n == admins and start is None and when is None:
        return None  # nothing lower to suggest, and no later start either
    if per_admin * n > own_daily + EPS:
        return None  # a fix never raises the order it corrects
    dispensed = None
    while per_admin > EPS:
        dispensed = dispenser.choose(
            product=order.product,
            strength=order.strength,
            route_unit="mg",
            amounts=[per_admin],
            family=order.family,
        )
        if dispensed is not None:
            break
        step = dispenser.policy.rounding
        per_admin = (
            dispenser.round_down(per_admin - step) if step is not None else floor(per_admin - 1e-6)
        )
    if dispensed is None or per_admin <= EPS:
        return None
    return DosePlan(
        per_admin=per_admin,
        admin_per_day=n,
        start=start,
        reasons=tuple(f.rule_id for f in specs),
        dispensed=dispensed,
        when=when,
    )
