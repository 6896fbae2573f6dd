"""A8 interaction facts: each baclofen order paired with each interacting class present.

Why after signing: a draft opioid, or a draft that stops one, changes what the patient will
take; the pair is judged on the medication list as it will be once the request is signed:
active orders and active home-use statements of other drugs, plus the other drafts that are
not stops, minus the orders a draft replaces or stops. Alcohol-use disorder on the problem
list joins the "sedative" class. ``pair_has_draft`` lets the pack stay silent on established
pairs (patient-view). A baclofen order that is itself being stopped pairs with nothing.
"""

from __future__ import annotations

from cds.clinical.drugs import CLASS_VALUESETS
from cds.clinical.facts import InteractionFacts, OrderFacts
from cds.clinical.orders import MedRecord

ALCOHOL_NAME = "alcohol-use disorder"


def other_drugs_after_signing(before: list[MedRecord], drafts: list[MedRecord]) -> list[MedRecord]:
    """Non-baclofen records in effect after signing (see module docstring)."""
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
    alcohol_condition_ids: tuple[str, ...],
) -> list[InteractionFacts]:
    by_class: dict[str, list[MedRecord]] = {cls: [] for cls in CLASS_VALUESETS}
    for r in others:
        for cls in r.classes:
            by_class[cls].append(r)
    out: list[InteractionFacts] = []
    for facts, rec in orders:
        if not rec.contributes:
            continue
        for cls, members in by_class.items():
            names = list(dict.fromkeys(m.name for m in members))
            ids = [m.id or m.ref for m in members]
            if cls == "sedative" and alcohol_condition_ids:
                names.append(ALCOHOL_NAME)
                ids += [f"Condition/{c}" for c in alcohol_condition_ids]
            if not names:
                continue
            out.append(
                InteractionFacts(
                    order_id=facts.order_id,
                    drug_class=cls,
                    pair_has_draft=facts.is_draft or any(m.is_draft for m in members),
                    drug_names=", ".join(names),
                    other_ids=ids,
                )
            )
    return out
