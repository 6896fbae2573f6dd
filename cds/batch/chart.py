"""A patient's export records -> what a ``patient-view`` call for them would carry.

Why this exists: the sweep must run the very pipeline a hook call runs, on the very input
an EHR would send when the chart is opened. The services' prefetch (``cds.hooks.services``)
asks for the Patient, every MedicationRequest (with its Medication) and
MedicationStatement, the newest renal results, weights and heights, the last days of
vitals, every Condition, recent Procedures and the current Encounter. A Bulk Data export
holds years of history instead, so this module cuts it the same way, by date only (no
clinical judgement: the clinical layer decides what each resource means):

- Patient, Medication, Condition: all (a problem list has no "recent");
- MedicationRequest / MedicationStatement: all but those that ended before the window
  (status not active/on-hold/draft and every date they carry older than the cut-off);
- Observation: all within the window, plus for each code the newest older one (the
  renal prefetch is "newest first, 50", not "last year": a stale creatinine still
  drives the renal bands, and its card says how old it is);
- Encounter, Procedure, ServiceRequest: those still going on (or planned) or dated within
  the window.

The window is the longest look-back any loaded pack's clinical parameters name, and at
least :data:`MIN_WINDOW_DAYS` (a year of renal results and weights, with margin). When in
doubt (no date, an unreadable date) a resource is kept: the clinical layer reports what it
cannot read, as it would for a hook call.

The encounter in context is the patient's in-progress Encounter with the latest start
(what an EHR sends when the chart is opened during an admission); none otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cds.clinical.extract import HookInput
from cds.engine.pack import CompiledPack

MIN_WINDOW_DAYS = 400.0
_ONGOING_MED = frozenset({"active", "on-hold", "draft", "intended"})
_ONGOING_ENCOUNTER = frozenset({"in-progress", "arrived", "triaged", "onleave"})
_ONGOING_PROCEDURE = frozenset({"preparation", "in-progress", "on-hold"})
_ONGOING_REQUEST = frozenset({"active", "draft", "on-hold"})


def window_days(packs: Sequence[CompiledPack]) -> float:
    """The longest look-back of the packs' clinical parameters, at least MIN_WINDOW_DAYS."""
    longest = MIN_WINDOW_DAYS
    for pack in packs:
        for name, value in pack.clinical.model_dump().items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            if name.endswith("_days"):
                longest = max(longest, float(value))
            elif name.endswith("_hours"):
                longest = max(longest, float(value) / 24)
    return longest


def _when(value: Any) -> datetime | None:
    """The latest instant a FHIR date/dateTime could mean (UTC); None when unreadable.

    Coarse on purpose: it only decides what falls in a window of a year or more, and
    rounding a partial date up keeps a resource rather than dropping it.
    """
    if not isinstance(value, str) or len(value) < 4:
        return None
    text = value.strip()
    try:
        if len(text) == 4:
            return datetime(int(text), 12, 31, 23, 59, tzinfo=UTC)
        if len(text) == 7:
            y, m = int(text[:4]), int(text[5:7])
            nxt = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=UTC)
            return nxt - timedelta(minutes=1)
        if len(text) == 10:
            day = datetime.fromisoformat(text).replace(tzinfo=UTC)
            return day + timedelta(hours=23, minutes=59)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _period(value: Any) -> list[Any]:
    return [value.get("end"), value.get("start")] if isinstance(value, dict) else []


