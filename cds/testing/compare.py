"""Comparing two evaluations: one normaliser for cards, and a readable difference.

A card is compared by (order id, category, indicator, sorted rule ids, suggestions); the
suggestions without their uuids, with doses in mg and schedules as administrations per
day: what the clinician would accept, not how it is spelled.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from cds.cards import BuiltCard, card_extension
from cds.clinical.dosing import admins_per_day
from cds.clinical.terminology import get_terminology
from cds.clinical.units import convert_mass, mass_unit
from cds.testing.evaluation import Outcome

__all__ = ["CardKey", "card_key", "card_keys", "outcome_diff", "show_key"]

CardKey = tuple[str, str, str, tuple[str, ...], str]


def _canonical(value: Any, key: str = "") -> Any:
    """Drop uuids; doses to mg; timings to administrations per day (plus bounds)."""
    if isinstance(value, list):
        return [_canonical(v, key) for v in value]
    if not isinstance(value, dict):
        return value
    if key == "timing":
        per_day, _ = admins_per_day(value, get_terminology())
        if per_day is not None:
            bounds = (value.get("repeat") or {}).get("boundsPeriod")
            return {"perDay": round(per_day, 9), "bounds": bounds}
    unit = value.get("code") or value.get("unit")
    if "value" in value and isinstance(unit, str) and isinstance(value["value"], int | float):
        mass = mass_unit(unit)
        if mass is not None:
            mg = convert_mass(float(value["value"]), mass, "mg")
            return {"value": round(mg, 6), "unit": "mg"}
    return {k: _canonical(v, k) for k, v in value.items() if k != "uuid"}


def card_key(card: Mapping[str, Any] | BuiltCard) -> CardKey:
    """(order id, category, indicator, sorted rule ids, suggestions) of one card.

    Suggestions are compared without their uuids, with doses in mg and schedules as
    administrations per day: what the clinician would accept, not how it is spelled.
    """
    c = card.card if isinstance(card, BuiltCard) else card
    ext = card_extension(c)
    suggestions = [
        {
            "label": s.get("label"),
            "isRecommended": s.get("isRecommended"),
            "actions": _canonical(s.get("actions")),
        }
        for s in c.get("suggestions") or []
    ]
    return (
        str(ext.get("orderId", "")),
        str(((c.get("source") or {}).get("topic") or {}).get("code", "")),
        str(c.get("indicator", "")),
        tuple(sorted(ext.get("ruleIds") or [])),
        json.dumps(suggestions, sort_keys=True),
    )


def card_keys(cards: Iterable[Mapping[str, Any] | BuiltCard]) -> list[CardKey]:
    """The normalised card set (sorted), for comparing two evaluations."""
    return sorted(card_key(c) for c in cards)


def show_key(key: CardKey) -> str:
    """One card key in a line: order, category, indicator, rules and fix labels."""
    order, category, indicator, rules, sugg = key
    s = json.loads(sugg)
    fix = f"; fix: {', '.join(str(x['label']) for x in s)}" if s else ""
    return f"{order or '(request)'} {category} {indicator} [{', '.join(rules)}]{fix}"


def _json_diff(a: Any, b: Any, path: str = "") -> list[str]:
    """The paths where two JSON values differ, with both values (first few only)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _json_diff(a.get(k, "(absent)"), b.get(k, "(absent)"), f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in _json_diff(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [f"{path or '.'}: {json.dumps(a)} vs {json.dumps(b)}"]


def outcome_diff(a: Outcome, b: Outcome, what_a: str, what_b: str) -> str | None:
    """None when two outcomes agree (status and normalised cards), else what differs."""
    if a.status != b.status:
        return f"HTTP {a.status} ({what_a}) vs {b.status} ({what_b}): {a.error or b.error}"
    ka, kb = card_keys(a.cards), card_keys(b.cards)
    if ka == kb:
        return None
    only_a = [k for k in ka if k not in kb]
    only_b = [k for k in kb if k not in ka]
    lines = [f"cards differ ({what_a} vs {what_b}):"]
    lines += [f"  only {what_a}: {show_key(k)}" for k in only_a]
    lines += [f"  only {what_b}: {show_key(k)}" for k in only_b]
    for x in only_a:  # same card, different fix: say where the suggestions differ
        for y in only_b:
            if x[:4] == y[:4]:
                paths = _json_diff(json.loads(x[4]), json.loads(y[4]), "suggestions")
                lines += [f"  suggestion differs at {p}" for p in paths[:5]]
    return "\n".join(lines)
