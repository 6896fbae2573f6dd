"""clinical -> engine -> cards, and the re-check of every suggestion before it is offered.

This is the one place a hook call's resources become cards; ``POST /cds-services/{id}``,
``cds evaluate``, the vignette runner and the property kit all call ``evaluate`` so that
tests exercise the path production runs. CPU-only and synchronous: the web layer runs it
in a worker thread.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from cds.budget import check_budget
from cds.cards import BuiltCard, build_card, group_findings
from cds.clinical.extract import HookInput, extract_facts
from cds.clinical.facts import ClinicalFacts, OrderFacts
from cds.engine.findings import SEVERITY_RANK, Finding
from cds.engine.pack import CompiledPack
from cds.suggestions import (
    Suggestion,
    describe_taper,
    dose_plan,
    dose_resource,
    fmt_dose,
    freq_words,
    taper_for,
    taper_resource,
)

log = logging.getLogger("cds.pipeline")
DOSE_CATEGORIES = ("dose-ceiling", "titration-rate", "renal-adjustment")


@dataclass
class Evaluation:
    cards: list[BuiltCard]
    facts: ClinicalFacts
    findings: list[Finding]
    timings: dict[str, float] = field(default_factory=dict)
    dropped_suggestions: list[str] = field(default_factory=list)


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)


def run_rules(
    inp: HookInput, pack: CompiledPack, now: datetime
) -> tuple[ClinicalFacts, list[Finding]]:
    facts = extract_facts(inp, now=now, params=pack.clinical)
    return facts, pack.evaluate(facts)


def apply_action(inp: HookInput, action: dict[str, Any]) -> HookInput:
    """The hook input as it would be had the clinician accepted ``action``."""
    res = action.get("resource")
    drafts = list(inp.draft_orders)
    if action["type"] == "update" and isinstance(res, dict):
        drafts = [res if d.get("id") == res.get("id") else d for d in drafts]
        if not any(d.get("id") == res.get("id") for d in inp.draft_orders):
            drafts.append(res)
    elif action["type"] == "create" and isinstance(res, dict):
        drafts.append(res)
    return replace(inp, draft_orders=drafts)


def trial_findings(
    inp: HookInput, pack: CompiledPack, now: datetime, suggestion: Suggestion
) -> list[Finding]:
    """Findings as they would be had the clinician accepted ``suggestion``."""
    trial = inp
    for a in suggestion.actions:
        trial = apply_action(trial, a)
    if inp.hook == "patient-view":
        # the regimen under review is active: check the fix as an order being signed
        trial = replace(trial, hook="order-sign")
    return run_rules(trial, pack, now)[1]


def is_safe(
    after: list[Finding], suggestion: Suggestion, order_id: str, category: str, severity: str
) -> bool:
    """Accepting must fire none of the rules behind the fix, nor raise the card's category."""
    rank = SEVERITY_RANK[severity]
    for f in after:
        if f.order_id != order_id:
            continue
        if f.rule_id in suggestion.rule_ids:
            return False
        if f.category == category and f.rank > rank:
            return False
    return True


def _dose_suggestion(
    order: OrderFacts,
    facts: ClinicalFacts,
    findings: list[Finding],
    pack: CompiledPack,
    now: datetime,
) -> Suggestion | None:
    dose_findings = [f for f in findings if f.category in DOSE_CATEGORIES and f.suggestion]
    rounding = float(pack.tables.get("rounding_mg", 2.5))
    plan = dose_plan(order, facts.patient, dose_findings, rounding=rounding, now=now)
    if plan is None:
        return None
    resource = dose_resource(order, plan)
    if resource is None:
        return None
    when = f" from {plan.start.date().isoformat()}" if plan.start else ""
    label = f"Change to {fmt_dose(plan.per_admin)} mg {freq_words(plan.admin_per_day)}{when}"
    if order.strength_per_ml and (order.dose_unit_written or "").lower() == "ml":
        label += f" ({fmt_dose(plan.per_admin / order.strength_per_ml)} mL)"
    action = {"type": "update", "description": label, "resource": resource}
    return Suggestion(
        label=label,
        actions=(action,),
        recommended=True,
        kind="dose",
        rule_ids=tuple(f.rule_id for f in dose_findings),
    )


