"""clinical -> engine -> cards, and the re-check of every suggestion before it is offered.

This is the one place a hook call's resources become cards; ``POST /cds-services/{id}``,
``cds evaluate``, the vignette runner and the property kit all call ``evaluate`` so that
tests exercise the path production runs. CPU-only and synchronous: the web layer runs it
in a worker thread.

Steps per pack: facts (clinical) -> findings (engine) -> the "as offered" exceptions a rule
declares (``unless_offered``: a step-down to the renal suggestion is not abrupt) -> one card
per (order, category, group) with its suggestions, each planned by its kind's planner and
re-checked (``cds.hooks.recheck``): a suggestion that would loop is repaired (a taper or
"continue" that breaks a renal limit starts at the limit) or dropped with the reason in the
card.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from cds.budget import check_budget
from cds.cards import BuiltCard, build_card, group_findings
from cds.clinical.extract import HookInput, extract_facts, extraction_memo
from cds.clinical.facts import ClinicalFacts, DataIssue, OrderFacts
from cds.clinical.validation import validation_memo
from cds.engine.findings import SEVERITY_RANK, Finding
from cds.engine.pack import CompiledPack
from cds.hooks.recheck import LoopProblem, accepted, apply_action, edited_orders, loop_problems
from cds.suggestions import (
    Dispenser,
    DispensingPolicy,
    DosePlan,
    Suggestion,
    continue_resource,
    describe_taper,
    dose_plan,
    dose_resource,
    dose_words,
    fmt_dose,
    product_note,
    supplement_resource,
    taper_for,
    taper_resource,
)
from cds.suggestions.dose import DOSE_KINDS, daily_limit
from cds.suggestions.start import describe_start, labelled_start

__all__ = ["Evaluation", "apply_action", "evaluate", "run_rules"]

log = logging.getLogger("cds.pipeline")
DOSE_CATEGORIES = ("dose-ceiling", "titration-rate", "renal-adjustment")
EPS = 1e-6
MAX_REPAIRS = 3


@dataclass
class Evaluation:
    cards: list[BuiltCard]
    facts: ClinicalFacts  # the first pack's (the patient context is the same for every pack)
    findings: list[Finding]
    timings: dict[str, float] = field(default_factory=dict)
    dropped_suggestions: list[str] = field(default_factory=list)
    facts_by_pack: dict[str, ClinicalFacts] = field(default_factory=dict)

    def facts_of(self, pack_id: str) -> ClinicalFacts:
        return self.facts_by_pack.get(pack_id, self.facts)

    @property
    def issues(self) -> list[DataIssue]:
        """Every pack's data issues, each once."""
        seen: set[tuple[str, str, str]] = set()
        out = []
        for facts in self.facts_by_pack.values() or [self.facts]:
            for d in facts.issues:
                key = (d.issue, d.detail, d.order_id)
                if key not in seen:
                    seen.add(key)
                    out.append(d)
        return out


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)


def dispenser_for(pack: CompiledPack) -> Dispenser:
    d = pack.dispensing
    policy = (
        DispensingPolicy(
            rounding=d.rounding,
            unit_fractions=tuple(d.unit_fractions),
            liquid_step_ml=d.liquid_step_ml,
            max_units=d.max_units,
            switch_within=d.switch_within,
            scored_halves_only=d.scored_halves_only,
            prefer=d.prefer,
        )
        if d is not None
        else DispensingPolicy()
    )
    return Dispenser(policy, pack.drug.term.products.values())


def run_rules(
    inp: HookInput,
    pack: CompiledPack,
    now: datetime,
    *,
    offers: bool = True,
    loaded: frozenset[str] = frozenset(),
    texts: bool = True,
) -> tuple[ClinicalFacts, list[Finding]]:
    """Facts and findings of one pack as the cards see them: the rules' "as offered"
    exceptions, the pairs another loaded pack owns and the joined reasons applied
    (``texts=False``: without summaries and details, for the re-checks)."""
    facts = extract_facts(inp, now=now, params=pack.clinical, drug=pack.drug)
    findings = pack.evaluate(facts, texts=texts)
    return facts, settle(inp, pack, now, facts, findings, offers=offers, loaded=loaded)


