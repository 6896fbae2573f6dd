"""Taper planner (A6): reverse titration from the dose the patient takes now.

Every ``interval`` days each administration drops by ``step`` until it is at or below the
``floor``, then one administration a day fewer, then stop; a reduction to a lower target
stops at the target. It starts from the *current per-administration dose of the order being
changed* (20 mg QID going to 5 mg BID tapers 15, 10, 5 mg QID, 5 mg TID, then 5 mg BID),
never from the whole regimen divided by the new frequency, and a stop of one of two
concurrent orders tapers that order alone. ``first`` starts the plan at a lower, allowed
dose when the current one would itself fire a rule (a renal limit): the re-check's repair.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta

from cds.clinical.facts import OrderFacts
from cds.engine.findings import Finding
from cds.suggestions.dose import ordered_admins
from cds.suggestions.model import EPS, DosePlan, TaperStep


def rounding_down(x: float, step: float) -> float:
    return math.floor(x / step + EPS) * step


def taper_steps(
    *,
    per_admin: float,
    admins: int,
    target_daily: float,
    step: float,
    floor: float,
    interval_days: float,
    start: datetime,
    first: tuple[float, int] | None = None,
) -> list[TaperStep]:
    """The steps from ``per_admin`` x ``admins`` down to ``target_daily`` (0: a stop); a
    target above 0 ends with an open-ended placeholder step (the target itself)."""
    plan: list[tuple[float, int]] = []
    p, n = per_admin, admins
    if first is not None:
        p, n = first
        plan.append((p, n))
    while n > 0:
        if p > floor + EPS:
            p = max(p - step, floor)  # never below the floor (nor a zero dose)
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


def ladder_plan(
    *,
    per_admin: float,
    admins: int,
    rungs: list[float],
    low_step: float | None,
    low_floor: float | None,
    interval_days: float,
    min_days: float,
    extend_last: bool,
) -> list[tuple[float, float, float]]:
    """(dose, administrations a day, days) of a ladder taper: every administration one rung
    down (a dose between rungs to the rung below), then one administration a day fewer,
    then, while the taper is shorter than ``min_days``, ``low_step`` lower down to
    ``low_floor`` and then every other day (``extend_last``: the last step lasts instead)."""
    plan: list[tuple[float, float, float]] = []
    p, n = per_admin, float(admins)
    ladder = sorted(rungs, reverse=True)
    while ladder and p > ladder[-1] + EPS:
        p = next(r for r in ladder if r < p - EPS)
        plan.append((p, n, interval_days))
    while n > 1:
        n -= 1
        plan.append((p, n, interval_days))
    run = sum(d for _, _, d in plan)
    if run >= min_days - EPS:
        return plan
    if extend_last or low_step is None or low_floor is None:
        if plan:
            q, k, d = plan[-1]
            plan[-1] = (q, k, d + (min_days - run))
        else:
            plan.append((p, n, min_days))
        return plan
    while run < min_days - EPS and p - low_step >= low_floor - EPS:
        p -= low_step
        plan.append((p, 1.0, interval_days))
        run += interval_days
    if run < min_days - EPS:
        plan.append((p, 0.5, min_days - run))
    return plan


def taper_for(
    order: OrderFacts,
    finding: Finding,
    *,
    now: datetime,
    first: DosePlan | None = None,
    dispensable: Callable[[float], float] | None = None,
) -> tuple[list[TaperStep], DosePlan | None] | None:
    """Taper the order being changed from its current dose to its new dose (or a stop);
    no steps when the new dose is within one step of the current one (nothing to taper).

    ``dispensable``: the largest amount not above a dose that the product can give. When
    the doses differ between administrations, the even split rounded down to the taper's
    step can lose much of the dose at once (2.5 + 15 mg TID is 8.75 mg x 6: 5 mg x 6 is
    -43% before the first step down); the taper then starts at the even split as dispensed
    (7.5 mg x 6), and steps down from there."""
    p = finding.suggestion.params if finding.suggestion else {}
    if order.route != "oral":
        return None
    per_admin, admins = order.current_per_admin, order.current_admins
    if per_admin is None or admins is None or abs(admins - round(admins)) > EPS or admins < 1:
        return None
    daily = order.current_order_daily
    if daily is not None and per_admin * admins > daily + EPS:
        # doses that differ between administrations (20 mg mornings, 10 mg nights): the
        # taper starts from the even split of what is taken, never from the largest dose
        even = daily / admins
        per_admin = rounding_down(even, float(p["step_per_admin"] or p.get("low_step") or 1.0))
        held = dispensable(even) if dispensable is not None else 0.0
        if first is None and held > per_admin + EPS:
            first = DosePlan(per_admin=held, admin_per_day=int(round(admins)))
            per_admin = held
        if per_admin <= EPS:
            return None
    target: DosePlan | None = None
    target_daily = 0.0
    if order.change != "stop" and order.continuing:
        t_admins = ordered_admins(order)
        step0 = order.steps[0] if order.steps else None
        if t_admins is None or step0 is None or step0.single_max is None:
            return None
        target = DosePlan(per_admin=step0.single_max, admin_per_day=t_admins)
        target_daily = target.daily
    start = datetime(now.year, now.month, now.day, tzinfo=now.tzinfo)
    if p.get("rungs") or p.get("family_rungs") or p.get("liquid_fractions"):
        steps = _ladder(order, p, per_admin, admins, target, target_daily, start, first)
    else:
        steps = taper_steps(
            per_admin=float(per_admin),
            admins=int(round(admins)),
            target_daily=target_daily,
            step=float(p["step_per_admin"]),
            floor=float(p["floor_per_admin"]),
            interval_days=float(p["interval_days"]),
            start=start,
            first=(first.per_admin, first.admin_per_day) if first is not None else None,
        )
    if not [s for s in steps if s.end is not None]:
        return [], target  # nothing between now and the target: the order needs no taper
    return steps, target


def _ladder(
    order: OrderFacts,
    p: dict,
    per_admin: float,
    admins: float,
    target: DosePlan | None,
    target_daily: float,
    start: datetime,
    first: DosePlan | None,
) -> list[TaperStep]:
    rungs = list(p.get("family_rungs", {}).get(order.family or "", p.get("rungs") or []))
    liquid = order.strength is not None and getattr(order.strength, "per", None) == "mL"
    extend = bool(order.family in p.get("family_rungs", {}))
    if liquid and p.get("liquid_fractions") and order.strength_per_ml:
        step_mg = 0.5 * order.strength_per_ml  # 0.5 mL
        rungs = [rounding_down(f * per_admin, step_mg) for f in p["liquid_fractions"]]
        rungs = [r for r in rungs if r > EPS]
        extend = True
    p0, n0 = (first.per_admin, first.admin_per_day) if first is not None else (per_admin, admins)
    plan = ladder_plan(
        per_admin=float(p0),
        admins=int(round(n0)),
        rungs=rungs,
        low_step=p.get("low_step"),
        low_floor=p.get("low_floor"),
        interval_days=float(p["interval_days"]),
        min_days=float(p.get("min_days") or 0),
        extend_last=extend,
    )
    if first is not None:
        plan.insert(
            0, (float(first.per_admin), float(first.admin_per_day), float(p["interval_days"]))
        )
    out: list[TaperStep] = []
    day = start
    for dose, n, days in plan:
        if target_daily > EPS and dose * n <= target_daily + EPS:
            break
        span = timedelta(days=days)
        out.append(TaperStep(dose, n, day, day + span - timedelta(days=1)))
        day += span
    if target_daily > EPS:
        out.append(TaperStep(-1.0, -1, day, None))
    return out


def describe_taper(steps: list[TaperStep], target: DosePlan | None, unit: str = "mg") -> str:
    """Compact words for a taper, e.g. "15, 10, 5 mg 4x/day, then 5 mg 3x, 2x, 1x/day (3 days
    each); stop on day 19". The full schedule is in the suggested resource."""
    from cds.suggestions.render import fmt_dose

    timed = [s for s in steps if s.end is not None]
    # administrations a day as counted ("3x", not "3.0x"); a half is kept ("0.5x")
    seq = [(s.per_admin, _count(s.admin_per_day)) for s in timed]
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
            described.append(f"{', '.join(doses)} {unit} {n}x/day")
        else:
            freqs = [f"{n}x"]
            while j + 1 < len(seq) and abs(seq[j + 1][0] - p) < EPS:
                j += 1
                freqs.append(f"{seq[j][1]}x")
            described.append(f"{fmt_dose(p)} {unit} {', '.join(freqs)}/day")
        i = j + 1
    text = ", then ".join(described)
    first_end, last_end = (timed[0].end, timed[-1].end) if timed else (None, None)
    if timed and first_end is not None:
        each = " each" if len(timed) > 1 else ""
        text += f" ({(first_end - timed[0].start).days + 1} days{each})"
    if target is not None:
        text += f", then {fmt_dose(target.per_admin)} {unit} {_count(target.admin_per_day)}x/day"
    elif timed and last_end is not None:
        text += f"; stop on day {(last_end - timed[0].start).days + 2}"
    return text


def _count(n: float) -> float | int:
    return int(n) if abs(n - round(n)) < EPS else n
