"""Suggestions as FHIR: the corrected MedicationRequest, the taper, and their labels.

The corrected order keeps everything the prescriber wrote but the dose (and, where the fix
needs it, the frequency, the start or the product): route, method, PRN, notes. Doses are
written in the unit the prescriber used where the product allows it (mg, mL of a liquid,
or a count of tablets such as ``{pill}``), and a product switch names the new product by
its code and says so in the label.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from cds.clinical.facts import OrderFacts
from cds.clinical.units import count_word, mass_unit
from cds.suggestions.model import EPS, Dispensed, DosePlan, TaperStep

UCUM = "http://unitsofmeasure.org"
FREQ_WORDS = {1: "once daily", 2: "twice daily", 3: "three times daily", 4: "four times daily"}
PRN_WORDS = {1: "once daily", 2: "twice daily", 3: "three times daily", 4: "four times daily"}


def fmt_dose(x: float) -> str:
    return str(_num(x))


def _num(x: float) -> float | int:
    r = round(x, 6)
    return int(r) if abs(r - round(r)) < EPS else r


def freq_words(n: float, prn: bool = False) -> str:
    if 0 < n < 1:
        base = "every other day" if abs(n - 0.5) < EPS else f"every {_num(1 / n)} days"
        return f"up to {base} as needed" if prn else base
    base = FREQ_WORDS.get(int(n), f"{_num(n)} times daily")
    return f"up to {base} as needed" if prn else base


def dose_words(per_admin: float, n: float, prn: bool = False, unit: str = "mg") -> str:
    """ "5 mg three times daily", "15 mg up to four times daily as needed"."""
    return f"{fmt_dose(per_admin)} {unit} {freq_words(n, prn)}"


def _written_kind(order: OrderFacts) -> str:
    unit = (order.dose_unit_written or "mg").strip()
    if unit.lower() in ("ml", "milliliter", "millilitre", "cc"):
        return "volume"
    if mass_unit(unit) is not None:
        return "ug" if mass_unit(unit) == "ug" else "mass"
    if count_word(unit) is not None or unit == "1":
        return "count"
    return "mass"


_FORMS = ("tablet", "capsule")


def quantity(order: OrderFacts, mg: float, dispensed: Dispensed | None) -> dict[str, Any]:
    """A dose in the unit the prescriber wrote, where the chosen product allows it."""
    kind = _written_kind(order)
    per_unit = dispensed.per_unit if dispensed is not None else None
    liquid = dispensed.liquid if dispensed is not None else False
    if kind == "volume" and per_unit and liquid:
        return {"value": _num(mg / per_unit), "unit": "mL", "system": UCUM, "code": "mL"}
    if kind == "count" and per_unit and not liquid:
        code = order.dose_unit_written or "{tablet}"
        # the prescriber's count unit, unless it names another form than the product
        # given (a 600 mg tablet order tapered in 100 mg capsules is counted in capsules)
        form = getattr(getattr(dispensed, "product", None), "form", None)
        written = count_word(code)
        if form in _FORMS and written in _FORMS and written != form:
            code = "{" + form + "}"
        q: dict[str, Any] = {"value": _num(mg / per_unit), "unit": code}
        if code.startswith("{") or code == "1":
            q.update(system=UCUM, code=code)
        return q
    if kind == "ug":
        return {"value": _num(mg * 1000), "unit": "ug", "system": UCUM, "code": "ug"}
    return {"value": _num(mg), "unit": "mg", "system": UCUM, "code": "mg"}


def _timing(
    admins: float,
    start: datetime | None = None,
    end: datetime | None = None,
    when: str | list[str] | None = None,
) -> dict[str, Any]:
    repeat: dict[str, Any] = {"frequency": _num(admins), "period": 1, "periodUnit": "d"}
    if 0 < admins < 1:  # every other day
        repeat.update(frequency=1, period=_num(1 / admins))
    if when:
        repeat["when"] = [when] if isinstance(when, str) else list(when)
    if start is not None:
        bounds = {"start": start.date().isoformat()}
        if end is not None:
            bounds["end"] = end.date().isoformat()
        repeat["boundsPeriod"] = bounds
    return {"repeat": repeat}


def _written_when(resource: dict[str, Any]) -> list[str] | None:
    """The order's ``timing.repeat.when`` (MORN, HS...): a taper step with as many doses a
    day keeps it (a bedtime dose stays at bedtime)."""
    di = resource.get("dosageInstruction") or [{}]
    first = di[0] if isinstance(di, list) and di and isinstance(di[0], dict) else {}
    repeat = (
        (first.get("timing") or {}).get("repeat") if isinstance(first.get("timing"), dict) else None
    )
    when = repeat.get("when") if isinstance(repeat, dict) else None
    if isinstance(when, list) and when and all(isinstance(w, str) for w in when):
        return list(when)
    return None


def _base_instruction(resource: dict[str, Any]) -> dict[str, Any]:
    di = resource.get("dosageInstruction") or [{}]
    first = di[0] if isinstance(di, list) and di and isinstance(di[0], dict) else {}
    keep = {
        k: v
        for k, v in first.items()
        if k in ("route", "method", "site", "patientInstruction", "asNeededBoolean")
    }
    return copy.deepcopy(keep)


def _corrected(resource: dict[str, Any], dispensed: Dispensed | None) -> dict[str, Any]:
    new = copy.deepcopy(resource)
    if new.get("status") in ("stopped", "cancelled", "on-hold"):
        new["status"] = "active"  # the order continues, on the corrected dose
    if dispensed is not None and dispensed.switched and dispensed.product is not None:
        p = dispensed.product
        new.pop("medicationReference", None)
        new.pop("medication", None)
        new["medicationCodeableConcept"] = {
            "coding": [{"system": p.system, "code": p.code, "display": p.display}],
            "text": p.display,
        }
    return new


def product_note(dispensed: Dispensed | None) -> str:
    """ " (use <the product's display>)" when the fix names another product."""
    if dispensed is None or not dispensed.switched or dispensed.product is None:
        return ""
    return f" (as {dispensed.product.display})"


def dose_resource(order: OrderFacts, plan: DosePlan) -> dict[str, Any] | None:
    """The draft with its dose (and, if needed, frequency, start or product) corrected."""
    if not order.resource:
        return None
    new = _corrected(order.resource, plan.dispensed)
    di = new.get("dosageInstruction")
    if not isinstance(di, list) or len(di) != 1 or not isinstance(di[0], dict):
        return None  # several instructions: the prescriber restructures, no automatic fix
    inst = di[0]
    inst.pop("text", None)
    qty = quantity(order, plan.per_admin, plan.dispensed)
    inst["doseAndRate"] = [{"doseQuantity": qty}]
    raw_timing = inst.get("timing")
    timing: dict[str, Any] = raw_timing if isinstance(raw_timing, dict) else {}
    if (
        plan.admin_per_day != _admins(order)
        or plan.start is not None
        or plan.when is not None
        or "code" in timing
    ):
        raw_repeat = timing.get("repeat")
        repeat: dict[str, Any] = raw_repeat if isinstance(raw_repeat, dict) else {}
        inst["timing"] = _timing(plan.admin_per_day, plan.start, when=plan.when)
        if plan.start is None and isinstance(repeat.get("boundsPeriod"), dict):
            inst["timing"]["repeat"]["boundsPeriod"] = copy.deepcopy(repeat["boundsPeriod"])
    if "maxDosePerPeriod" in inst:  # a PRN maximum must not outlive the corrected dose
        total = quantity(order, plan.daily, plan.dispensed)
        inst["maxDosePerPeriod"] = {
            "numerator": total,
            "denominator": {"value": 1, "unit": "d", "system": UCUM, "code": "d"},
        }
    if "maxDosePerAdministration" in inst:
        inst["maxDosePerAdministration"] = copy.deepcopy(qty)
    inst["text"] = dose_words(plan.per_admin, plan.admin_per_day, order.prn) + (
        f" from {plan.start.date().isoformat()}" if plan.start else ""
    )
    return new


def _admins(order: OrderFacts) -> int | None:
    n = order.admin_per_day
    if n is None or abs(n - round(n)) > EPS:
        return None
    return int(round(n))


def taper_resource(
    order: OrderFacts,
    steps: list[TaperStep],
    target: DosePlan | None,
    dispensed: Dispensed | None,
    when: str | None = None,
) -> dict[str, Any] | None:
    """One MedicationRequest with sequenced dosage instructions (the taper)."""
    if not order.resource or not steps:
        return None
    new = _corrected(order.resource, dispensed)
    base = _base_instruction(order.resource)
    base.pop("asNeededBoolean", None)  # a taper is scheduled
    kept_when = _written_when(order.resource)
    instructions = []
    for i, s in enumerate(steps, start=1):
        inst = copy.deepcopy(base)
        inst["sequence"] = i
        if s.end is None and target is not None:
            p, n = target.per_admin, target.admin_per_day
            inst["text"] = f"Then {dose_words(p, n)}"
            inst["timing"] = _timing(
                n, s.start, when=kept_when if kept_when and len(kept_when) == n else None
            )
        else:
            p, n = s.per_admin, s.admin_per_day
            inst["text"] = (
                f"{dose_words(p, n)} from {s.start.date().isoformat()} to "
                f"{s.end.date().isoformat()}"
                if s.end
                else dose_words(p, n)
            )
            inst["timing"] = _timing(
                n,
                s.start,
                s.end,
                when=when or (kept_when if kept_when and len(kept_when) == n else None),
            )
        inst["doseAndRate"] = [{"doseQuantity": quantity(order, p, dispensed)}]
        instructions.append(inst)
    new["dosageInstruction"] = instructions
    return new


def supplement_resource(
    order: OrderFacts, amount: float, dispensed: Dispensed | None
) -> dict[str, Any] | None:
    """The order with each post-dialysis dosage at ``amount`` (the maintenance kept)."""
    if not order.resource or not order.supplement_indices:
        return None
    new = _corrected(order.resource, dispensed)
    dosages = new.get("dosageInstruction")
    if not isinstance(dosages, list):
        return None
    for i in order.supplement_indices:
        if i >= len(dosages) or not isinstance(dosages[i], dict):
            return None
        d = dosages[i]
        d["doseAndRate"] = [{"doseQuantity": quantity(order, amount, dispensed)}]
        d.pop("text", None)  # the prescriber's words named the old dose
    return new


def continue_resource(
    order: OrderFacts, plan: DosePlan | None, now: datetime
) -> dict[str, Any] | None:
    """Keep taking what the patient takes now (the replaced order's dosage), or, when that
    itself breaks a limit, the highest dose the limits allow (``plan``)."""
    if not order.resource:
        return None
    if plan is None:
        cont = _corrected(order.resource, None)
        current = order.current_resource or {}
        if isinstance(current.get("dosageInstruction"), list):
            cont["dosageInstruction"] = copy.deepcopy(current["dosageInstruction"])
        cont["status"] = "active"
        return cont
    cont = _corrected(order.resource, plan.dispensed)
    cont["status"] = "active"
    inst = _base_instruction(order.current_resource or order.resource)
    inst["timing"] = _timing(plan.admin_per_day)
    inst["doseAndRate"] = [{"doseQuantity": quantity(order, plan.per_admin, plan.dispensed)}]
    inst["text"] = dose_words(plan.per_admin, plan.admin_per_day, bool(inst.get("asNeededBoolean")))
    cont["dosageInstruction"] = [inst]
    return cont
