"""Interaction facts: each order of the drug paired with each interacting class present.

Why after signing: a draft opioid, or a draft that stops one, changes what the patient will
take; the pair is judged on the medication list as it will be once the request is signed:
active orders and active home-use statements of other drugs, plus the other drafts that are
not stops, minus the orders a draft replaces or stops. A class may also count a problem on
the list (the pack's ``interactions:`` ``conditions``: alcohol-use disorder joins the
sedatives). ``pair_has_draft`` lets a pack stay silent on established pairs (patient-view).
An order that is itself being stopped pairs with nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from cds.clinical.drugspec import InteractionClass
from cds.clinical.facts import InteractionFacts, OrderFacts
from cds.clinical.orders import MedRecord


def other_drugs_after_signing(before: list[MedRecord], drafts: list[MedRecord]) -> list[MedRecord]:
    """Records of other drugs in effect after signing (see module docstring)."""
    replaced = {t for d in drafts for t in (d.id, d.prior_id) if t}
    active_ids = {r.id for r in before if r.kind == "request" and r.status == "active" and r.id}
    out = [
        r
        for r in before
        if r.status == "active"
        and not (r.kind == "request" and r.id in replaced)
        and not (r.kind == "statement" and (r.based_on & replaced or r.based_on & active_ids))
    ]
    return out + [d for d in drafts if d.contributes]


def interaction_facts(
    orders: list[tuple[OrderFacts, MedRecord]],
    others: list[MedRecord],
    *,
    classes: Sequence[InteractionClass],
    condition_ids: dict[str, list[str]],
) -> list[InteractionFacts]:
    by_class: dict[str, list[MedRecord]] = {c.name: [] for c in classes}
    for r in others:
        for cls in r.classes:
            by_class.setdefault(cls, []).append(r)
    out: list[InteractionFacts] = []
    for facts, rec in orders:
        if not rec.contributes:
            continue
        for cls in classes:
            members = [
                m
                for m in by_class.get(cls.name, [])
                if m is not rec and not (m.id and m.id == rec.id)
            ]
            names = list(dict.fromkeys(m.name for m in members))
            ids = [m.id or m.ref for m in members]
            problems = [i for vs in cls.conditions for i in condition_ids.get(vs, [])]
            if problems:
                names.append(cls.condition_name or "a problem on the list")
                ids += [f"Condition/{c}" for c in dict.fromkeys(problems)]
            if not names:
                continue
            out.append(
                InteractionFacts(
                    order_id=facts.order_id,
                    drug_class=cls.name,
                    pair_has_draft=facts.is_draft or any(m.is_draft for m in members),
                    drug_names=", ".join(names),
                    other_ids=ids,
                )
            )
    return out