def _dates(res: dict[str, Any]) -> list[datetime | None]:
    """Every date a resource carries that says when it was in effect."""
    raw: list[Any] = [
        res.get("authoredOn"),
        res.get("effectiveDateTime"),
        res.get("effectiveInstant"),
        res.get("dateAsserted"),
        res.get("performedDateTime"),
        res.get("occurrenceDateTime"),
        res.get("recordedDate"),
        res.get("issued"),
    ]
    for key in ("effectivePeriod", "performedPeriod", "occurrencePeriod", "period"):
        raw += _period(res.get(key))
    dispense = res.get("dispenseRequest")
    if isinstance(dispense, dict):
        raw += _period(dispense.get("validityPeriod"))
    for holder in ("dosageInstruction", "dosage"):
        items = res.get(holder)
        for d in items if isinstance(items, list) else []:
            timing = d.get("timing") if isinstance(d, dict) else None
            repeat = timing.get("repeat") if isinstance(timing, dict) else None
            if isinstance(repeat, dict):
                raw += _period(repeat.get("boundsPeriod"))
    return [_when(v) for v in raw if v is not None]


def _recent(res: dict[str, Any], cutoff: datetime, ongoing: frozenset[str]) -> bool:
    """Still going on, dated within the window, or undatable (kept when in doubt)."""
    if res.get("status") in ongoing:
        return True
    dates = _dates(res)
    if not dates or any(d is None for d in dates):
        return True
    return max(d for d in dates if d is not None) >= cutoff


def _code_key(res: dict[str, Any]) -> str:
    code = res.get("code")
    if isinstance(code, dict):
        for c in code.get("coding") or []:
            if isinstance(c, dict) and isinstance(c.get("code"), str):
                return f"{c.get('system')}|{c['code']}"
        if isinstance(code.get("text"), str):
            return f"text|{code['text']}"
    return "?"


def _observations(items: list[dict[str, Any]], cutoff: datetime) -> list[dict[str, Any]]:
    keep: list[dict[str, Any]] = []
    newest_old: dict[str, tuple[datetime, int]] = {}
    for i, res in enumerate(items):
        dates = [d for d in _dates(res) if d is not None]
        when = max(dates) if dates else None
        if when is None or when >= cutoff:
            keep.append(res)
            continue
        key = _code_key(res)
        if key not in newest_old or when > newest_old[key][0]:
            newest_old[key] = (when, i)
    chosen = {i for _, i in newest_old.values()}
    return keep + [items[i] for i in sorted(chosen)]


def _current_encounter(encounters: Iterable[dict[str, Any]]) -> str | None:
    best: tuple[datetime, str] | None = None
    floor = datetime.min.replace(tzinfo=UTC)
    for enc in encounters:
        eid = enc.get("id")
        if enc.get("status") not in _ONGOING_ENCOUNTER or not isinstance(eid, str) or not eid:
            continue
        period = enc.get("period")
        start = _when(period.get("start")) if isinstance(period, dict) else None
        candidate = (start or floor, eid)
        if best is None or candidate > best:
            best = candidate
    return best[1] if best else None


def patient_view_input(
    patient_id: str, resources: Sequence[dict[str, Any]], *, now: datetime, window: float
) -> HookInput:
    """The ``patient-view`` input a hook call for ``patient_id`` at ``now`` would carry."""
    cutoff = now - timedelta(days=window)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for res in resources:
        by_type.setdefault(str(res.get("resourceType")), []).append(res)
    chosen: list[dict[str, Any]] = []
    chosen += by_type.get("Patient", [])
    for rtype in ("MedicationRequest", "MedicationStatement"):
        chosen += [r for r in by_type.get(rtype, []) if _recent(r, cutoff, _ONGOING_MED)]
    chosen += by_type.get("Medication", [])
    chosen += _observations(by_type.get("Observation", []), cutoff)
    chosen += by_type.get("Condition", [])
    encounters = [r for r in by_type.get("Encounter", []) if _recent(r, cutoff, _ONGOING_ENCOUNTER)]
    chosen += encounters
    chosen += [r for r in by_type.get("Procedure", []) if _recent(r, cutoff, _ONGOING_PROCEDURE)]
    chosen += [r for r in by_type.get("ServiceRequest", []) if _recent(r, cutoff, _ONGOING_REQUEST)]
    return HookInput(
        hook="patient-view",
        patient_id=patient_id,
        encounter_id=_current_encounter(encounters),
        draft_orders=[],
        selections=None,
        resources=chosen,
    )