def _withdrawal_suggestions(
    order: OrderFacts, card_findings: list[Finding], now: datetime
) -> list[Suggestion]:
    out: list[Suggestion] = []
    taper_f = next(
        (f for f in card_findings if f.suggestion and f.suggestion.kind == "taper"), None
    )
    if taper_f is None or order.resource is None:
        return out
    rule_ids = tuple(f.rule_id for f in card_findings if f.suggestion)
    planned = taper_for(order, taper_f, now=now)
    if planned:
        steps, target = planned
        resource = taper_resource(order, steps, target)
        if resource is not None:
            label = "Taper: " + describe_taper(steps, target)
            out.append(
                Suggestion(
                    label=label,
                    actions=({"type": "update", "description": label, "resource": resource},),
                    recommended=True,
                    kind="taper",
                    rule_ids=rule_ids,
                )
            )
    if order.change == "stop":
        # continue what the patient takes now: the active order's dosage, not the draft's
        cont = copy.deepcopy(order.resource)
        cont["status"] = "active"
        current = order.current_resource or {}
        if isinstance(current.get("dosageInstruction"), list):
            cont["dosageInstruction"] = copy.deepcopy(current["dosageInstruction"])
        label = "Continue the current dose (do not stop abruptly)"
        out.append(
            Suggestion(
                label=label,
                actions=({"type": "update", "description": label, "resource": cont},),
                recommended=False,
                kind="continue",
                rule_ids=rule_ids,
            )
        )
    return out


def evaluate(
    inp: HookInput, packs: Sequence[CompiledPack], *, now: datetime, recheck: bool = True
) -> Evaluation:
    """Cards for one hook call at the instant ``now``."""
    timings: dict[str, float] = {}
    all_cards: list[BuiltCard] = []
    all_findings: list[Finding] = []
    dropped: list[str] = []
    facts: ClinicalFacts | None = None
    for pack in packs:
        t0 = time.perf_counter()
        facts = extract_facts(inp, now=now, params=pack.clinical)
        timings["facts"] = timings.get("facts", 0) + _ms(t0)
        check_budget("after the clinical facts")
        t0 = time.perf_counter()
        findings = pack.evaluate(facts)
        timings["engine"] = timings.get("engine", 0) + _ms(t0)
        check_budget("after the rules engine")
        t0 = time.perf_counter()
        orders = {o.order_id: o for o in facts.orders}
        by_order: dict[str, list[Finding]] = {}
        for f in findings:
            by_order.setdefault(f.order_id, []).append(f)
        dose_cache: dict[str, Suggestion | None] = {}
        trial_cache: dict[int, list[Finding]] = {}
        for (order_id, category, _group), fs in group_findings(findings).items():
            order = orders.get(order_id)
            suggestions: list[Suggestion] = []
            if order is not None and any(f.suggestion for f in fs):
                if category in DOSE_CATEGORIES:
                    if order_id not in dose_cache:
                        dose_cache[order_id] = _dose_suggestion(
                            order, facts, by_order[order_id], pack, now
                        )
                    s = dose_cache[order_id]
                    suggestions = [s] if s else []
                elif category == "withdrawal-risk":
                    suggestions = _withdrawal_suggestions(order, fs, now)
            if recheck and suggestions:
                kept = []
                for s in suggestions:
                    if s.kind != "continue":
                        if id(s) not in trial_cache:
                            check_budget("before a suggestion re-check")
                            trial_cache[id(s)] = trial_findings(inp, pack, now, s)
                        if not is_safe(trial_cache[id(s)], s, order_id, category, fs[0].severity):
                            dropped.append(f"{order_id}:{category}:{s.kind}")
                            log.warning(
                                "suggestion dropped by re-check: rule %s order %s",
                                fs[0].rule_id,
                                order_id,
                            )
                            continue
                    kept.append(s)
                suggestions = kept
            all_cards.append(
                build_card(
                    findings=fs,
                    facts=facts,
                    order=order,
                    evidence=pack.evidence,
                    override_reasons=pack.override_reasons,
                    label=pack.label,
                    suggestions=suggestions,
                )
            )
        timings["cards"] = timings.get("cards", 0) + _ms(t0)
        all_findings.extend(findings)
    assert facts is not None, "at least one pack is always loaded"
    all_cards.sort(key=lambda c: (-SEVERITY_RANK[c.card["indicator"]], c.order_id, c.category))
    return Evaluation(
        cards=all_cards,
        facts=facts,
        findings=all_findings,
        timings=timings,
        dropped_suggestions=dropped,
    )
