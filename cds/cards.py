"""Findings -> CDS Hooks cards, exactly per the card contract of DESIGN.md.

One card per (order, category[, interacting class]) merging every reason that fired: the
highest severity wins, every reason is listed in the detail, with the facts used and the
evidence. Pure: no I/O; the pipeline supplies the suggestions it has already re-checked.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from markdown_it import MarkdownIt

from cds.clinical.facts import RENAL_LABELS, ClinicalFacts, OrderFacts
from cds.engine.findings import SEVERITY_RANK, Finding
from cds.engine.pack import fmt_number
from cds.markdown import md_text
from cds.suggestions import Suggestion

ALERT_CATEGORY_SYSTEM = "https://posologic.example.org/fhir/CodeSystem/alert-category"
CATEGORY_DISPLAY = {
    "dose-ceiling": "Dose ceiling",
    "titration-rate": "Titration rate",
    "renal-adjustment": "Renal dose adjustment",
    "withdrawal-risk": "Withdrawal risk",
    "side-effect": "Side effect",
    "interaction": "Interaction",
    "data-quality": "Data quality",
}
EXTENSION_KEY = "posologic"
# Cards stored before the product was named carry their extension under "cds-<pack>";
# readers (feedback, the console, the kit) accept that too.
LEGACY_EXTENSION_PREFIX = "cds-"
SUMMARY_MAX = 139
_RENAL_UNITS = frozenset({"mL/min", "mL/min/1.73m2"})  # set by clinical/, never the request


@dataclass
class BuiltCard:
    """A card and what the audit store keeps beside it."""

    card: dict[str, Any]
    order_id: str
    category: str
    group: str
    findings: list[Finding]
    facts: dict[str, Any]
    suggestions: list[Suggestion] = field(default_factory=list)

    @property
    def primary(self) -> Finding:
        return self.findings[0]


def group_findings(findings: Sequence[Finding]) -> dict[tuple[str, str, str], list[Finding]]:
    """(order, category, group) -> findings, most severe first, then pack order."""
    groups: dict[tuple[str, str, str], list[Finding]] = {}
    for f in findings:
        groups.setdefault((f.order_id, f.category, f.group), []).append(f)
    for fs in groups.values():
        fs.sort(key=lambda f: (-f.rank, f.order))
    return groups


def _truncate(text: str) -> str:
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 1].rstrip() + "…"


def _num(x: float | None, unit: str = "") -> str:
    if x is None:
        return "unknown"
    return f"{fmt_number(float(x))}{unit}"


def _regimen_parts(facts: ClinicalFacts, order: OrderFacts) -> list[str]:
    """ "request-123 80 mg/day", one per order of the route after signing (which orders add
    up to the total, so a card names what it is about)."""
    by_id = {o.order_id: o for o in facts.orders}
    parts = []
    for rid in order.regimen_ids:
        other = by_id.get(rid)
        if other is not None and other.daily is not None:
            if len(parts) == _PARTS_SHOWN:
                parts.append(f"and {len(order.regimen_ids) - _PARTS_SHOWN} more")
                break
            parts.append(f"{md_text(rid)} {_num(other.daily)} mg/day")
    return parts


_PARTS_SHOWN = 8  # a card names the orders that add up, not a list of thousands


def facts_used(
    facts: ClinicalFacts, order: OrderFacts | None, category: str, fact: Mapping[str, Any]
) -> list[str]:
    """The lines of 'Facts used': what a reviewer needs to check the advice."""
    p = facts.patient
    lines: list[str] = []
    if order is not None:
        unit = "ug" if order.route == "intrathecal" else "mg"
        med = md_text(order.medication_text or facts.drug)
        dose = f"{_num(order.daily)} {unit}/day" if order.daily is not None else "dose unknown"
        per = ""
        if order.single_max is not None and order.admin_per_day:
            per = f" ({_num(order.single_max)} {unit} x {_num(order.admin_per_day)}/day)"
        lines.append(
            f"Order {md_text(order.order_id)}: {med}, {md_text(order.route)}, {dose}{per}, "
            f"status {md_text(order.status)}"
        )
        if order.route == "oral" and order.regimen_daily is not None:
            parts = _regimen_parts(facts, order)
            lines.append(
                f"Oral regimen after signing: {_num(order.regimen_daily)} mg/day"
                + (f" ({' + '.join(parts)})" if len(parts) > 1 else "")
            )
        if order.current_daily is not None and category in ("titration-rate", "withdrawal-risk"):
            since = (
                f" since {order.current_start.date().isoformat()}" if order.current_start else ""
            )
            lines.append(f"Current regimen: {_num(order.current_daily)} {unit}/day{since}")
        if order.new_start:
            days = _num(facts.new_start_days) if facts.new_start_days is not None else "?"
            lines.append(f"New start: no {facts.drug} in the last {days} days")
    age = f"{p.age} years" if p.age is not None else "age unknown"
    weight = (
        f", {_num(p.weight_kg)} kg"
        + (f" ({p.weight_effective.date().isoformat()})" if p.weight_effective else "")
        if p.weight_kg is not None
        else ", weight unknown"
    )
    lines.append(
        f"Patient: {age}, {md_text(p.sex)}{weight}"
        + (", inpatient" if p.inpatient else ", outpatient")
    )
    if category in (
        "renal-adjustment",
        "side-effect",
        "data-quality",
        "dose-ceiling",
        "withdrawal-risk",
    ):
        r = p.renal
        if r is not None:
            w = f", weight {_num(r.weight_kg)} kg {md_text(r.weight_kind)}" if r.weight_kg else ""
            lines.append(
                f"Renal: {RENAL_LABELS.get(r.kind) or md_text(r.kind)} {_num(r.value)} "
                f"{r.unit if r.unit in _RENAL_UNITS else md_text(r.unit)} "
                f"({r.effective.date().isoformat()}){w}"
            )
        elif category == "renal-adjustment" or category == "data-quality":
            lines.append("Renal: no result on record" + (" (dialysis)" if p.on_dialysis else ""))
        if p.on_dialysis:
            lines.append("Dialysis: yes")
    if category in ("side-effect", "interaction"):
        vit = [
            (p.resp_rate, "RR", "/min"),
            (p.spo2, "SpO2", "%"),
            (p.gcs, "GCS", ""),
            (p.rass, "RASS", ""),
            (p.sbp, "SBP", " mmHg"),
        ]
        shown = [f"{n} {_num(v)}{u}" for v, n, u in vit if v is not None]
        if shown:
            lines.append("Observations (24 h): " + ", ".join(shown))
    if category == "interaction" and fact.get("drug_names"):
        lines.append(f"Interacting: {md_text(fact['drug_names'])}")
    return lines


def _evidence_ids(findings: Sequence[Finding]) -> list[str]:
    seen: list[str] = []
    for f in findings:
        for e in f.evidence:
            if e not in seen:
                seen.append(e)
    return seen


def evidence_lines(
    findings: Sequence[Finding],
    evidence: Mapping[str, Mapping[str, Any]],
) -> list[str]:
    """The citations, as text: their URLs go in the card's ``links`` (which EHRs open in a
    new window), never as Markdown links that would navigate the EHR's own frame."""
    return [(evidence.get(e) or {}).get("citation", e) for e in _evidence_ids(findings)]


