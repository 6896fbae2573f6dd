"""Realistic console data, fast: bulk inserts of invocations, cards, rules and feedback.

``seed_cards`` writes what the audit trail would hold after weeks of baclofen alerts,
with plausible card JSON (markdown detail, suggestions carrying a corrected
MedicationRequest, override reasons) and facts. It uses ``session.execute(insert(Model),
rows)`` batches (one executemany per table and chunk), so 100,000 cards take seconds.

``add_card`` goes through ``cds.store.audit.record_invocation`` instead, so tests that need
one precise card exercise the real write path.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.orm import Session, sessionmaker

from cds.store.audit import (
    SEVERITY_RANK,
    InvocationRecord,
    IssuedCard,
    record_invocation,
    search_key,
)
from cds.store.models import Card, CardRule, Feedback, Invocation

PACK_ID = "baclofen"
PACK_VERSIONS = ("1.0.0", "1.1.0", "1.2.0")


@dataclass(frozen=True)
class RuleSpec:
    id: str
    category: str
    indicator: str
    weight: int  # relative frequency
    override_p: float  # chance feedback is an override


RULES: tuple[RuleSpec, ...] = (
    RuleSpec("baclofen-oral-ceiling-adult", "dose-ceiling", "warning", 14, 0.30),
    RuleSpec("baclofen-oral-ceiling-extreme", "dose-ceiling", "critical", 3, 0.10),
    RuleSpec("baclofen-titration-step-too-large", "titration-rate", "warning", 10, 0.55),
    RuleSpec("baclofen-titration-interval-short", "titration-rate", "info", 8, 0.75),
    RuleSpec("baclofen-renal-egfr-30-59", "renal-adjustment", "warning", 16, 0.40),
    RuleSpec("baclofen-renal-egfr-below-30", "renal-adjustment", "critical", 4, 0.15),
    RuleSpec("baclofen-renal-at-or-below-limit", "renal-adjustment", "info", 9, 0.80),
    RuleSpec("baclofen-withdrawal-abrupt-stop", "withdrawal-risk", "critical", 5, 0.20),
    RuleSpec("baclofen-itb-refill-overdue", "withdrawal-risk", "critical", 2, 0.05),
    RuleSpec("baclofen-sedation-observations", "side-effect", "warning", 6, 0.50),
    RuleSpec("baclofen-interaction-opioid", "interaction", "warning", 12, 0.65),
    RuleSpec("baclofen-interaction-gabapentinoid", "interaction", "info", 7, 0.85),
    RuleSpec("baclofen-renal-result-stale", "data-quality", "info", 4, 0.60),
)
OVERRIDE_REASONS = (
    ("patient-tolerating", "Patient tolerating current dose"),
    ("specialist-advice", "Dose advised by specialist"),
    ("benefit-outweighs-risk", "Benefit outweighs risk"),
    ("data-outdated", "Lab result outdated or wrong"),
    ("will-monitor", "Will monitor closely"),
)
FAMILY = ("Mensah", "Nguyen", "Smith", "García", "Kowalski", "Haddad", "Brown", "Singh")
GIVEN = ("Ada", "Ben", "Chloé", "Dev", "Ewa", "Farid", "Grace", "Hiro", "Ines", "Jon")
WARDS = ("Ward 7B, Bed 12", "Ward 3A, Bed 4", "Neuro rehab, Bed 2", "AMU, Bay 5")
PRESCRIBERS = ("Dr Amara Osei", "Dr Tom Fischer", "Dr Leila Karimi")


def patient_context(number: int) -> dict[str, str]:
    """What a call's prefetch would have given about patient ``number`` (stable)."""
    return {
        "patient_name": f"{FAMILY[number % len(FAMILY)]}, {GIVEN[number // 8 % len(GIVEN)]}",
        "patient_mrn": f"MRN{number:07d}",
        "location": WARDS[number % len(WARDS)],
    }


CATEGORY_SYSTEM = "https://cds.example.org/fhir/CodeSystem/alert-category"
OVERRIDE_SYSTEM = "https://cds.example.org/override"


