"""Labelled-start planner (A4): a new start as the label's schedule, one order with
sequenced instructions.

Why its own planner: a new start that is too fast is not fixed by a lower dose but by the
label's schedule (300 mg day 1, 300 mg twice daily day 2, three times daily from day 3).
The schedule is the pack's (``labelled_start`` params: [from_day, dose, administrations]);
it stops at the ordered daily dose (a suggestion never offers more than was ordered) and at
any lower limit another fired rule sets (a renal band), and it is given by the ordered
product when that can give every dose, else by the product the dispensing policy names.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cds.clinical.facts import OrderFacts
from cds.engine.findings import Finding
from cds.suggestions.dispense import Dispenser
from cds.suggestions.model import EPS, Dispensed, TaperStep
from cds.suggestions.render import dose_words


def labelled_start(
    order: OrderFacts,
    finding: Finding,
    *,
    dispenser: Dispenser,
    now: datetime,
    cap_daily: float | None = None,
) -> tuple[list[TaperStep], Dispensed, str | None] | None:
    """The schedule's steps (the last open-ended), the product, and the ``when`` code."""
    if finding.suggestion is None or order.daily is None or not order.new_start:
        return None
    p = finding.suggestion.params
    ordered = order.regimen_first_daily if order.regimen_first_daily is not None else order.daily
    if ordered - (order.first_step_daily or order.daily) > EPS:
        # other orders of the drug share the regimen: the label's schedule is for the whole
        # drug, and splitting it between orders is the prescriber's call (no fix offered)
        return None
    chosen: list[tuple[float, float, int]] = []
    for day, per, n in p["steps"]:
        daily = float(per) * int(n)
        if daily > order.daily + EPS or (cap_daily is not None and daily > cap_daily + EPS):
            break
        chosen.append((float(day), float(per), int(n)))
    if not chosen:
        return None
    amounts = sorted({per for _, per, _ in chosen})
    dispensed = dispenser.choose(
        product=order.product,
        strength=order.strength,
        route_unit="mg",
        amounts=amounts,
        family=order.family,
    )
    if dispensed is None:
        # no one product gives every step: doses in mg, each given by some product of the
        # family (the pharmacy dispenses a starter pack), else no suggestion
        # (a product of the family gives the amount exactly: ``choose`` with no product
        # accepts any amount, an order of unknown strength, so it cannot be the test here)
        if not all(abs(dispenser.floor_amount(a, family=order.family) - a) <= EPS for a in amounts):
            return None  # a step no strength can give (unsplit, at most N units): no fix
        dispensed = Dispensed()
    day0 = datetime(now.year, now.month, now.day, tzinfo=now.tzinfo)
    steps = []
    for i, (day, per, n) in enumerate(chosen):
        begin = day0 + timedelta(days=day)
        end = day0 + timedelta(days=chosen[i + 1][0] - 1) if i + 1 < len(chosen) else None
        steps.append(TaperStep(per, n, begin, end))
    return steps, dispensed, p.get("when")


def describe_start(steps: list[TaperStep], unit: str = "mg") -> str:
    """ "300 mg once daily (day 1), 300 mg twice daily (day 2), then 300 mg three times
    daily from day 3"."""
    day0 = steps[0].start
    parts = []
    for s in steps:
        first = (s.start - day0).days + 1
        if s.end is None:
            parts.append(
                f"then {dose_words(s.per_admin, s.admin_per_day, unit=unit)} from day {first}"
            )
            continue
        last = (s.end - day0).days + 1
        days = f"day {first}" if last == first else f"days {first}-{last}"
        parts.append(f"{dose_words(s.per_admin, s.admin_per_day, unit=unit)} ({days})")
    if len(parts) == 1:
        return parts[0].removeprefix("then ")
    return ", ".join(parts)
