"""Writing the audit trail: invocations with their cards, rejected requests, feedback.

Keyword-only functions taking a ``Session``; callers own the transaction boundary
(``with sessionmaker.begin() as s``) so an invocation and its cards commit together.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from cds.store.models import Card, CardRule, Feedback, Invocation, RejectedRequest

log = logging.getLogger("cds.store")
SEVERITY_RANK = {"info": 1, "warning": 2, "critical": 3}


@dataclass
class IssuedCard:
    """What the store needs of one card (built by the pipeline, stored verbatim)."""

    card: dict[str, Any]
    order_id: str
    category: str
    primary_rule: str
    rules: list[tuple[str, str]]  # (rule_id, severity)
    pack_id: str
    pack_version: str
    facts: dict[str, Any]


@dataclass
class InvocationRecord:
    id: str
    hook_instance: str
    service_id: str
    hook: str
    patient_ref: str | None
    user_ref: str | None
    encounter_ref: str | None
    issuer: str | None
    tenant: str | None
    received_at: datetime
    evaluated_at: datetime
    duration_ms: float
    timings: dict[str, float]
    pack_id: str | None
    pack_version: str | None
    fetched_keys: list[str] = field(default_factory=list)
    data_issues: list[dict[str, Any]] = field(default_factory=list)
    source: str = "hook"  # "hook" | "sweep"
    run_id: str | None = None  # the sweep run (source "sweep")


def record_invocation(
    *, session: Session, invocation: InvocationRecord, cards: list[IssuedCard]
) -> None:
    """Insert the invocation and every card it issued (caller commits once).

    Core ``insert`` with parameter lists rather than ORM objects: this runs on every hook
    call, and the unit-of-work bookkeeping cost more than the SQL itself (measured).
    """
    session.execute(
        insert(Invocation),
        [
            {
                "id": invocation.id,
                "hook_instance": invocation.hook_instance,
                "service_id": invocation.service_id,
                "hook": invocation.hook,
                "patient_ref": invocation.patient_ref,
                "user_ref": invocation.user_ref,
                "encounter_ref": invocation.encounter_ref,
                "issuer": invocation.issuer,
                "tenant": invocation.tenant,
                "received_at": invocation.received_at,
                "evaluated_at": invocation.evaluated_at,
                "duration_ms": invocation.duration_ms,
                "timings": invocation.timings,
                "status": "ok",
                "pack_id": invocation.pack_id,
                "pack_version": invocation.pack_version,
                "card_count": len(cards),
                "fetched_keys": invocation.fetched_keys,
                "data_issues": invocation.data_issues or None,
                "source": invocation.source,
                "run_id": invocation.run_id,
            }
        ],
    )
    if not cards:
        return
    card_rows = []
    rule_rows = []
    for c in cards:
        top = max(SEVERITY_RANK[s] for _, s in c.rules) if c.rules else 1
        card_rows.append(
            {
                "id": c.card["uuid"],
                "invocation_id": invocation.id,
                "created_at": invocation.received_at,
                "service_id": invocation.service_id,
                "hook": invocation.hook,
                "patient_ref": invocation.patient_ref,
                "order_id": c.order_id,
                "category": c.category,
                "indicator": c.card["indicator"],
                "severity_rank": SEVERITY_RANK[c.card["indicator"]],
                "summary": c.card["summary"][:200],
                "primary_rule": c.primary_rule,
                "pack_id": c.pack_id,
                "pack_version": c.pack_version,
                "facts": c.facts,
                "card_json": c.card,
                "review_status": "unreviewed",
                "feedback_outcome": None,
                "source": invocation.source,
                "run_id": invocation.run_id,
            }
        )
        marked = False
        for rule_id, severity in c.rules:
            sets = not marked and SEVERITY_RANK[severity] == top and rule_id == c.primary_rule
            marked = marked or sets
            rule_rows.append(
                {
                    "card_id": c.card["uuid"],
                    "rule_id": rule_id,
                    "severity": severity,
                    "sets_severity": sets,
                }
            )
    session.execute(insert(Card), card_rows)
    if rule_rows:
        session.execute(insert(CardRule), rule_rows)


def record_rejection(
    *,
    maker: sessionmaker[Session],
    received_at: datetime,
    path: str,
    status: int,
    reason: str,
    hook_instance: str | None,
) -> None:
    """Best effort: a rejection that cannot be stored must not turn a 4xx into a 5xx."""
    try:
        with maker.begin() as s:
            s.add(
                RejectedRequest(
                    received_at=received_at,
                    path=path[:256],
                    status=status,
                    reason=reason[:512],
                    hook_instance=(hook_instance or None),
                )
            )
    except Exception:  # noqa: BLE001 - the caller's response matters more than this row
        pass


@dataclass
class FeedbackItem:
    card_id: str
    outcome: str
    accepted_suggestions: list[str]
    override_code: str | None
    override_system: str | None
    override_display: str | None
    override_comment: str | None
    outcome_timestamp: datetime


def feedback_key(service_id: str, item: FeedbackItem) -> str:
    """Stable identity of a feedback item: the same item sent twice is stored once."""
    raw = json.dumps(
        [
            service_id,
            item.card_id,
            item.outcome,
            sorted(item.accepted_suggestions),
            item.override_code,
            item.outcome_timestamp.isoformat(),
        ],
        separators=(",", ":"),
    )
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class CardRef:
    """What feedback validation needs of an issued card."""

    service_id: str
    suggestion_ids: frozenset[str]


def cards_for_feedback(*, maker: sessionmaker[Session], card_ids: list[str]) -> dict[str, CardRef]:
    """card id -> its service and suggestion uuids, for the ids that exist."""
    if not card_ids:
        return {}
    with maker() as s:
        rows = s.execute(
            select(Card.id, Card.service_id, Card.card_json).where(Card.id.in_(set(card_ids)))
        )
        return {
            r[0]: CardRef(
                r[1], frozenset(str(x.get("uuid")) for x in (r[2] or {}).get("suggestions", []))
            )
            for r in rows
        }


def store_feedback(
    *,
    maker: sessionmaker[Session],
    service_id: str,
    items: list[FeedbackItem],
    received_at: datetime,
) -> list[bool]:
    """Store each item idempotently; returns, per item, whether it was new.

    One transaction per batch with a savepoint per item, so a duplicate (unique key) is
    skipped without losing the others; the whole batch is durable when this returns.
    """
    from cds.store.db import write_lock

    created: list[bool] = []
    with write_lock(maker), maker.begin() as s:
        for item in items:
            key = feedback_key(service_id, item)
            if s.execute(select(Feedback.id).where(Feedback.dedupe_key == key)).first():
                created.append(False)
                continue
            try:
                with s.begin_nested():
                    s.add(
                        Feedback(
                            dedupe_key=key,
                            card_id=item.card_id,
                            service_id=service_id,
                            outcome=item.outcome,
                            accepted_suggestions=item.accepted_suggestions,
                            override_code=item.override_code,
                            override_system=item.override_system,
                            override_display=item.override_display,
                            override_comment=item.override_comment,
                            outcome_timestamp=item.outcome_timestamp,
                            received_at=received_at,
                        )
                    )
                    s.flush()
                created.append(True)
            except IntegrityError:  # a concurrent duplicate won the race
                created.append(False)
                continue
            card = s.get(Card, item.card_id)
            if card is not None:
                card.feedback_outcome = item.outcome
    return created


def save_invocation(
    *, maker: sessionmaker[Session], invocation: InvocationRecord, cards: list[IssuedCard]
) -> None:
    """Commit the invocation and its cards in one transaction, or raise StoreUnavailable."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    from cds.errors import StoreUnavailable
    from cds.store.db import write_lock

    try:
        with write_lock(maker), maker.begin() as s:
            record_invocation(session=s, invocation=invocation, cards=cards)
    except (OperationalError, DBAPIError) as exc:
        log.error(
            "audit write failed: %s: %s",
            type(exc).__name__,
            str(exc.orig)[:200] if getattr(exc, "orig", None) is not None else "",
        )
        raise StoreUnavailable(
            "the audit store is unavailable; no cards are returned without their audit record"
        ) from exc


def guarded(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a store call, turning database outages into StoreUnavailable (503)."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    from cds.errors import StoreUnavailable

    try:
        return fn(*args, **kwargs)
    except (OperationalError, DBAPIError) as exc:
        raise StoreUnavailable("the audit store is unavailable") from exc
