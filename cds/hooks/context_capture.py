"""Who and where a hook call was about, in the words its own data used.

The review console shows a pharmacist the patient's name and MRN, the ward, the
prescriber and the order as received. They come from what the call already carried (its
prefetch, or what the service fetched for it): stored with the invocation as the audit of
what the service saw, never fetched later, never logged. Every value is optional; a
missing or malformed resource gives no value, never an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

JSON = Mapping[str, Any]

#: HL7 v2 table 0203 "MR": the identifier type of a medical record number.
MRN_TYPE = "MR"
_MRN_SYSTEM = re.compile(r"mrn|medical.?record", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]+")


def _text(value: Any, limit: int = 200) -> str | None:
    if not isinstance(value, str):
        return None
    value = " ".join(_CONTROL.sub(" ", value).split())
    return value[:limit] or None


def _by_type(resources: Iterable[Any], rtype: str) -> list[JSON]:
    return [r for r in resources if isinstance(r, Mapping) and r.get("resourceType") == rtype]


def _find(resources: Iterable[Any], rtype: str, rid: str | None) -> JSON | None:
    if not rid:
        return None
    return next((r for r in _by_type(resources, rtype) if r.get("id") == rid), None)


def _ref_id(ref: Any, rtype: str) -> str | None:
    """``"Practitioner/7"`` or ``"https://x/fhir/Practitioner/7"`` -> ``"7"``."""
    if not isinstance(ref, str):
        return None
    parts = ref.rstrip("/").split("/")
    return parts[-1] if len(parts) >= 2 and parts[-2] == rtype and parts[-1] else None


def human_name(names: Any, *, family_first: bool) -> str | None:
    """The name to show: ``official``, else ``usual``, else the first not ``old``."""
    if not isinstance(names, list):
        return None
    usable = [n for n in names if isinstance(n, Mapping) and n.get("use") not in ("old",)]
    for use in ("official", "usual", None):
        pick = next((n for n in usable if use is None or n.get("use") == use), None)
        if pick is not None:
            break
    else:
        return None
    if _text(pick.get("text")):
        return _text(pick.get("text"))
    given = " ".join(g for g in (_text(x) for x in pick.get("given") or []) if g)
    family = _text(pick.get("family")) or ""
    prefix = " ".join(p for p in (_text(x) for x in pick.get("prefix") or []) if p)
    if family_first:
        text = f"{family}, {given}" if family and given else family or given
    else:
        text = " ".join(p for p in (prefix, given, family) if p)
    return _text(text)


def mrn(identifiers: Any) -> str | None:
    """The medical record number: the identifier typed ``MR``, else one whose system
    names an MRN (``.../mrn``, ``medical-record``); never an ``old`` one."""
    if not isinstance(identifiers, list):
        return None
    ids = [
        i
        for i in identifiers
        if isinstance(i, Mapping) and i.get("use") != "old" and _text(i.get("value"), 64)
    ]

    def typed_mr(i: JSON) -> bool:
        kind = i.get("type")
        codings = kind.get("coding") if isinstance(kind, Mapping) else None
        return any(isinstance(c, Mapping) and c.get("code") == MRN_TYPE for c in codings or [])

    def mrn_system(i: JSON) -> bool:
        return isinstance(i.get("system"), str) and bool(_MRN_SYSTEM.search(i["system"]))

    pick = next((i for i in ids if typed_mr(i)), None) or next(
        (i for i in ids if mrn_system(i)), None
    )
    return _text(pick.get("value"), 64) if pick else None


def location(encounter: JSON | None, resources: list[Any]) -> str | None:
    """Where the encounter says the patient is: its active locations (ward, bed), else
    those without a status, else the last one listed."""
    if encounter is None or not isinstance(encounter.get("location"), list):
        return None
    entries = [e for e in encounter["location"] if isinstance(e, Mapping)]
    chosen = [e for e in entries if e.get("status") == "active"]
    chosen = chosen or [e for e in entries if not e.get("status")] or entries[-1:]
    words: list[str] = []
    for e in chosen[:3]:
        ref: JSON = e["location"] if isinstance(e.get("location"), Mapping) else {}
        text = _text(ref.get("display"))
        if text is None:
            place = _find(resources, "Location", _ref_id(ref.get("reference"), "Location"))
            text = _text(place.get("name")) if place else None
        if text and text not in words:
            words.append(text)
    return _text(" · ".join(words))


def _prescriber_name(user_id: str | None, resources: list[Any]) -> str | None:
    who = _find(resources, "Practitioner", _ref_id(user_id, "Practitioner"))
    if who is None:
        role = _find(resources, "PractitionerRole", _ref_id(user_id, "PractitionerRole"))
        if role is not None:
            ref: JSON = (
                role["practitioner"] if isinstance(role.get("practitioner"), Mapping) else {}
            )
            who = _find(resources, "Practitioner", _ref_id(ref.get("reference"), "Practitioner"))
            if who is None:
                return _text(ref.get("display"))
    return human_name(who.get("name"), family_first=False) if who else None


def capture(
    resources: list[Any],
    *,
    patient_id: str | None,
    user_id: str | None,
    encounter_id: str | None,
) -> dict[str, str] | None:
    """``patient_name``, ``patient_mrn``, ``location`` and ``prescriber_name`` where the
    call's resources say so (``None`` when they say nothing)."""
    out: dict[str, str | None] = {}
    patients = _by_type(resources, "Patient")
    patient = _find(patients, "Patient", patient_id) or (
        patients[0] if len(patients) == 1 else None
    )
    if patient is not None:
        out["patient_name"] = human_name(patient.get("name"), family_first=True)
        out["patient_mrn"] = mrn(patient.get("identifier"))
    out["location"] = location(_find(resources, "Encounter", encounter_id), resources)
    out["prescriber_name"] = _prescriber_name(user_id, resources)
    kept = {k: v for k, v in out.items() if v}
    return kept or None