def settle(
    inp: HookInput,
    pack: CompiledPack,
    now: datetime,
    facts: ClinicalFacts,
    findings: list[Finding],
    *,
    offers: bool = True,
    loaded: frozenset[str] = frozenset(),
) -> list[Finding]:
    """What the engine's findings become before the cards: one place, so the re-check of a
    suggestion sees exactly what a call would show."""
    if any(f.unless_pack in loaded for f in findings):
        findings = [f for f in findings if f.unless_pack not in loaded]
    if offers and any(f.unless_offered for f in findings):
        findings = _apply_offers(inp, pack, now, facts, findings)
    if any(f.join_worst for f in findings):
        findings = join_worst(findings)
    return findings


def _prior_trial(inp: HookInput, order: OrderFacts) -> HookInput | None:
    """The request with the draft carrying the dose before the change (its replaced order's
    dosage and product), so the suggestion "computed from the dose before the change" is the
    one the pipeline would really offer for it."""
    if order.resource is None or order.current_resource is None:
        return None
    prior = copy.deepcopy(order.current_resource)
    for key in ("id", "status", "priorPrescription", "authoredOn", "intent"):
        if key in order.resource:
            prior[key] = copy.deepcopy(order.resource[key])
        else:
            prior.pop(key, None)
    if prior.get("status") in ("stopped", "cancelled", "on-hold"):
        prior["status"] = "draft"
    drafts = [prior if d.get("id") == order.resource.get("id") else d for d in inp.draft_orders]
    return replace(inp, draft_orders=drafts)


def _offered_daily(
    inp: HookInput, pack: CompiledPack, now: datetime, order: OrderFacts, category: str
) -> float | None:
    """Daily dose of this order the ``category`` card would offer for the dose before the
    change, as offered (rounded, split, dispensable); None when it offers none."""
    trial = _prior_trial(inp, order)
    if trial is None:
        return None
    facts, findings = run_rules(trial, pack, now, offers=False, texts=False)
    torder = next((o for o in facts.orders if o.order_id == order.order_id), None)
    mine = [f for f in findings if f.order_id == order.order_id]
    if torder is None or not any(f.category == category and f.suggestion for f in mine):
        return None
    specs = [f for f in mine if f.category in DOSE_CATEGORIES and f.suggestion]
    plan = dose_plan(torder, facts.patient, specs, dispenser=dispenser_for(pack), now=now)
    return plan.daily if plan is not None else None


def _apply_offers(
    inp: HookInput, pack: CompiledPack, now: datetime, facts: ClinicalFacts, findings: list[Finding]
) -> list[Finding]:
    orders = {o.order_id: o for o in facts.orders}
    offered: dict[tuple[str, str], float | None] = {}
    kept = []
    for f in findings:
        order = orders.get(f.order_id)
        if f.unless_offered and order is not None and order.continuing:
            key = (f.order_id, f.unless_offered)
            if key not in offered:
                offered[key] = _offered_daily(inp, pack, now, order, f.unless_offered)
            dose = offered[key]
            own = order.first_step_daily
            if dose is not None and own is not None and own >= dose - EPS:
                continue  # a step-down to the suggestion as offered: not abrupt
        kept.append(f)
    return kept


def join_worst(findings: list[Finding]) -> list[Finding]:
    """A ``join_worst`` finding is a reason in the order's most severe card of its category
    when that card is at least as severe; otherwise it is a card of its own."""
    out = []
    for f in findings:
        if f.join_worst:
            peers = [
                g
                for g in findings
                if not g.join_worst
                and g.order_id == f.order_id
                and g.category == f.category
                and g.rank >= f.rank
            ]
            if peers:
                top = max(peers, key=lambda g: (g.rank, -g.order))
                f = replace(f, group=top.group)
            elif f.never_alone:
                continue
        out.append(f)
    return out