LINK_LABEL_MAX = 80


def evidence_links(
    findings: Sequence[Finding], evidence: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, str]]:
    """CDS Hooks ``links`` (type absolute) for every cited source that has a URL."""
    out = []
    for e in _evidence_ids(findings):
        ev = evidence.get(e) or {}
        url = ev.get("url")
        if not url:
            continue
        label = str(ev.get("short") or ev.get("citation", e))
        if len(label) > LINK_LABEL_MAX:
            label = label[: LINK_LABEL_MAX - 1].rstrip() + "…"
        out.append({"label": label, "url": str(url), "type": "absolute"})
    return out


def build_card(
    *,
    findings: list[Finding],
    facts: ClinicalFacts,
    order: OrderFacts | None,
    evidence: Mapping[str, Mapping[str, Any]],
    override_reasons: Mapping[str, Mapping[str, str]],
    label: str,
    suggestions: Sequence[Suggestion] = (),
    notes: Sequence[str] = (),
) -> BuiltCard:
    top = findings[0]
    category = top.category
    reasons = [f"- **{f.severity}**: {f.detail}" for f in findings]
    used = facts_used(facts, order, category, top.fact)
    detail = "**Why**\n\n" + "\n".join(reasons)
    if notes:
        detail += "\n\n**No suggestion**\n\n" + "\n".join(f"- {n}" for n in notes)
    detail += "\n\n**Facts used**\n\n" + "\n".join(f"- {line}" for line in used)
    detail += "\n\n**Evidence**\n\n" + "\n".join(
        f"- {line}" for line in evidence_lines(findings, evidence)
    )
    if any("policy" in f.evidence for f in findings):
        detail += (
            "\n\nThresholds marked local policy are this service's choice where no source "
            "gives a number."
        )
    card: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "summary": _truncate(top.summary),
        "indicator": top.severity,
        "detail": detail,
        "source": {
            "label": label,
            "topic": {
                "system": ALERT_CATEGORY_SYSTEM,
                "code": category,
                "display": CATEGORY_DISPLAY[category],
            },
        },
    }
    links = evidence_links(findings, evidence)
    if links:
        card["links"] = links
    if suggestions:
        card["suggestions"] = [
            {
                "label": s.label,
                "uuid": str(uuid.uuid4()),
                "isRecommended": s.recommended,
                "actions": list(s.actions),
            }
            for s in suggestions
        ]
        card["selectionBehavior"] = "at-most-one"
    if SEVERITY_RANK[top.severity] >= SEVERITY_RANK["warning"]:
        codes: list[str] = []
        for f in findings:
            for r in f.override_reasons:
                if r not in codes:
                    codes.append(r)
        reasons_out = [dict(override_reasons[c]) for c in codes if c in override_reasons]
        if reasons_out:
            card["overrideReasons"] = reasons_out
    card["extension"] = {
        EXTENSION_KEY: {
            "ruleIds": list(dict.fromkeys(f.rule_id for f in findings)),
            "severityRule": top.rule_id,
            "packId": top.pack_id,
            "packVersion": top.pack_version,
            "profile": top.profile,
            "category": category,
            **({"orderId": top.order_id} if top.order_id else {"scope": "request"}),
        }
    }
    return BuiltCard(
        card=card,
        order_id=top.order_id,
        category=category,
        group=top.group,
        findings=findings,
        facts=dict(top.fact),
        suggestions=list(suggestions),
    )


