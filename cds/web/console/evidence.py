"""What the fired rules read, in clinical words, with the values that drove them.

The alert page leads with this; the whole facts table stays below, folded. Which facts a
rule reads comes from the loaded pack (the fields of its compiled condition, via
``cds.engine.conditions.fields_of``); a card from a pack or rule that is no longer loaded
falls back to the facts its category usually rests on. Values come from the facts stored
with the card, never recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from cds.web.console.present import fmt_day, fmt_num, humanize

#: Fields that say how the engine was asked, not anything clinical.
_PLUMBING = frozenset({"kind", "hook"})

#: Facts a category rests on, for cards whose rule is not loaded any more.
_BY_CATEGORY: dict[str, tuple[str, ...]] = {
    "renal-adjustment": (
        "renal_value",
        "egfr_for_beers",
        "on_dialysis",
        "renal_after_start",
        "creatinine_rise_48h_mg_dl",
        "creatinine_ratio_7d",
        "regimen_daily",
        "regimen_first_daily",
    ),
    "dose-ceiling": (
        "daily",
        "regimen_daily",
        "single_max",
        "regimen_daily_per_kg",
        "age",
        "weight_kg",
        "inpatient",
    ),
    "titration-rate": (
        "current_daily",
        "regimen_first_daily",
        "increase_daily",
        "increase_per_admin",
        "days_on_current",
        "new_start",
        "step_up_fraction",
    ),
    "withdrawal-risk": (
        "change",
        "prior_daily",
        "after_daily",
        "after_to_prior",
        "chronic_user",
        "refill_overdue_days",
        "pump_removal",
    ),
    "side-effect": ("resp_rate", "spo2", "gcs", "gcs_drop_48h", "rass", "sbp", "temp_max_24h_c"),
    "interaction": ("drug_class", "drug_names", "pair_has_draft"),
    "data-quality": ("issue", "detail", "measure", "value_text", "renal_age_hours"),
}

_DOSES = {
    "daily": "Daily dose ordered (highest step)",
    "first_step_daily": "Daily dose ordered (first step)",
    "regimen_daily": "Total daily dose after signing",
    "regimen_first_daily": "Total daily dose after signing (first step)",
    "current_daily": "Daily dose before this order",
    "increase_daily": "Daily increase",
    "prior_daily": "Daily dose before the change",
    "after_daily": "Daily dose after the change",
    "current_order_daily": "Current order's daily dose",
}
_PER_DOSE = {
    "single_max": "Largest single dose",
    "single_min": "Smallest single dose",
    "increase_per_admin": "Increase per dose",
    "bolus_ug": "Bolus",
}
_WORDS: dict[str, tuple[str, str]] = {  # field -> (label, unit)
    "age": ("Age", "years"),
    "weight_kg": ("Weight", "kg"),
    "height_cm": ("Height", "cm"),
    "admin_per_day": ("Doses per day", ""),
    "regimen_daily_per_kg": ("Daily dose per kg", "mg/kg/day"),
    "days_on_current": ("Days on the current dose", "days"),
    "egfr_for_beers": ("eGFR (for the Beers criteria)", "mL/min/1.73m2"),
    "creatinine_rise_48h_mg_dl": ("Creatinine rise within 48 h", "mg/dL"),
    "creatinine_ratio_7d": ("Creatinine against the lowest of 7 days", "×"),
    "resp_rate": ("Respiratory rate", "/min"),
    "spo2": ("SpO2", "%"),
    "gcs": ("Glasgow Coma Scale", ""),
    "gcs_drop_48h": ("GCS fall within 48 h", "points"),
    "rass": ("RASS", ""),
    "sbp": ("Systolic blood pressure", "mmHg"),
    "temp_max_24h_c": ("Highest temperature in 24 h", "°C"),
    "refill_overdue_days": ("Pump refill overdue by", "days"),
    "renal_age_hours": ("Age of the renal result", "hours"),
    "weight_age_days": ("Age of the weight", "days"),
    "bolus_interval_hours": ("Hours between boluses", "h"),
}
_YES_NO = {
    "on_dialysis": "On dialysis",
    "inpatient": "Inpatient",
    "new_start": "New start (no recent order of the drug)",
    "renal_after_start": "Renal result newer than the current regimen",
    "chronic_user": "Long-term user",
    "pump_removal": "Pump removal",
    "pair_has_draft": "One of the pair is being ordered now",
    "prn": "As needed (PRN)",
    "prn_only": "As needed only",
    "is_draft": "New order (draft)",
    "continuing": "Continues after signing",
    "pregnant": "Pregnant",
    "pump_active": "Intrathecal pump active",
    "tapering": "Dose tapering",
    "is_taper": "Written as a taper",
}
_TEXT = {
    "drug_class": "Interacting class",
    "drug_names": "Other active medicines",
    "route": "Route",
    "status": "Order status",
    "change": "Change to the regimen",
    "issue": "Data problem",
    "detail": "What was wrong",
    "measure": "Measurement",
    "value_text": "Value received",
}


@dataclass
class FiredRule:
    rule_id: str
    title: str | None  # the pack's words for it (None: not in the pack loaded now)
    severity: str
    sets_severity: bool


@dataclass
class Evidence:
    """What the fired rules read: the values that drove them (numbers, drugs, dates),
    then the yes/no conditions they checked, each fact once; and the rules themselves."""

    rules: list[FiredRule] = field(default_factory=list)
    values: list[tuple[str, str]] = field(default_factory=list)
    checks: list[tuple[str, str]] = field(default_factory=list)
    from_pack: bool = True  # False: a rule is not loaded now; its category's facts are shown


def _dose_unit(facts: dict[str, Any]) -> str:
    return "µg" if facts.get("route") == "intrathecal" else "mg"


def _renal_line(facts: dict[str, Any], tz: tzinfo | None) -> tuple[str, str] | None:
    m = facts.get("renal_measure")
    value = facts.get("renal_value")
    if not isinstance(m, dict):
        if value is None:
            return None
        return ("Renal function", fmt_num(value))
    label = str(facts.get("renal_label") or humanize(str(m.get("kind") or "renal")))
    parts = [f"{fmt_num(m.get('value'))} {m.get('unit') or ''}".strip()]
    if m.get("date"):
        parts.append(f"dated {fmt_day(m['date'], tz)}")
    if m.get("creatinine_mg_dl") is not None:
        parts.append(f"from creatinine {fmt_num(m['creatinine_mg_dl'])} mg/dL")
    if m.get("weight_kg") is not None:
        parts.append(f"weight {fmt_num(m['weight_kg'])} kg ({m.get('weight_kind') or 'actual'})")
    return (label.replace("_", " "), ", ".join(parts))


def fact_line(name: str, facts: dict[str, Any], tz: tzinfo | None = None) -> tuple[str, str]:
    """One fact in clinical words: ``("Total daily dose after signing", "60 mg/day")``."""
    if name == "renal_value":
        line = _renal_line(facts, tz)
        if line is not None:
            return line
    value = facts.get(name)
    if value is None:
        label = (
            _DOSES.get(name)
            or _PER_DOSE.get(name)
            or _WORDS.get(name, (None, ""))[0]
            or _YES_NO.get(name)
            or _TEXT.get(name)
            or humanize(name)
        )
        return (label, "not recorded")
    unit = _dose_unit(facts)
    if name in _DOSES:
        return (_DOSES[name], f"{fmt_num(value)} {unit}/day")
    if name in _PER_DOSE:
        return (_PER_DOSE[name], f"{fmt_num(value)} {'µg' if name == 'bolus_ug' else unit}")
    if name in _WORDS:
        label, suffix = _WORDS[name]
        return (label, f"{fmt_num(value)} {suffix}".strip())
    if name in _YES_NO:
        return (_YES_NO[name], "yes" if value else "no")
    fraction = name in {"step_up_fraction", "change_24h_fraction", "after_to_prior"}
    if fraction and isinstance(value, int | float) and not isinstance(value, bool):
        return (humanize(name), f"{value * 100:.0f}%")
    if name in _TEXT:
        return (_TEXT[name], str(value).replace("_", " "))
    return (humanize(name), fmt_num(value) if not isinstance(value, str) else value)


def evidence(
    *,
    facts: dict[str, Any] | None,
    category: str,
    fired: list[tuple[str, str, bool]],
    pack: Any | None,
    tz: tzinfo | None = None,
) -> Evidence:
    """``fired``: (rule id, severity, sets severity) of every rule behind the card;
    ``pack``: the loaded ``CompiledPack`` the card came from, if it still is."""
    from cds.engine.conditions import fields_of

    facts = facts or {}
    out = Evidence()
    names: set[str] = set()
    for rule_id, severity, sets in fired:
        compiled = getattr(pack, "rules", {}).get(rule_id) if pack is not None else None
        read: set[str] = set()
        if compiled is not None:
            try:
                read = set(fields_of(compiled.tree)) - _PLUMBING
            except Exception:  # noqa: BLE001 - presentation never depends on engine internals
                compiled = None
        if compiled is None:
            out.from_pack = False
            read = {n for n in _BY_CATEGORY.get(category, ()) if n in facts}
        names |= read
        out.rules.append(FiredRule(rule_id, getattr(compiled, "title", None), severity, sets))
    if category == "interaction" and facts.get("drug_names"):
        names.add("drug_names")
    for name in sorted(names, key=_order):
        line = fact_line(name, facts, tz)
        is_check = name in _YES_NO or name in ("route", "status")
        (out.checks if is_check else out.values).append(line)
    return out


_FIRST = ("drug_names", "drug_class", "renal_value", "regimen_daily", "daily")


def _order(name: str) -> tuple[int, str]:
    """Clinical values first (what drove it), then yes/no conditions, then the order's
    status words."""
    if name in _FIRST:
        return (0, f"{_FIRST.index(name):02d}")
    if name in _TEXT and name not in ("route", "status"):
        return (1, name)
    if name in _YES_NO:
        return (3, name)
    if name in ("route", "status"):
        return (4, name)
    return (2, name)