class _Planner:
    """Plans, re-checks and repairs the suggestions of one pack's cards for one call."""

    def __init__(
        self,
        inp: HookInput,
        pack: CompiledPack,
        now: datetime,
        facts: ClinicalFacts,
        findings: list[Finding],
        recheck: bool,
        loaded: frozenset[str] = frozenset(),
    ) -> None:
        self.inp, self.pack, self.now, self.facts = inp, pack, now, facts
        self.loaded = loaded
        self.findings, self.recheck = findings, recheck
        self.orders = {o.order_id: o for o in facts.orders}
        self.by_order: dict[str, list[Finding]] = {}
        for f in findings:
            self.by_order.setdefault(f.order_id, []).append(f)
        self.dispenser = dispenser_for(pack)
        self._dose: dict[str, Suggestion | None] = {}
        self._checked: dict[int, tuple[Suggestion, Suggestion | None, str | None]] = {}
        self.dropped: list[str] = []
        self.notes: dict[str, str] = {}  # order id -> why a fix is not offered (planning)

    # ---- planners, one per suggestion kind ----------------------------------------------

    def dose(self, order: OrderFacts, *, base_daily: float | None = None) -> Suggestion | None:
        fs = [
            f
            for f in self.by_order.get(order.order_id, [])
            if f.category in DOSE_CATEGORIES and f.suggestion and f.suggestion.kind in DOSE_KINDS
        ]
        starts = [f for f in fs if f.suggestion and f.suggestion.kind == "labelled_start"]
        # the lowest first day any fired rule allows (a Fleet start beats the epilepsy one)
        start = min(
            starts,
            key=lambda f: (
                float(f.suggestion.params["steps"][0][1])  # type: ignore[union-attr]
                * float(f.suggestion.params["steps"][0][2])
            ),  # type: ignore[union-attr]
            default=None,
        )
        if start is not None and base_daily is None:
            return self.start(order, start, fs)
        plan = dose_plan(
            order,
            self.facts.patient,
            fs,
            dispenser=self.dispenser,
            now=self.now,
            base_daily=base_daily,
        )
        if plan is None:
            return None
        resource = dose_resource(order, plan)
        if resource is None:
            return None
        when = f" from {plan.start.date().isoformat()}" if plan.start else ""
        label = f"Change to {dose_words(plan.per_admin, plan.admin_per_day, order.prn)}{when}"
        label += product_note(plan.dispensed)
        action = {"type": "update", "description": label, "resource": resource}
        return Suggestion(
            label=label,
            actions=(action,),
            recommended=True,
            kind="dose",
            rule_ids=tuple(f.rule_id for f in fs),
            categories=tuple(sorted({f.category for f in fs})),
            meta={"base_daily": base_daily},
        )

    def start(self, order: OrderFacts, spec: Finding, fs: list[Finding]) -> Suggestion | None:
        """A new start as the label's schedule, within any limit another fired rule sets."""
        cap = daily_limit(order, self.facts.patient, fs)
        planned = labelled_start(order, spec, dispenser=self.dispenser, now=self.now, cap_daily=cap)
        if planned is None or order.resource is None:
            return None
        steps, dispensed, when = planned
        resource = taper_resource(order, steps, None, dispensed, when=when)
        if resource is None:
            return None
        label = "Start as labelled: " + describe_start(steps) + product_note(dispensed)
        return Suggestion(
            label=label,
            actions=({"type": "update", "description": label, "resource": resource},),
            recommended=True,
            kind="dose",
            rule_ids=tuple(f.rule_id for f in fs),
            categories=tuple(sorted({f.category for f in fs})),
            meta={"base_daily": None},
        )

    def taper(
        self, order: OrderFacts, fs: list[Finding], first: DosePlan | None = None
    ) -> Suggestion | None:
        """A taper of this order; when other drafts of the regimen are cut in the same
        signing, of each of them too (one suggestion, one action per order that needs
        one): the A6 rules judge the regimen, so tapering one order beside another's
        abrupt cut would still fire them after acceptance. An order cut by no more than one
        step is kept as written. No suggestion when one of the cut orders cannot be
        tapered, or none needs it."""
        own = self._taper_update(order, fs, first)
        if own is None:
            return None
        others = self._co_cuts(order)
        if others is None:
            self.notes.setdefault(order.order_id, _NO_TAPER_ALONE)
            return None
        tapered: list[tuple[OrderFacts, tuple[dict, str]]] = []
        if own is not _KEEP:
            tapered.append((order, own))
        for other, ofs in others:
            also = self._taper_update(other, ofs)
            if also is None:
                return None
            if also is not _KEEP:
                tapered.append((other, also))
        if not tapered:
            return None
        parts = [w if o is order else f"{_order_name(o)}: {w}" for o, (_, w) in tapered]
        if own is _KEEP:
            label = "Taper " + "; and ".join(parts) + "; keep this order as written"
        else:
            label = "Taper: " + parts[0] + "".join(f"; and {p}" for p in parts[1:])
        actions = [a for _, (a, _) in tapered]
        for a in actions:
            a["description"] = label
        return Suggestion(
            label=label,
            actions=tuple(actions),
            recommended=True,
            kind="taper",
            rule_ids=tuple(f.rule_id for f in fs if f.suggestion),
            categories=("withdrawal-risk",),
        )

    def _taper_update(
        self, order: OrderFacts, fs: list[Finding], first: DosePlan | None = None
    ) -> tuple[dict, str] | None:
        """The update action that tapers one order, and its words; ``_KEEP`` when the
        order needs no taper (its new dose is within one step)."""
        spec = next((f for f in fs if f.suggestion and f.suggestion.kind == "taper"), None)
        if spec is None or order.resource is None:
            return None
        planned = taper_for(
            order,
            spec,
            now=self.now,
            first=first,
            dispensable=lambda x: self.dispenser.floor_amount(
                x, product=order.product, strength=order.strength, family=order.family
            ),
        )
        if not planned:
            return None
        steps, target = planned
        if not steps:
            return _KEEP
        amounts = [s.per_admin for s in steps if s.end is not None]
        if target is not None:
            amounts.append(target.per_admin)
        dispensed = self.dispenser.choose(
            product=order.product,
            strength=order.strength,
            route_unit="mg",
            amounts=amounts,
            family=order.family,
        )
        if dispensed is None:
            return None
        resource = taper_resource(order, steps, target, dispensed)
        if resource is None:
            return None
        words = describe_taper(steps, target) + product_note(dispensed)
        return {"type": "update", "description": words, "resource": resource}, words

    def _co_cuts(self, order: OrderFacts) -> list[tuple[OrderFacts, list[Finding]]] | None:
        """The other drafts of ``order``'s regimen that lower their own dose in this
        signing (``co_cut_ids``), each with its taper rule; None when one of them has none
        (stopped for an adverse reaction, or not among the orders checked: an unselected
        draft on order-select): its cut stays whatever this order does, so no fix of this
        order alone can end the abrupt cut."""
        out = []
        for oid in order.co_cut_ids:
            other = self.orders.get(oid)
            if other is None or other is order:
                return None
            ofs = [
                f
                for f in self.by_order.get(oid, [])
                if f.category == "withdrawal-risk" and f.suggestion and f.suggestion.kind == "taper"
            ]
            if not ofs:
                return None
            out.append((other, ofs))
        return out

    def keep_taking(
        self, order: OrderFacts, fs: list[Finding], plan: DosePlan | None = None
    ) -> Suggestion | None:
        """ "Continue the current dose" for an abrupt stop (or, repaired, the allowed dose);
        with the other orders of the regimen cut in the same signing kept as they are too."""
        if order.change != "stop" or not any(f.suggestion for f in fs):
            return None
        resource = continue_resource(order, plan, self.now)
        if resource is None:
            return None
        if plan is None:
            label = "Continue the current dose (do not stop abruptly)"
        else:
            label = (
                f"Continue at {dose_words(plan.per_admin, plan.admin_per_day)}, the highest "
                f"dose the limits allow{product_note(plan.dispensed)} (do not stop abruptly)"
            )
        resources = [resource]
        others = self._co_cuts(order)
        if others is None:
            return None
        for other, _ in others:
            kept = continue_resource(other, None, self.now)
            if kept is None:
                return None
            resources.append(kept)
        if others:
            names = ", ".join(_order_name(o) for o, _ in others)
            label = label.replace("the current dose", "the current doses", 1)
            label += f"; keeps {names} too"
        return Suggestion(
            label=label,
            actions=tuple(
                {"type": "update", "description": label, "resource": r} for r in resources
            ),
            recommended=False,
            kind="continue",
            rule_ids=tuple(f.rule_id for f in fs if f.suggestion),
            categories=("withdrawal-risk",),
        )

    def supplement(self, order: OrderFacts, fs: list[Finding]) -> Suggestion | None:
        """A post-dialysis supplement above its limit, cut to the largest amount the
        ordered product gives at or under the lowest limit that fired (A5)."""
        limits = [
            float(f.suggestion.params["single_max"])
            for f in fs
            if f.suggestion and f.suggestion.kind == "supplement_limit"
        ]
        if not limits or order.resource is None:
            return None
        amount = self.dispenser.floor_amount(
            min(limits), product=order.product, strength=order.strength, family=order.family
        )
        dispensed = self.dispenser.choose(
            product=order.product,
            strength=order.strength,
            route_unit="mg",
            amounts=[amount],
            family=order.family,
        )
        if amount <= EPS or dispensed is None or dispensed.switched:
            return None  # one order, one product: the maintenance dose keeps it
        resource = supplement_resource(order, amount, dispensed)
        if resource is None:
            return None
        label = f"Give {fmt_dose(amount)} mg after each dialysis session (the maintenance kept)"
        return Suggestion(
            label=label,
            actions=({"type": "update", "description": label, "resource": resource},),
            recommended=True,
            kind="dose",
            rule_ids=tuple(
                f.rule_id for f in fs if f.suggestion and f.suggestion.kind == "supplement_limit"
            ),
            categories=tuple(sorted({f.category for f in fs})),
        )

    def remove(self, order: OrderFacts, fs: list[Finding]) -> Suggestion | None:
        """Remove a draft that duplicates an active order (a renewal sent as a second order)."""
        if not order.is_draft or order.resource is None or not order.duplicate_ids:
            return None
        rid = f"{order.resource.get('resourceType', 'MedicationRequest')}/{order.order_id}"
        label = f"Remove this order: it duplicates {', '.join(order.duplicate_ids[:2])}"
        return Suggestion(
            label=label,
            actions=({"type": "delete", "description": label, "resourceId": rid},),
            recommended=False,
            kind="remove",
            rule_ids=tuple(
                f.rule_id for f in fs if f.suggestion and f.suggestion.kind == "remove_draft"
            ),
            categories=(),
        )

    def planned(self, order: OrderFacts, category: str, fs: list[Finding]) -> list[Suggestion]:
        out: list[Suggestion] = []
        kinds = {f.suggestion.kind for f in fs if f.suggestion}
        if category in DOSE_CATEGORIES and kinds & set(DOSE_KINDS):
            if order.order_id not in self._dose:
                self._dose[order.order_id] = self.dose(order)
            if self._dose[order.order_id] is not None:
                out.append(self._dose[order.order_id])  # type: ignore[arg-type]
        if "taper" in kinds:
            out += [s for s in (self.taper(order, fs), self.keep_taking(order, fs)) if s]
        if "supplement_limit" in kinds:
            s = self.supplement(order, fs)
            out += [s] if s else []
        # A duplicate order is what every dose card on it is about: each offers its removal
        order_fs = self.by_order.get(order.order_id, [])
        dup = [f for f in order_fs if f.suggestion and f.suggestion.kind == "remove_draft"]
        if "remove_draft" in kinds or (dup and category in DOSE_CATEGORIES):
            s = self.remove(order, dup)
            out += [s] if s else []
        return out

    # ---- the re-check, and repairs ------------------------------------------------------

    def _trial(self, s: Suggestion) -> tuple[ClinicalFacts, list[Finding]]:
        check_budget("before a suggestion re-check")
        return run_rules(
            accepted(self.inp, s), self.pack, self.now, loaded=self.loaded, texts=False
        )

    def checked(self, s: Suggestion, order: OrderFacts) -> tuple[Suggestion | None, str | None]:
        """``s``, a repaired replacement, or None and why (cached per suggestion object: a
        dose suggestion is shared by every dose card of its order). The cache keeps ``s``
        alive with its result, so an id is never reused for another suggestion."""
        hit = self._checked.get(id(s))
        if hit is None or hit[0] is not s:
            hit = (s, *self._check(s, order))
            self._checked[id(s)] = hit
        return hit[1], hit[2]

    def _why(self, problems: list[LoopProblem]) -> str:
        """Plain words for a reviewer: which card would stay or appear after the fix."""
        parts: list[str] = []
        for p in problems:
            rule = self.pack.rules.get(p.rule_id)
            title = rule.title if rule else p.rule_id
            verb = "would remain" if p.kind == "stays" else "would appear"
            part = f"the {p.severity} \u201c{title}\u201d {verb}"
            if part not in parts:
                parts.append(part)
        return "; ".join(parts[:3])

    def _check(self, s: Suggestion, order: OrderFacts) -> tuple[Suggestion | None, str | None]:
        current: Suggestion | None = s
        problems: list[LoopProblem] = []
        for _ in range(MAX_REPAIRS):
            assert current is not None
            tfacts, tfind = self._trial(current)
            problems = []
            # every order the fix edits (a taper of several orders): none may loop
            for oid in edited_orders(current, order.order_id):
                problems += loop_problems(
                    before=self.findings,
                    after=tfind,
                    order_id=oid,
                    addressed=current.categories,
                    removes_order=current.kind == "remove",
                )
            if not problems:
                return current, None
            current = self._repair(current, order, tfacts, tfind)
            if current is None:
                break
        return None, self._why(problems)

    def _repair(
        self, s: Suggestion, order: OrderFacts, tfacts: ClinicalFacts, tfind: list[Finding]
    ) -> Suggestion | None:
        """A replacement that may not loop: a taper or "continue" that breaks a dose limit
        starts at (continues at) the dose the limits allow; a dose fix that would be an abrupt
        step-down is computed from the dose before the change (the A6 exception)."""
        if s.kind in ("taper", "continue"):
            torder = next((o for o in tfacts.orders if o.order_id == order.order_id), None)
            specs = [
                f
                for f in tfind
                if f.order_id == order.order_id and f.category in DOSE_CATEGORIES and f.suggestion
            ]
            if torder is None or not specs:
                return None
            cap = dose_plan(
                replace(torder, is_taper=False, first_step_daily=torder.daily),
                tfacts.patient,
                specs,
                dispenser=self.dispenser,
                now=self.now,
                limits_only=True,
            )
            if cap is None:
                return None
            fs = self.by_order.get(order.order_id, [])
            fs = [f for f in fs if f.category == "withdrawal-risk"]
            if s.kind == "taper":
                if s.meta.get("first") is not None:
                    return None
                fixed = self.taper(order, fs, first=cap)
                return replace(fixed, meta={"first": cap}) if fixed else None
            if s.meta.get("plan") is not None:
                return None
            fixed = self.keep_taking(order, fs, plan=cap)
            return replace(fixed, meta={"plan": cap}) if fixed else None
        if s.kind == "dose" and s.meta.get("base_daily") is None:
            if order.prior_daily is None or not any(
                f.order_id == order.order_id and f.category == "withdrawal-risk" for f in tfind
            ):
                return None
            return self.dose(order, base_daily=order.prior_daily)
        return None

    def offered(
        self, order: OrderFacts | None, category: str, fs: list[Finding]
    ) -> tuple[list[Suggestion], list[str]]:
        if order is None or not any(f.suggestion for f in fs):
            return [], []
        suggestions = self.planned(order, category, fs)
        planning = [self.notes[order.order_id]] if order.order_id in self.notes else []
        if category != "withdrawal-risk":
            planning = []
        if (
            not suggestions
            and not planning
            and any(f.suggestion and f.suggestion.kind != "none" for f in fs)
        ):
            planning = [_NO_FIX]
        if not self.recheck:
            return suggestions, planning
        kept, notes = [], planning
        for s in suggestions:
            good, why = self.checked(s, order)
            if good is not None:
                kept.append(good)
                continue
            self.dropped.append(f"{order.order_id}:{category}:{s.kind}")
            log.warning(
                "suggestion dropped by re-check: rule %s order %s", fs[0].rule_id, order.order_id
            )
            notes.append(f"\u201c{s.label}\u201d is not offered: after it, {why}.")
        return kept, notes