# --- the order as received, in words -----------------------------------------------------

_UNITS = {"ug": "µg", "mcg": "µg", "ml": "mL", "tbl": "tablet", "tab": "tablet"}
_PERIODS = {"h": "hour", "d": "day", "wk": "week", "mo": "month", "min": "minute"}


def _concept(c: Any) -> str | None:
    if not isinstance(c, Mapping):
        return None
    if _text(c.get("text")):
        return _text(c.get("text"))
    for coding in c.get("coding") or []:
        if isinstance(coding, Mapping) and _text(coding.get("display")):
            return _text(coding.get("display"))
    return None


def _number(v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return f"{v:g}"


def _unit(q: Mapping[str, Any]) -> str:
    raw = q.get("unit") or q.get("code") or ""
    unit = str(raw).strip().strip("{}") if isinstance(raw, str) else ""
    return _UNITS.get(unit.lower(), unit)


def _dose(d: Mapping[str, Any]) -> str | None:
    for dr in d.get("doseAndRate") or []:
        if not isinstance(dr, Mapping):
            continue
        q = dr.get("doseQuantity")
        if isinstance(q, Mapping) and _number(q.get("value")):
            return f"{_number(q['value'])} {_unit(q)}".strip()
        rng = dr.get("doseRange")
        lo = rng.get("low") if isinstance(rng, Mapping) else None
        hi = rng.get("high") if isinstance(rng, Mapping) else None
        if isinstance(lo, Mapping) and isinstance(hi, Mapping):
            low, high = _number(lo.get("value")), _number(hi.get("value"))
            if low and high:
                return f"{low}–{high} {_unit(hi)}".strip()
    return None


def _timing(t: Any) -> str | None:
    if not isinstance(t, Mapping):
        return None
    rep = t.get("repeat")
    if isinstance(rep, Mapping):
        f, p, unit = rep.get("frequency", 1), rep.get("period"), rep.get("periodUnit")
        name = _PERIODS.get(unit) if isinstance(unit, str) else None
        if _number(f) and _number(p) and name:
            f, p = float(f or 0), float(p or 0)
            if p == 1:
                times = {1.0: "once", 2.0: "twice"}.get(f, f"{f:g} times")
                return f"{times} a {name}"
            if f == 1:
                return f"every {p:g} {name}s"
            return f"{f:g} times every {p:g} {name}s"
    return _concept(t.get("code"))


def _instruction(d: Any) -> str | None:
    if not isinstance(d, Mapping):
        return None
    if _text(d.get("text")):
        return _text(d.get("text"))
    parts = [_dose(d), _timing(d.get("timing"))]
    if d.get("asNeededBoolean") is True or isinstance(d.get("asNeededCodeableConcept"), Mapping):
        parts.append("as needed")
    text = " ".join(p for p in parts if p)
    route = _concept(d.get("route"))
    if route:
        route = route.removesuffix(" route").removesuffix(" Route")
        text = f"{text}, {route.lower() if route[:1].isupper() else route}" if text else route
    return _text(text)


def order_words(resource: Any, limit: int = 500) -> str | None:
    """``<Drug> 20 MG Oral Tablet: 1 pill 3 times a day`` (each dosage step; the status
    when it is not a plain draft or active order)."""
    if not isinstance(resource, Mapping):
        return None
    ref = resource.get("medicationReference")
    drug = _concept(resource.get("medicationCodeableConcept")) or (
        _text(ref.get("display")) if isinstance(ref, Mapping) else None
    )
    steps = [s for s in (_instruction(d) for d in resource.get("dosageInstruction") or []) if s]
    text = (drug or "Medication") + (": " + "; then ".join(steps) if steps else "")
    status = resource.get("status")
    if isinstance(status, str) and status not in ("draft", "active"):
        text += f" ({status})"
    return _text(text, limit)
