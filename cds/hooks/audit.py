"""What a hook call leaves in the audit store: the invocation and each card it issued.

Why here, not in the handler: the same record is written for a hook call, a population sweep
and a benchmark, and what it holds (the engine fact behind each card, the renal measure and
the dates a reviewer needs, the data problems the prescriber was not shown) is a CDS Hooks
concern, not an HTTP one.
"""

from __future__ import annotations

from typing import Any

from cds.hooks.context_capture import capture, order_words
from cds.hooks.pipeline import Evaluation
from cds.store.audit import IssuedCard


def call_context(
    resources: list[Any], *, patient_id: str | None, user_id: str | None, encounter_id: str | None
) -> dict[str, str] | None:
    """Patient name and MRN, ward and prescriber as the call's own resources gave them
    (kept with the invocation; never fetched later, never logged)."""
    return capture(resources, patient_id=patient_id, user_id=user_id, encounter_id=encounter_id)


def issued_cards(result: Evaluation) -> list[IssuedCard]:
    """What the audit store keeps of each card of an evaluation (benchmarks time it too)."""
    out = []
    for c in result.cards:
        facts = _facts_for_audit(c.facts, result, c.primary.pack_id)
        out.append(
            IssuedCard(
                card=c.card,
                order_id=c.order_id,
                category=c.category,
                primary_rule=c.primary.rule_id,
                rules=[(f.rule_id, f.severity) for f in c.findings],
                pack_id=c.primary.pack_id,
                pack_version=c.primary.pack_version,
                facts=facts,
                order_text=facts.get("order_text"),
            )
        )
    return out


def _facts_for_audit(fact: dict[str, Any], result: Evaluation, pack_id: str) -> dict[str, Any]:
    """The engine fact behind a card plus the display facts a reviewer needs."""
    out = dict(fact)
    clinical = result.facts_of(pack_id)
    p = clinical.patient
    if p.renal is not None:
        out["renal_measure"] = {
            "kind": p.renal.kind,
            "value": p.renal.value,
            "unit": p.renal.unit,
            "date": p.renal.effective.isoformat(),
            "weight_kg": p.renal.weight_kg,
            "weight_kind": p.renal.weight_kind,
            "creatinine_mg_dl": p.renal.creatinine_mg_dl,
        }
    if p.weight_effective is not None:
        out["weight_date"] = p.weight_effective.isoformat()
    order = next((o for o in clinical.orders if o.order_id == fact.get("order_id")), None)
    if order is not None and order.medication_text:
        out["medication_text"] = order.medication_text
    if order is not None and (text := order_words(order.resource)):
        out["order_text"] = text  # the order as received, in words
    return out