_KEEP: tuple[dict, str] = ({}, "")  # an order cut by no more than one step: as written
_NO_FIX = (
    "No corrected order is offered: none could be written that every fired rule allows "
    "from this order as written (doses that differ between administrations, a schedule or "
    "product the suggestion cannot keep); change it by hand."
)
_NO_TAPER_ALONE = (
    "No taper is offered: another order of this regimen is stopped or cut in the same "
    "signing without a withdrawal rule of its own (for an adverse reaction, say), so a "
    "taper of this order alone would not end the abrupt cut; review both orders."
)


def _order_name(order: OrderFacts) -> str:
    """How a prescriber tells another order apart in a label: its medication as written and
    the dose it changes ("the <drug> 300 MG Oral Capsule 600 mg once daily order")."""
    name = order.medication_text or f"order {order.order_id}"
    if order.current_per_admin and order.current_admins:
        name += " " + dose_words(order.current_per_admin, order.current_admins)
    return f"the {name} order"


def evaluate(
    inp: HookInput, packs: Sequence[CompiledPack], *, now: datetime, recheck: bool = True
) -> Evaluation:
    """Cards for one hook call at the instant ``now``.

    The suggestion re-checks and "as offered" checks extract the request again with a
    draft changed; within one evaluation they reuse the resource-only steps of the
    extraction (``extraction_memo``), so a re-check costs the drafts' facts and the engine.
    """
    with extraction_memo(), validation_memo():
        return _evaluate(inp, packs, now=now, recheck=recheck)


