"""Turning stored JSON (card, facts, FHIR resources) into what a pharmacist can read.

The card and facts shapes belong to other modules and will grow, so nothing here
requires a field: known fields get good labels and units, anything else is still shown
(flattened, humanised), and nothing is ever rendered as HTML except through
``render_markdown`` (markdown-it-py with raw HTML disabled and images off).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from functools import cache
from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup

_md = (
    MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    .enable(["table", "strikethrough"])
    .disable("image")
)


def render_markdown(text: str | None) -> Markup:
    """Card detail markdown as HTML; raw HTML in the source comes out as text."""
    if not text:
        return Markup("")
    return Markup(_md.render(text))  # noqa: S704 - markdown-it escapes; html=False


def _as_datetime(value: datetime | date | str) -> datetime | date | None:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            try:
                return date.fromisoformat(value[:10])
            except ValueError:
                return None
    return value


def fmt_dt(value: datetime | str | None, tz: tzinfo | None = None) -> str:
    """A timestamp in the site's zone: ``2026-11-24 08:13 GMT`` (stored as UTC)."""
    if value is None:
        return "–"
    parsed = _as_datetime(value)
    if not isinstance(parsed, datetime):
        return str(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    local = parsed.astimezone(tz or UTC)
    return local.strftime("%Y-%m-%d %H:%M ") + (local.tzname() or "UTC")


def fmt_day(value: datetime | date | str | None, tz: tzinfo | None = None) -> str:
    """The site-local day of a timestamp (a date stays itself): ``2026-11-24``."""
    if value is None:
        return "–"
    parsed = _as_datetime(value)
    if isinstance(parsed, datetime):
        aware = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        return aware.astimezone(tz or UTC).date().isoformat()
    return parsed.isoformat() if isinstance(parsed, date) else str(value)


def fmt_num(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".") if value % 1 else f"{value:,.0f}"
    return str(value)


_WORDS = {
    "egfr": "eGFR",
    "crcl": "CrCl",
    "spo2": "SpO2",
    "gcs": "GCS",
    "rass": "RASS",
    "itb": "ITB",
    "prn": "PRN",
    "id": "ID",
    "ids": "IDs",
    "mg": "mg",
    "kg": "kg",
    "ug": "µg",
    "ml": "mL",
    "dl": "dL",
    "bmi": "BMI",
    "aki": "AKI",
    "sbp": "SBP",
    "cns": "CNS",
}
# Suffixes that are units: ``weight_kg`` reads "Weight (kg)".
_UNIT_SUFFIX = {
    "_mg": "mg",
    "_ug": "µg",
    "_kg": "kg",
    "_cm": "cm",
    "_mg_dl": "mg/dL",
    "_ms": "ms",
    "_days": "days",
    "_hours": "h",
    "_h": "h",
    "_c": "°C",
    "_pct": "%",
}


_LABELS = {
    "daily": "Daily dose (highest step)",
    "first_step_daily": "Daily dose (first step)",
    "regimen_daily": "Regimen daily dose after signing",
    "current_daily": "Current daily dose",
    "admin_per_day": "Administrations per day",
    "prior_daily": "Daily dose before change",
    "after_daily": "Daily dose after change",
    "renal_value": "Renal value",
    "hookInstance": "hookInstance",
}


def humanize(key: str) -> str:
    """``weight_kg`` -> ``Weight (kg)``, ``hookInstance`` -> ``Hook instance``."""
    if key in _LABELS:
        return _LABELS[key]
    unit = ""
    for suffix, label in sorted(_UNIT_SUFFIX.items(), key=lambda kv: -len(kv[0])):
        if key.endswith(suffix) and len(key) > len(suffix):
            key, unit = key[: -len(suffix)], label
            break
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", key).replace("_", " ").replace("-", " ")
    parts = [_WORDS.get(w.lower(), w.lower()) for w in words.split()]
    if parts and parts[0] == parts[0].lower():
        parts[0] = parts[0][:1].upper() + parts[0][1:]
    text = " ".join(parts) or key
    return f"{text} ({unit})" if unit else text


def _scalar(value: Any, tz: tzinfo | None = None) -> str:
    if value is None:
        return "–"
    if isinstance(value, str) and re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}", value):
        return fmt_dt(value, tz)
    if isinstance(value, datetime):
        return fmt_dt(value, tz)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return "; ".join(f"{humanize(k)}: {_scalar(v, tz)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_scalar(v, tz) for v in value) or "–"
    return fmt_num(value)


@dataclass
class Section:
    title: str
    rows: list[tuple[str, str]] = field(default_factory=list)


def _flatten(
    prefix: str, value: Any, rows: list[tuple[str, str]], tz: tzinfo | None = None
) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(f"{prefix} › {humanize(k)}" if prefix else humanize(k), v, rows, tz)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, item in enumerate(value, 1):
            _flatten(f"{prefix} {i}" if len(value) > 1 else prefix, item, rows, tz)
    else:
        rows.append((prefix, _scalar(value, tz)))


_OBSERVATIONS = frozenset(
    {"resp_rate", "spo2", "gcs", "gcs_drop_48h", "rass", "sbp", "temp_max_24h_c"}
)
_CONTEXT = frozenset({"kind", "hook"})


def _is_renal(key: str) -> bool:
    return key.startswith(("renal", "creatinine", "egfr")) or key == "on_dialysis"


@cache
def _fact_groups() -> tuple[frozenset[str], frozenset[str], frozenset[str], frozenset[str]]:
    """Field names of the facts contract: (order, patient, interaction, data issue).

    Read from ``cds.clinical.facts`` so a field added there lands in the right section
    without a change here; if that module cannot be imported the page still renders
    (everything under "Other facts").
    """
    try:
        from cds.clinical import facts as contract
    except Exception:  # noqa: BLE001 - presentation must not depend on it loading
        return frozenset(), frozenset(), frozenset(), frozenset()

    def names(cls: Any) -> frozenset[str]:
        return frozenset(f.name for f in dataclasses.fields(cls))

    return (
        names(contract.OrderFacts) | {"medication_text", "order_text"},
        names(contract.PatientFacts) | {"weight_date"},
        names(contract.InteractionFacts) - {"order_id"},
        names(contract.DataIssue) - {"order_id"},
    )


def _section_of(key: str, value: Any) -> str:
    order, patient, interaction, issue = _fact_groups()
    if key in _CONTEXT:
        return "Context"
    if _is_renal(key):
        return "Renal function"
    if key in _OBSERVATIONS:
        return "Observations"
    if key in interaction:
        return "Interaction"
    if key in issue:
        return "Data problem"
    if key in order:
        return "Order"
    if key in patient:
        return "Conditions" if isinstance(value, bool) and key not in {"inpatient"} else "Patient"
    if isinstance(value, bool):
        return "Conditions"  # a pack's own flag (epilepsy, seizure history...)
    return "Other facts"


_SECTION_ORDER = (
    "Order",
    "Patient",
    "Renal function",
    "Observations",
    "Interaction",
    "Conditions",
    "Data problem",
    "Other facts",
    "Context",
)


def fact_sections(facts: dict[str, Any] | None, tz: tzinfo | None = None) -> list[Section]:
    """The facts a card used, as titled tables a pharmacist can scan.

    Flat engine facts are grouped by the facts contract (order, patient, renal...);
    nested objects (the renal measure with its value and date, lists of interacting
    drugs) are flattened into labelled rows of their section.
    """
    if not facts:
        return []
    sections: dict[str, Section] = {}
    for key, value in facts.items():
        title = _section_of(key, value)
        if isinstance(value, dict) and title == "Other facts":
            title = humanize(key)
        sec = sections.setdefault(title, Section(title))
        _flatten(humanize(key), value, sec.rows, tz)
    main = [sections.pop(t) for t in _SECTION_ORDER if t != "Context" and t in sections]
    context = [sections.pop("Context")] if "Context" in sections else []
    return main + list(sections.values()) + context


def _quantity(q: dict[str, Any] | None) -> str | None:
    if not isinstance(q, dict) or q.get("value") is None:
        return None
    return f"{fmt_num(q['value'])} {q.get('unit') or q.get('code') or ''}".strip()


def _timing(t: dict[str, Any] | None) -> str | None:
    rep = (t or {}).get("repeat") if isinstance(t, dict) else None
    if not isinstance(rep, dict):
        return None
    out = []
    if rep.get("frequency") is not None and rep.get("period") is not None:
        out.append(
            f"{fmt_num(rep['frequency'])} × per {fmt_num(rep['period'])} "
            f"{rep.get('periodUnit', '')}".strip()
        )
    if rep.get("boundsPeriod"):
        b = rep["boundsPeriod"]
        out.append(f"from {b.get('start', '?')} to {b.get('end', '…')}")
    if rep.get("boundsDuration"):
        out.append(f"for {_quantity(rep['boundsDuration'])}")
    return ", ".join(out) or None


def _concept(c: Any) -> str | None:
    if not isinstance(c, dict):
        return None
    if c.get("text"):
        return str(c["text"])
    codings = c.get("coding") or []
    return (
        ", ".join(str(x.get("display") or x.get("code")) for x in codings if isinstance(x, dict))
        or None
    )


def resource_lines(resource: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The lines of a suggested resource a pharmacist checks: drug, dose, timing."""
    if not isinstance(resource, dict):
        return []
    lines: list[tuple[str, str]] = [
        (
            "Resource",
            f"{resource.get('resourceType', '?')}"
            + (f"/{resource['id']}" if resource.get("id") else ""),
        )
    ]
    med = _concept(resource.get("medicationCodeableConcept"))
    if med:
        lines.append(("Medication", med))
    for key in ("status", "intent"):
        if resource.get(key):
            lines.append((humanize(key), str(resource[key])))
    for i, dose in enumerate(resource.get("dosageInstruction") or [], 1):
        if not isinstance(dose, dict):
            continue
        label = f"Dosage {dose.get('sequence', i)}"
        parts = [dose.get("text")]
        for dr in dose.get("doseAndRate") or []:
            if isinstance(dr, dict):
                parts.append(_quantity(dr.get("doseQuantity")))
        parts.append(_timing(dose.get("timing")))
        parts.append(_concept(dose.get("route")))
        lines.append((label, " · ".join(p for p in parts if p) or "–"))
    return lines


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False, default=str)


# Extension keys the alert page already shows from the card row (pack, version, rule).
_SHOWN_ELSEWHERE = frozenset({"packId", "packVersion", "severityRule"})
_SAFE_URL = re.compile(r"^https?://", re.IGNORECASE)


@dataclass
class ActionView:
    type: str
    description: str
    lines: list[tuple[str, str]]
    json: str | None


@dataclass
class SuggestionView:
    uuid: str
    label: str
    recommended: bool
    actions: list[ActionView]


@dataclass
class CardView:
    """The card as the prescriber saw it, made safe and readable."""

    summary: str
    indicator: str
    source_label: str
    topic: str
    detail_html: Markup
    suggestions: list[SuggestionView]
    override_reasons: list[str]
    links: list[tuple[str, str]]
    selection_behavior: str | None
    extension: list[tuple[str, str]]


def card_view(card: dict[str, Any]) -> CardView:
    source: dict[str, Any] = card["source"] if isinstance(card.get("source"), dict) else {}
    topic: dict[str, Any] = source["topic"] if isinstance(source.get("topic"), dict) else {}
    suggestions = []
    for s in card.get("suggestions") or []:
        if not isinstance(s, dict):
            continue
        actions = [
            ActionView(
                type=str(a.get("type", "")),
                description=str(a.get("description", "")),
                lines=resource_lines(a.get("resource")),
                json=pretty_json(a["resource"]) if a.get("resource") else None,
            )
            for a in s.get("actions") or []
            if isinstance(a, dict)
        ]
        suggestions.append(
            SuggestionView(
                uuid=str(s.get("uuid", "")),
                label=str(s.get("label", "")),
                recommended=bool(s.get("isRecommended")),
                actions=actions,
            )
        )
    links = [
        (str(x.get("label", x.get("url"))), str(x["url"]))
        for x in card.get("links") or []
        if isinstance(x, dict) and isinstance(x.get("url"), str) and _SAFE_URL.match(x["url"])
    ]
    ext_rows: list[tuple[str, str]] = []
    ext = card.get("extension")
    # ``{"posologic": {...}}`` (or the legacy ``"cds-<pack>"``): the namespace says
    # nothing to a pharmacist.
    if isinstance(ext, dict) and len(ext) == 1 and isinstance(next(iter(ext.values())), dict):
        ext = next(iter(ext.values()))
    if isinstance(ext, dict):
        ext = {k: v for k, v in ext.items() if k not in _SHOWN_ELSEWHERE}
    if ext:
        _flatten("", ext, ext_rows)
    return CardView(
        summary=str(card.get("summary", "")),
        indicator=str(card.get("indicator", "")),
        source_label=str(source.get("label", "")),
        topic=str(topic.get("display") or topic.get("code") or ""),
        detail_html=render_markdown(card.get("detail")),
        suggestions=suggestions,
        override_reasons=[
            str(r.get("display") or r.get("code"))
            for r in card.get("overrideReasons") or []
            if isinstance(r, dict)
        ],
        links=links,
        selection_behavior=card.get("selectionBehavior"),
        extension=ext_rows,
    )