def _medication_request(
    order_id: str, patient: str, daily: float, per_day: int, route: str = "oral"
) -> dict[str, Any]:
    dose = round(daily / per_day, 1)
    return {
        "resourceType": "MedicationRequest",
        "id": order_id,
        "status": "draft",
        "intent": "order",
        "subject": {"reference": patient},
        "medicationCodeableConcept": {
            "coding": [
                {
                    "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                    "code": "1292",
                    "display": "baclofen",
                }
            ],
            "text": f"Baclofen {'10 mg tablet' if route == 'oral' else 'intrathecal'}",
        },
        "dosageInstruction": [
            {
                "text": f"{dose:g} mg {per_day} times a day",
                "timing": {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}},
                "route": {"text": route},
                "doseAndRate": [
                    {
                        "doseQuantity": {
                            "value": dose,
                            "unit": "mg",
                            "system": "http://unitsofmeasure.org",
                            "code": "mg",
                        }
                    }
                ],
            }
        ],
    }


def build_card(
    *,
    rule: RuleSpec,
    card_id: str,
    order_id: str,
    patient: str,
    daily: float,
    egfr: float,
    age: int,
    weight: float,
    pack_version: str,
    when: datetime,
    rng: random.Random | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A card as the service would issue it, and the facts it used."""
    limit = 80.0 if rule.category == "dose-ceiling" else 30.0 if egfr < 30 else 60.0
    summary = {
        "dose-ceiling": f"Baclofen {daily:g} mg/day exceeds the 80 mg/day oral maximum",
        "renal-adjustment": f"Baclofen {daily:g} mg/day with eGFR {egfr:g}: reduce the dose",
        "titration-rate": f"Baclofen increase to {daily:g} mg/day is faster than advised",
        "withdrawal-risk": "Baclofen stopped abruptly: risk of withdrawal",
        "side-effect": "Sedation signs on baclofen: review the dose",
        "interaction": "Baclofen with an opioid: additive CNS depression",
        "data-quality": f"Renal result for baclofen dosing is {age % 9 + 4} days old",
    }[rule.category]
    # The shape the hook route stores: the flat engine fact plus display facts.
    facts: dict[str, Any] = {
        "kind": "interaction" if rule.category == "interaction" else "order",
        "hook": "order-sign",
        "age": age,
        "sex": "female" if age % 2 else "male",
        "weight_kg": weight,
        "inpatient": bool(age % 3),
        "renal_value": egfr,
        "renal_kind": "egfr_reported",
        "renal_is_egfr": True,
        "renal_age_hours": float(24 * (age % 9 + 1)),
        "order_id": order_id,
        "route": "oral",
        "status": "draft",
        "is_draft": True,
        "daily": daily,
        "admin_per_day": 3,
        "regimen_daily": daily,
        "change": "increase",
        "renal_measure": {
            "kind": "egfr_reported",
            "value": egfr,
            "unit": "mL/min/1.73m2",
            "date": (when - timedelta(days=age % 9 + 1)).isoformat(),
        },
        "weight_date": (when - timedelta(days=3)).isoformat(),
        "medication_text": "Baclofen 10 mg tablet",
    }
    if rule.category == "interaction":
        facts.update(drug_class="opioid", drug_names="oxycodone 10 mg", pair_has_draft=True)
    if rule.category == "side-effect":
        facts.update(resp_rate=10.0, spo2=91.0, rass=-2.0)
    suggested = min(daily, limit)
    card: dict[str, Any] = {
        "uuid": card_id,
        "summary": summary[:139],
        "indicator": rule.indicator,
        "detail": (
            f"**Why**\n\n- **{rule.indicator}**: {summary}; limit applied "
            f"{limit:g} mg/day (rule `{rule.id}`)\n\n"
            f"**Facts used**\n\n- Order {order_id}: Baclofen 10 mg tablet, oral, "
            f"{daily:g} mg/day, status draft\n- Patient: {age} years, {weight:g} kg\n"
            f"- Renal: eGFR {egfr:g} mL/min/1.73m2\n\n"
            "**Evidence**\n\n- [BNF: baclofen, renal impairment]"
            "(https://bnf.nice.org.uk/drugs/baclofen/)\n- Lioresal SmPC section 4.2"
        ),
        "source": {
            "label": f"Baclofen rule pack {pack_version}",
            "topic": {
                "system": CATEGORY_SYSTEM,
                "code": rule.category,
                "display": rule.category.replace("-", " "),
            },
        },
        "extension": {
            "cds-baclofen": {  # the legacy key: the console must still read such cards
                "ruleIds": [rule.id],
                "severityRule": rule.id,
                "packId": PACK_ID,
                "packVersion": pack_version,
                "profile": "US",
                "category": rule.category,
                "orderId": order_id,
            }
        },
    }
    if rule.indicator != "info":
        card["overrideReasons"] = [
            {"code": c, "system": OVERRIDE_SYSTEM, "display": d} for c, d in OVERRIDE_REASONS[:3]
        ]
    if rule.category in {"dose-ceiling", "renal-adjustment", "titration-rate"}:
        card["suggestions"] = [
            {
                "label": f"Change to {suggested:g} mg/day",
                "uuid": str(uuid.UUID(int=(rng or random).getrandbits(128))),
                "isRecommended": True,
                "actions": [
                    {
                        "type": "update",
                        "description": f"Reduce to {suggested:g} mg/day",
                        "resource": _medication_request(order_id, patient, suggested, 3),
                    }
                ],
            }
        ]
        card["selectionBehavior"] = "at-most-one"
    return card, facts


@dataclass(frozen=True)
class SeedSummary:
    cards: int
    invocations: int
    feedback: int
    newest: datetime
    oldest: datetime


def _chunks(rows: Sequence[dict[str, Any]], size: int) -> Iterator[Sequence[dict[str, Any]]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def seed_cards(
    maker: sessionmaker[Session],
    n_cards: int,
    *,
    end: datetime | None = None,
    days: int = 90,
    seed: int = 7,
    feedback_share: float = 0.65,
    patients: int = 5000,
) -> SeedSummary:
    """Bulk-insert ``n_cards`` cards spread over ``days`` days ending at ``end``."""
    rng = random.Random(seed)
    # Draws for what migration 0006 added (repeats, second answers, review times) come
    # from their own generator, so the base data is the same as before it.
    extra = random.Random(seed + 1000)
    recent: list[tuple[str, datetime, list[tuple[str, str]]]] = []  # patient, when, problems
    first_of: dict[tuple[str, str, str], str] = {}
    end = end or datetime.now(UTC).replace(microsecond=0)
    span = days * 86400
    weights = [r.weight for r in RULES]
    invocations: list[dict[str, Any]] = []
    cards: list[dict[str, Any]] = []
    card_rules: list[dict[str, Any]] = []
    feedback: list[dict[str, Any]] = []
    while len(cards) < n_cards:
        inv_id = str(uuid.UUID(int=rng.getrandbits(128)))
        when = end - timedelta(seconds=rng.randrange(span))
        number = rng.randrange(patients)
        patient = f"Patient/p{number:05d}"
        # One call in five is an order-select firing again on an order already alerted.
        repeat = recent[extra.randrange(len(recent))] if recent and extra.random() < 0.2 else None
        if repeat is not None:
            patient, number = repeat[0], int(repeat[0].rsplit("p", 1)[1])
            when = min(end, repeat[1] + timedelta(minutes=extra.randrange(1, 240)))
        version = PACK_VERSIONS[min(2, int((1 - (end - when).total_seconds() / span) * 3))]
        count = min(n_cards - len(cards), rng.choice((1, 1, 1, 2, 2, 3)))
        ctx = patient_context(number)
        prescriber = extra.randrange(len(PRESCRIBERS))
        fired: list[tuple[str, str]] = []
        invocations.append(
            {
                "id": inv_id,
                "hook_instance": str(uuid.UUID(int=rng.getrandbits(128))),
                "service_id": "baclofen-order-sign",
                "hook": "order-sign",
                "patient_ref": patient,
                "user_ref": f"Practitioner/dr{rng.randrange(300):03d}",
                "encounter_ref": None,
                "issuer": "https://ehr.example.org",
                "tenant": None,
                "received_at": when,
                "evaluated_at": when + timedelta(milliseconds=40),
                "duration_ms": 38.5,
                "timings": {"parse_ms": 4.1, "facts_ms": 6.3, "engine_ms": 21.7, "store_ms": 6.4},
                "status": "ok",
                "pack_id": PACK_ID,
                "pack_version": version,
                "card_count": count,
                "fetched_keys": [],
                "context": {**ctx, "prescriber_name": PRESCRIBERS[prescriber]},
            }
        )
        for k in range(count):
            rule = rng.choices(RULES, weights)[0]
            card_id = str(uuid.UUID(int=rng.getrandbits(128)))
            order_id = f"mr-{inv_id[:8]}-{k}"
            if repeat is not None and k < len(repeat[2]):
                order_id, rule_id = repeat[2][k]
                rule = next(r for r in RULES if r.id == rule_id)
            fired.append((order_id, rule.id))
            card, facts = build_card(
                rule=rule,
                card_id=card_id,
                order_id=order_id,
                patient=patient,
                daily=float(rng.choice((30, 45, 60, 75, 90, 100, 120))),
                egfr=float(rng.randrange(12, 95)),
                age=rng.randrange(18, 95),
                weight=float(rng.randrange(45, 120)),
                pack_version=version,
                when=when,
                rng=rng,
            )
            outcome = None
            if rng.random() < feedback_share:
                outcome = "overridden" if rng.random() < rule.override_p else "accepted"
            # a second answer on one card in twenty with feedback (re-sent, or changed)
            second = None
            if outcome is not None and extra.random() < 0.05:
                second = "accepted" if extra.random() < 0.5 else "overridden"
            outcomes = [o for o in (outcome, second) if o is not None]
            status = rng.choice(("unreviewed",) * 6 + ("acknowledged", "resolved"))
            problem = first_of.setdefault((patient, order_id, rule.id), card_id)
            cards.append(
                {
                    "id": card_id,
                    "invocation_id": inv_id,
                    "created_at": when,
                    "service_id": "baclofen-order-sign",
                    "hook": "order-sign",
                    "patient_ref": patient,
                    "order_id": order_id,
                    "category": rule.category,
                    "indicator": rule.indicator,
                    "severity_rank": SEVERITY_RANK[rule.indicator],
                    "summary": card["summary"],
                    "primary_rule": rule.id,
                    "pack_id": PACK_ID,
                    "pack_version": version,
                    "facts": facts,
                    "card_json": card,
                    "review_status": status,
                    "feedback_outcome": outcomes[-1] if outcomes else None,
                    "patient_name": ctx["patient_name"],
                    "patient_name_key": search_key(ctx["patient_name"]),
                    "patient_mrn": ctx["patient_mrn"],
                    "location": ctx["location"],
                    "prescriber_ref": f"Practitioner/dr{prescriber:03d}",
                    "prescriber_name": PRESCRIBERS[prescriber],
                    "order_text": "Baclofen 10 mg tablet: 20 mg 3 times a day",
                    "problem_id": problem,
                    "is_repeat": int(problem != card_id),
                    "accepted_n": outcomes.count("accepted"),
                    "overridden_n": outcomes.count("overridden"),
                    "feedback_state": _state(outcomes),
                    "override_reason": None,
                    "review_minutes": None
                    if status == "unreviewed"
                    else int(extra.expovariate(1 / 90)),
                }
            )
            card_rules.append(
                {
                    "card_id": card_id,
                    "rule_id": rule.id,
                    "severity": rule.indicator,
                    "sets_severity": True,
                }
            )
            if outcome is not None:
                code, display = rng.choice(OVERRIDE_REASONS)
                over = outcome == "overridden"
                suggestions = card.get("suggestions", [])
                if "overridden" in outcomes:
                    cards[-1]["override_reason"] = display
                if second is not None:
                    feedback.append(
                        {
                            "dedupe_key": uuid.UUID(int=extra.getrandbits(128)).hex + "1" * 32,
                            "card_id": card_id,
                            "service_id": "baclofen-order-sign",
                            "outcome": second,
                            "accepted_suggestions": [suggestions[0]["uuid"]]
                            if second == "accepted" and suggestions
                            else [],
                            "override_code": code if second == "overridden" else None,
                            "override_system": OVERRIDE_SYSTEM if second == "overridden" else None,
                            "override_display": display if second == "overridden" else None,
                            "override_comment": None,
                            "outcome_timestamp": when + timedelta(minutes=2),
                            "received_at": when + timedelta(minutes=2),
                        }
                    )
                feedback.append(
                    {
                        "dedupe_key": uuid.UUID(int=rng.getrandbits(128)).hex + "0" * 32,
                        "card_id": card_id,
                        "service_id": "baclofen-order-sign",
                        "outcome": outcome,
                        "accepted_suggestions": []
                        if over or not suggestions
                        else [suggestions[0]["uuid"]],
                        "override_code": code if over else None,
                        "override_system": OVERRIDE_SYSTEM if over else None,
                        "override_display": display if over else None,
                        "override_comment": None,
                        "outcome_timestamp": when + timedelta(minutes=1),
                        "received_at": when + timedelta(minutes=1),
                    }
                )
        if repeat is None:
            recent.append((patient, when, fired))
            del recent[:-200]
    with maker.begin() as s:
        if s.get_bind().dialect.name == "sqlite":
            # Random uuid keys land all over the indexes: a bigger page cache for this
            # connection keeps them in memory while seeding (2 MB by default).
            s.execute(text("PRAGMA cache_size=-262144"))
        for model, rows in (
            (Invocation, invocations),
            (Card, cards),
            (CardRule, card_rules),
            (Feedback, feedback),
        ):
            # The table, not the ORM class: the ORM's bulk path splits rows into small
            # batches whenever the set of NULL columns changes (slow); Core sends one
            # executemany per chunk.
            for chunk in _chunks(rows, 5000):
                s.execute(insert(model.__table__), chunk)
    times = [c["created_at"] for c in cards]
    return SeedSummary(
        cards=len(cards),
        invocations=len(invocations),
        feedback=len(feedback),
        newest=max(times),
        oldest=min(times),
    )


def _state(outcomes: list[str]) -> str:
    acc, over = "accepted" in outcomes, "overridden" in outcomes
    return "both" if acc and over else "accepted" if acc else "overridden" if over else "none"


def add_card(
    maker: sessionmaker[Session],
    *,
    rule_id: str = "baclofen-renal-egfr-below-30",
    category: str = "renal-adjustment",
    indicator: str = "critical",
    summary: str | None = None,
    detail: str | None = None,
    when: datetime | None = None,
    patient: str = "Patient/critical-1",
    pack_version: str = "1.2.0",
    extra_rules: Sequence[tuple[str, str]] = (),
) -> str:
    """One card through the real audit write path; returns its id."""
    when = when or datetime.now(UTC).replace(microsecond=0)
    spec = RuleSpec(rule_id, category, indicator, 1, 0.0)
    card_id = str(uuid.uuid4())
    order_id = f"mr-{card_id[:8]}"
    card, facts = build_card(
        rule=spec,
        card_id=card_id,
        order_id=order_id,
        patient=patient,
        daily=60.0,
        egfr=24.0,
        age=71,
        weight=68.0,
        pack_version=pack_version,
        when=when,
    )
    if summary is not None:
        card["summary"] = summary
    if detail is not None:
        card["detail"] = detail
    inv = InvocationRecord(
        id=str(uuid.uuid4()),
        hook_instance=str(uuid.uuid4()),
        service_id="baclofen-order-sign",
        hook="order-sign",
        patient_ref=patient,
        user_ref="Practitioner/dr-test",
        encounter_ref="Encounter/e1",
        issuer="https://ehr.example.org",
        tenant=None,
        received_at=when,
        evaluated_at=when + timedelta(milliseconds=35),
        duration_ms=35.2,
        timings={"parse_ms": 3.0, "engine_ms": 20.0, "store_ms": 5.0},
        pack_id=PACK_ID,
        pack_version=pack_version,
    )
    issued = IssuedCard(
        card=card,
        order_id=order_id,
        category=category,
        primary_rule=rule_id,
        rules=[(rule_id, indicator), *extra_rules],
        pack_id=PACK_ID,
        pack_version=pack_version,
        facts=facts,
    )
    with maker.begin() as s:
        record_invocation(session=s, invocation=inv, cards=[issued])
    return card_id