def _evaluate(
    inp: HookInput, packs: Sequence[CompiledPack], *, now: datetime, recheck: bool
) -> Evaluation:
    timings: dict[str, float] = {}
    all_cards: list[BuiltCard] = []
    all_findings: list[Finding] = []
    dropped: list[str] = []
    facts: ClinicalFacts | None = None
    by_pack: dict[str, ClinicalFacts] = {}
    loaded = frozenset(p.id for p in packs)
    for pack in packs:
        t0 = time.perf_counter()
        facts = extract_facts(inp, now=now, params=pack.clinical, drug=pack.drug)
        timings["facts"] = timings.get("facts", 0) + _ms(t0)
        check_budget("after the clinical facts")
        t0 = time.perf_counter()
        findings = settle(inp, pack, now, facts, pack.evaluate(facts), loaded=loaded)
        by_pack[pack.id] = facts
        timings["engine"] = timings.get("engine", 0) + _ms(t0)
        check_budget("after the rules engine")
        t0 = time.perf_counter()
        planner = _Planner(inp, pack, now, facts, findings, recheck, loaded)
        for (order_id, category, _group), fs in group_findings(findings).items():
            order = planner.orders.get(order_id)
            suggestions, notes = planner.offered(order, category, fs)
            all_cards.append(
                build_card(
                    findings=fs,
                    facts=facts,
                    order=order,
                    evidence=pack.evidence,
                    override_reasons=pack.override_reasons,
                    label=pack.label,
                    suggestions=suggestions,
                    notes=notes,
                )
            )
        dropped += planner.dropped
        timings["cards"] = timings.get("cards", 0) + _ms(t0)
        all_findings.extend(findings)
    assert facts is not None, "at least one pack is always loaded"
    all_cards.sort(key=lambda c: (-SEVERITY_RANK[c.card["indicator"]], c.order_id, c.category))
    return Evaluation(
        cards=all_cards,
        facts=by_pack[packs[0].id],
        findings=all_findings,
        timings=timings,
        dropped_suggestions=dropped,
        facts_by_pack=by_pack,
    )
