"""A pharmacist's actions on alerts: one card (with its problem's other firings), or a
group of the queue (a patient, an order, a problem); escalation to a named user or a role.

Append-only: every action is a ``reviews`` row per card, earlier ones never changed, so
the history is the audit trail. What the queue and the dashboard need of the reviews
(status, who it is escalated to, minutes to the first action) is kept on the card row.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from cds.store.console import (
    ACTS_ON,
    ESCALATION_ROLES,
    MAX_GROUP_ACTION,
    MAX_NOTE_CHARS,
    NOTE_REQUIRED,
    REVIEW_ACTIONS,
    Escalation,
    QueueFilter,
    _conditions,
    _problem_of,
    _scope,
    as_utc,
)
from cds.store.models import Card, Review, User


@dataclass(frozen=True)
class Assignee:
    """Someone an escalation can go to (the alert page's choices)."""

    value: str  # "user:7" or "role:pharmacist"
    label: str


def escalation_choices(*, session: Session) -> list[Assignee]:
    roles = [Assignee("role:pharmacist", "Any pharmacist on the console")]
    roles.append(Assignee("role:admin", "The console administrators"))
    users = [
        Assignee(f"user:{uid}", f"{name} ({role})")
        for uid, name, role in session.execute(
            select(User.id, User.username, User.role)
            .where(User.disabled.is_(False))
            .order_by(User.username)
        )
    ]
    return roles + users


class ReviewError(ValueError):
    """A review action that cannot be recorded as asked (unknown action, missing note)."""


def parse_escalation(*, session: Session, value: str | None) -> Escalation:
    """``user:7`` (an enabled account) or ``role:pharmacist``; ``ReviewError`` otherwise."""
    kind, _, ident = (value or "").partition(":")
    if kind == "role" and ident in ESCALATION_ROLES:
        return Escalation(role=ident)
    if kind == "user" and ident.isdigit() and len(ident) < 10:
        user = session.get(User, int(ident))
        if user is not None and not user.disabled:
            return Escalation(user_id=user.id)
    raise ReviewError("choose who to escalate to: a named colleague or a role")


def _check(action: str, note: str | None) -> str | None:
    if action not in REVIEW_ACTIONS:
        raise ReviewError(f"unknown action {action!r}")
    note = (note or "").strip() or None
    if action in NOTE_REQUIRED and note is None:
        raise ReviewError(f"{action} needs a note")
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise ReviewError(f"a note is at most {MAX_NOTE_CHARS} characters")
    return note


def _apply(
    session: Session,
    cards: Sequence[Card],
    *,
    action: str,
    note: str | None,
    reviewer_id: int,
    now: datetime,
    escalate_to: Escalation | None,
    batch_id: str | None,
) -> None:
    status = REVIEW_ACTIONS[action]
    target = escalate_to or Escalation()
    for card in cards:
        session.add(
            Review(
                card_id=card.id,
                action=action,
                note=note,
                reviewer_id=reviewer_id,
                created_at=now,
                escalated_to_user_id=target.user_id if action == "escalate" else None,
                escalated_to_role=target.role if action == "escalate" else None,
                batch_id=batch_id,
            )
        )
        if card.review_minutes is None:
            waited = (now - as_utc(card.created_at)).total_seconds()
            card.review_minutes = max(0, int(waited // 60))
        if status is not None:
            card.review_status = status
            card.escalated_to_user_id = target.user_id if action == "escalate" else None
            card.escalated_to_role = target.role if action == "escalate" else None
    session.flush()


def add_review(
    *,
    session: Session,
    card_id: str,
    action: str,
    note: str | None,
    reviewer_id: int,
    now: datetime,
    escalate_to: Escalation | None = None,
    with_repeats: bool = False,
) -> bool:
    """Append a review and move the card's status; ``False`` if the card does not exist.

    ``with_repeats``: the action covers the problem, every firing of the same rule on the
    same order that it applies to (each its own review row, one ``batch_id``). Append-only:
    earlier reviews are never changed, so the history is the audit trail.
    """
    note = _check(action, note)
    if action == "escalate" and escalate_to is None:
        raise ReviewError("choose who to escalate to: a named colleague or a role")
    card = session.get(Card, card_id)
    if card is None:
        return False
    cards = [card]
    batch_id = None
    if with_repeats and action != "annotate":
        others = session.scalars(
            select(Card).where(
                *_problem_of(card),
                Card.id != card.id,
                Card.review_status.in_(sorted(ACTS_ON[action])),
            )
        ).all()
        if others:
            cards += list(others)
            batch_id = str(uuid.uuid4())
    _apply(
        session,
        cards,
        action=action,
        note=note,
        reviewer_id=reviewer_id,
        now=now,
        escalate_to=escalate_to,
        batch_id=batch_id,
    )
    return True


@dataclass(frozen=True)
class Group:
    """A group of the grouped queue: a patient, one of their orders, or one problem."""

    patient_ref: str
    order_id: str | None = None
    rule: str | None = None


def group_review(
    *,
    session: Session,
    group: Group,
    filter: QueueFilter,
    upto: datetime | None,
    action: str,
    note: str | None,
    reviewer_id: int,
    now: datetime,
    escalate_to: Escalation | None = None,
) -> int:
    """One action on every card of a group that the filter shows and the action applies
    to (acknowledge: the unreviewed ones; resolve and escalate: the open ones), issued no
    later than ``upto`` (when the page was drawn: a card that arrived since was not seen).
    Each card gets its own review row; they share one ``batch_id``. Returns how many.
    """
    note = _check(action, note)
    if action == "escalate" and escalate_to is None:
        raise ReviewError("choose who to escalate to: a named colleague or a role")
    conds = _conditions(_scope(session, filter))
    conds += [Card.patient_ref == group.patient_ref]
    if group.order_id is not None:
        conds.append(Card.order_id == group.order_id)
    if group.rule is not None:
        conds.append(Card.primary_rule == group.rule)
    if upto is not None:
        conds.append(Card.created_at <= upto)
    conds.append(Card.review_status.in_(sorted(ACTS_ON[action])))
    cards = session.scalars(select(Card).where(*conds).limit(MAX_GROUP_ACTION + 1)).all()
    if len(cards) > MAX_GROUP_ACTION:
        raise ReviewError(
            f"more than {MAX_GROUP_ACTION} alerts in this group: narrow the filter first"
        )
    if cards:
        _apply(
            session,
            cards,
            action=action,
            note=note,
            reviewer_id=reviewer_id,
            now=now,
            escalate_to=escalate_to,
            batch_id=str(uuid.uuid4()),
        )
    return len(cards)


__all__ = [
    "Assignee",
    "Group",
    "ReviewError",
    "add_review",
    "escalation_choices",
    "group_review",
    "parse_escalation",
]