REQUIRED = ("uuid", "summary", "indicator", "source")
# The contract forbids raw HTML in ``detail``: parse it as a renderer would (HTML on) and
# look for HTML tokens, so ``<img onerror=...>`` counts, not only a ``<b>...</b>`` pair.
_HTML_PROBE = MarkdownIt("commonmark", {"html": True})


def has_raw_html(detail: object) -> bool:
    """True if ``detail`` holds raw HTML (a tag, comment or declaration) anywhere."""
    if not isinstance(detail, str) or "<" not in detail:
        return False
    for token in _HTML_PROBE.parse(detail):
        if token.type == "html_block":
            return True
        if any(child.type == "html_inline" for child in token.children or ()):
            return True
    return False


def card_extension(card: Mapping[str, Any]) -> dict[str, Any]:
    """The service's own extension of a card (rule ids, pack, order), under either key."""
    ext = card.get("extension")
    if not isinstance(ext, Mapping):
        return {}
    value = ext.get(EXTENSION_KEY)
    if isinstance(value, dict):
        return value
    for key, value in ext.items():
        if (
            isinstance(key, str)
            and key.startswith(LEGACY_EXTENSION_PREFIX)
            and isinstance(value, dict)
        ):
            return value
    return {}


def contract_problems(card: Mapping[str, Any]) -> list[str]:
    """Every way a card breaks the card contract (empty list: it conforms)."""
    problems = [f"missing {k}" for k in REQUIRED if k not in card]
    if len(card.get("summary", "")) >= 140:
        problems.append("summary is 140 characters or more")
    if card.get("indicator") not in ("info", "warning", "critical"):
        problems.append("bad indicator")
    topic = (card.get("source") or {}).get("topic") or {}
    if topic.get("code") not in CATEGORY_DISPLAY:
        problems.append("source.topic is not an alert category")
    if has_raw_html(card.get("detail", "")):
        problems.append("detail contains raw HTML")

    def walk(x: Any, path: str) -> None:
        if x is None:
            problems.append(f"{path} is null")
        elif isinstance(x, dict):
            if not x:
                problems.append(f"{path} is empty")
            for k, v in x.items():
                walk(v, f"{path}.{k}")
        elif isinstance(x, list):
            if not x:
                problems.append(f"{path} is empty")
            for i, v in enumerate(x):
                walk(v, f"{path}[{i}]")
        elif isinstance(x, str) and x == "":
            problems.append(f"{path} is an empty string")

    walk(dict(card), "card")
    if card.get("suggestions"):
        if card.get("selectionBehavior") not in ("at-most-one", "any"):
            problems.append("suggestions without selectionBehavior")
        for s in card["suggestions"]:
            if "uuid" not in s:
                problems.append("suggestion without uuid")
            for a in s.get("actions", []):
                if a.get("type") not in ("create", "update", "delete"):
                    problems.append("bad action type")
                if a.get("type") in ("create", "update") and "resource" not in a:
                    problems.append("create/update without resource")
    if card.get("indicator") in ("warning", "critical"):
        if not card.get("overrideReasons"):
            problems.append("warning/critical card without overrideReasons")
        for r in card.get("overrideReasons", []):
            if not r.get("display"):
                problems.append("override reason without display")
    ext = card_extension(card)
    for k in ("ruleIds", "packId", "packVersion"):
        if not ext.get(k):
            problems.append(f"extension without {k}")
    if "orderId" not in ext and ext.get("scope") != "request":
        problems.append("extension without orderId")
    return problems
