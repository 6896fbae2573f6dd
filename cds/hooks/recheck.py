"""The re-check every suggestion passes before it is offered: no alert loops.

Part A's conventions: accepting any suggestion (a dose, a taper, "continue", removing a
duplicate) must leave no card above info on that order in the categories the fix answers,
and may raise no new or worse card; a suggestion that would is replaced by one that does
not, or dropped with the reason in the card. This module evaluates the request as it would
be once the suggestion is accepted (the same pipeline, at the same instant) and judges it;
the pipeline owns the planners and the repairs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from cds.clinical.validation import judge_as
from cds.engine.findings import SEVERITY_RANK, Finding

if TYPE_CHECKING:
    from cds.clinical.extract import HookInput
    from cds.suggestions import Suggestion

INFO = SEVERITY_RANK["info"]


def apply_action(inp: HookInput, action: dict[str, Any]) -> HookInput:
    """The hook input as it would be had the clinician accepted ``action``."""
    res = action.get("resource")
    drafts = list(inp.draft_orders)
    if action["type"] == "update" and isinstance(res, dict):
        original = next((d for d in drafts if d.get("id") == res.get("id")), None)
        if original is None:
            drafts.append(res)
        else:
            judge_as(res, original)
            drafts = [res if d.get("id") == res.get("id") else d for d in drafts]
    elif action["type"] == "create" and isinstance(res, dict):
        drafts.append(res)
    elif action["type"] == "delete":
        target = str(action.get("resourceId") or "")
        drafts = [d for d in drafts if f"{d.get('resourceType')}/{d.get('id')}" != target]
    return replace(inp, draft_orders=drafts)


def accepted(inp: HookInput, suggestion: Suggestion) -> HookInput:
    """The input with every action of ``suggestion`` applied; patient-view's regimen under
    review is checked as an order being signed."""
    trial = inp
    for a in suggestion.actions:
        trial = apply_action(trial, a)
    if inp.hook == "patient-view":
        trial = replace(trial, hook="order-sign")
    return trial


def edited_orders(suggestion: Suggestion, order_id: str) -> list[str]:
    """The order a suggestion is about, then every other order its updates edit (a taper
    of several orders): accepting it must leave none of them looping."""
    out = [order_id]
    for a in suggestion.actions:
        rid = (a.get("resource") or {}).get("id") if a.get("type") == "update" else None
        if isinstance(rid, str) and rid not in out:
            out.append(rid)
    return out


def _worst(findings: Iterable[Finding], order_id: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in findings:
        if order_id is None or f.order_id == order_id:
            out[f.category] = max(out.get(f.category, 0), f.rank)
    return out


@dataclass(frozen=True, order=True)
class LoopProblem:
    """One finding that makes a suggestion loop: it ``stays`` in a category the fix answers,
    or it is ``new`` (or more severe than before)."""

    kind: str  # "stays" | "new"
    category: str
    severity: str
    rule_id: str


def loop_problems(
    *,
    before: list[Finding],
    after: list[Finding],
    order_id: str,
    addressed: Iterable[str],
    removes_order: bool = False,
) -> list[LoopProblem]:
    """Why accepting a suggestion would loop (empty: it would not).

    On the order (every order, when the fix removes one): no card above info in a category
    the fix answers, and no category above info that is new or more severe than before.
    Cards the fix has nothing to do with (an opioid interaction beside a renal fix) may stay.
    """
    scope = None if removes_order else order_id
    was = _worst(before, scope)
    answered = set(addressed)
    problems: set[LoopProblem] = set()
    for f in after:
        if (scope is not None and f.order_id != scope) or f.rank <= INFO:
            continue
        if f.category in answered and f.order_id == order_id:
            problems.add(LoopProblem("stays", f.category, f.severity, f.rule_id))
        elif f.rank > was.get(f.category, 0):
            problems.add(LoopProblem("new", f.category, f.severity, f.rule_id))
    return sorted(problems)
