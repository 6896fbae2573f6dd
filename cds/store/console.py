"""Queries behind the review console: the alert queue, one alert, reviews, rule statistics.

Everything here must stay fast with hundreds of thousands of cards, so:

* the queue is paged by keyset on ``(created_at, id)`` (no OFFSET: page 2,000 costs what
  page 1 costs) and selects only the columns the list shows, never the card JSON;
* the per-filter counts come from ONE grouped query over the narrow ``ix_cards_console``
  covering index, then are split per facet in Python (each facet counted with every
  *other* filter applied, so the pharmacist sees what choosing another value would give);
* the dashboard aggregates in SQL over the same covering index.

Functions are keyword-only and take a ``Session``; the caller owns the transaction.
"""

from __future__ import annotations

import base64
import binascii
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select, tuple_
from sqlalchemy.orm import Session, sessionmaker

from cds.store.models import Card, CardRule, Feedback, Invocation, Review, User

#: Review actions and the status each one leaves the card in (``None``: unchanged).
REVIEW_ACTIONS: dict[str, str | None] = {
    "acknowledge": "acknowledged",
    "escalate": "escalated",
    "resolve": "resolved",
    "annotate": None,
}
#: Actions that make no sense without words.
NOTE_REQUIRED = frozenset({"escalate", "annotate"})
REVIEW_STATUSES = ("unreviewed", "acknowledged", "escalated", "resolved")
INDICATORS = ("critical", "warning", "info")
MAX_NOTE_CHARS = 4000

# Filter attribute -> card column; also the facets the queue counts.
# In the column order of ``ix_cards_stats`` so grouping by them streams from the index.
_FACETS: dict[str, Any] = {
    "rule": Card.primary_rule,
    "category": Card.category,
    "indicator": Card.indicator,
    "pack_version": Card.pack_version,
    "review_status": Card.review_status,
}


def as_utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; every timestamp the service stores is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class QueueFilter:
    """What the pharmacist narrowed the queue to (``None``: any)."""

    indicator: str | None = None
    category: str | None = None
    rule: str | None = None
    pack_version: str | None = None
    review_status: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    patient: str | None = None

    def facet_value(self, name: str) -> str | None:
        value: str | None = getattr(self, name)
        return value

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))


def _patient_refs(patient: str) -> list[str]:
    """``123`` matches ``Patient/123`` as well as a bare ``123`` (stored as the audit
    stores them: long ones bounded with a hash)."""
    from cds.store.audit import bounded_ref

    patient = patient.strip()
    refs = [patient] if "/" in patient else [patient, f"Patient/{patient}"]
    return [bounded_ref(r) or r for r in refs]


def _base_conditions(f: QueueFilter) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if f.since is not None:
        conds.append(Card.created_at >= f.since)
    if f.until is not None:
        conds.append(Card.created_at < f.until)
    if f.patient:
        conds.append(Card.patient_ref.in_(_patient_refs(f.patient)))
    return conds


def _conditions(f: QueueFilter, *, steer: bool = False) -> list[ColumnElement[bool]]:
    """SQL conditions for ``f``.

    ``steer``: with two or more menu filters, or a patient and a menu filter, compare
    ``column || ''`` so no menu-column index qualifies. Otherwise SQLite seeks one
    equality index (say review_status = 'unreviewed', three cards in four) and reads fat
    rows in date order until the other filters match: 250 ms at 100k cards for a rare
    combination. Steered, it walks the covering ``ix_cards_period`` in date order
    (about 20 ms at worst), or the patient's own index. PostgreSQL plans either form.
    """
    chosen = [
        (column, f.facet_value(name))
        for name, column in _FACETS.items()
        if f.facet_value(name) is not None
    ]
    steer = steer and (len(chosen) >= 2 or (bool(f.patient) and bool(chosen)))
    conds = _base_conditions(f)
    conds += [(column.concat("") if steer else column) == value for column, value in chosen]
    return conds


@dataclass(frozen=True)
class Cursor:
    """A position in the queue: the ``(created_at, id)`` of a row, opaque in URLs."""

    created_at: datetime
    id: str

    def encode(self) -> str:
        raw = f"{as_utc(self.created_at).isoformat()}|{self.id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str | None) -> Cursor | None:
        """``None`` for anything that is not a cursor we made (a tampered URL is page 1)."""
        if not text:
            return None
        if len(text) > 200:
            return None
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            when, _, card_id = raw.partition("|")
            if not card_id or len(card_id) > 64 or not card_id.isprintable():
                return None
            return cls(as_utc(datetime.fromisoformat(when)), card_id)
        except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError):
            # OverflowError: a crafted instant next to year 1 or 9999 moved to UTC
            return None


@dataclass(frozen=True)
class QueueRow:
    id: str
    created_at: datetime
    indicator: str
    category: str
    summary: str
    rule: str
    pack_id: str
    pack_version: str
    review_status: str
    feedback_outcome: str | None
    patient_ref: str | None
    order_id: str
    hook: str


@dataclass(frozen=True)
class QueuePage:
    rows: list[QueueRow]
    older: Cursor | None  # pass as ``before`` for the next (older) page
    newer: Cursor | None  # pass as ``after`` for the previous (newer) page


_ROW_COLUMNS = (
    Card.id,
    Card.created_at,
    Card.indicator,
    Card.category,
    Card.summary,
    Card.primary_rule,
    Card.pack_id,
    Card.pack_version,
    Card.review_status,
    Card.feedback_outcome,
    Card.patient_ref,
    Card.order_id,
    Card.hook,
)


def _row(r: Any) -> QueueRow:
    return QueueRow(
        id=r[0],
        created_at=as_utc(r[1]),
        indicator=r[2],
        category=r[3],
        summary=r[4],
        rule=r[5],
        pack_id=r[6],
        pack_version=r[7],
        review_status=r[8],
        feedback_outcome=r[9],
        patient_ref=r[10],
        order_id=r[11],
        hook=r[12],
    )


def _key() -> Any:
    return tuple_(Card.created_at, Card.id)


def queue_page(
    *,
    session: Session,
    filter: QueueFilter,
    limit: int = 50,
    before: Cursor | None = None,
    after: Cursor | None = None,
) -> QueuePage:
    """One page of the queue, newest first, starting after a cursor (keyset paging).

    Two steps: the page's keys from the narrowest index that can answer (see
    ``_conditions``), then the listed columns of just those cards by primary key.
    """
    conds = _conditions(filter, steer=True)
    if after is not None:  # walking back towards the newest cards
        conds.append(_key() > (after.created_at, after.id))
        order = (Card.created_at.asc(), Card.id.asc())
    else:
        if before is not None:
            conds.append(_key() < (before.created_at, before.id))
        order = (Card.created_at.desc(), Card.id.desc())
    conn = session.connection()
    keys = [
        k
        for (k,) in conn.execute(
            select(Card.id).where(*conds).order_by(*order).limit(limit + 1)
        ).all()
    ]
    more = len(keys) > limit
    keys = keys[:limit]
    by_id = (
        {r[0]: _row(r) for r in conn.execute(select(*_ROW_COLUMNS).where(Card.id.in_(keys))).all()}
        if keys
        else {}
    )
    rows = [by_id[k] for k in keys if k in by_id]
    if after is not None:
        rows.reverse()
        return QueuePage(
            rows=rows,
            older=_cursor(rows[-1]) if rows else None,
            newer=_cursor(rows[0]) if rows and more else None,
        )
    return QueuePage(
        rows=rows,
        older=_cursor(rows[-1]) if rows and more else None,
        newer=_cursor(rows[0]) if rows and before is not None else None,
    )


def _cursor(row: QueueRow) -> Cursor:
    return Cursor(row.created_at, row.id)


@dataclass
class Facets:
    """How many cards match, and per facet value how many would match if chosen."""

    total: int
    counts: dict[str, list[tuple[str, int]]]
    critical_unreviewed: int  # within the date range and patient, whatever else is chosen


def facet_counts(*, session: Session, filter: QueueFilter) -> Facets:
    """Counts for the filter bar from one grouped query (see the module docstring)."""
    names = list(_FACETS)
    stmt = (
        select(*_FACETS.values(), func.count())
        .where(*_base_conditions(filter))
        .group_by(*_FACETS.values())
    )
    combos = [(tuple(r[:-1]), int(r[-1])) for r in session.execute(stmt)]
    chosen = [filter.facet_value(n) for n in names]
    per: dict[str, dict[str, int]] = {n: defaultdict(int) for n in names}
    total = 0
    critical_unreviewed = 0
    i_ind, i_status = names.index("indicator"), names.index("review_status")
    for values, count in combos:
        misses = [i for i, want in enumerate(chosen) if want is not None and values[i] != want]
        if not misses:
            total += count
        for i, name in enumerate(names):
            if not misses or misses == [i]:
                per[name][values[i]] += count
        if values[i_ind] == "critical" and values[i_status] == "unreviewed":
            critical_unreviewed += count
    ordered = {n: sorted(per[n].items(), key=lambda kv: (-kv[1], kv[0])) for n in names}
    return Facets(total=total, counts=ordered, critical_unreviewed=critical_unreviewed)


@dataclass
class CardDetail:
    """Everything the alert page shows, loaded while the session is open."""

    card: Card
    invocation: Invocation | None
    rules: list[CardRule]
    feedback: list[Feedback]
    reviews: list[tuple[Review, str]]  # (review, reviewer username)


def card_detail(*, session: Session, card_id: str) -> CardDetail | None:
    card = session.get(Card, card_id)
    if card is None:
        return None
    invocation = session.get(Invocation, card.invocation_id)
    rules = list(
        session.scalars(
            select(CardRule)
            .where(CardRule.card_id == card_id)
            .order_by(CardRule.sets_severity.desc(), CardRule.id)
        )
    )
    feedback = list(
        session.scalars(
            select(Feedback)
            .where(Feedback.card_id == card_id)
            .order_by(Feedback.outcome_timestamp, Feedback.id)
        )
    )
    reviews = [
        (r, name)
        for r, name in session.execute(
            select(Review, User.username)
            .join(User, User.id == Review.reviewer_id)
            .where(Review.card_id == card_id)
            .order_by(Review.created_at, Review.id)
        )
    ]
    return CardDetail(
        card=card, invocation=invocation, rules=rules, feedback=feedback, reviews=reviews
    )


class ReviewError(ValueError):
    """A review action that cannot be recorded as asked (unknown action, missing note)."""


def add_review(
    *,
    session: Session,
    card_id: str,
    action: str,
    note: str | None,
    reviewer_id: int,
    now: datetime,
) -> bool:
    """Append a review and move the card's status; ``False`` if the card does not exist.

    Append-only: earlier reviews are never changed, so the history is the audit trail.
    """
    if action not in REVIEW_ACTIONS:
        raise ReviewError(f"unknown action {action!r}")
    note = (note or "").strip() or None
    if action in NOTE_REQUIRED and note is None:
        raise ReviewError(f"{action} needs a note")
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise ReviewError(f"a note is at most {MAX_NOTE_CHARS} characters")
    card = session.get(Card, card_id)
    if card is None:
        return False
    session.add(
        Review(card_id=card_id, action=action, note=note, reviewer_id=reviewer_id, created_at=now)
    )
    status = REVIEW_ACTIONS[action]
    if status is not None:
        card.review_status = status
    session.flush()
    return True


# --- rules dashboard -------------------------------------------------------------------


@dataclass
class RuleStat:
    """Cards issued by one rule (or category) in a period and what prescribers did."""

    key: str
    category: str
    issued: int = 0
    accepted: int = 0
    overridden: int = 0
    reasons: list[tuple[str, int]] = field(default_factory=list)

    @property
    def with_feedback(self) -> int:
        return self.accepted + self.overridden

    @property
    def no_feedback(self) -> int:
        return self.issued - self.with_feedback

    @property
    def override_rate(self) -> float | None:
        """Overridden among the cards that got feedback (``None`` without any)."""
        return self.overridden / self.with_feedback if self.with_feedback else None


@dataclass
class Dashboard:
    rules: list[RuleStat]
    categories: list[RuleStat]
    daily: list[tuple[str, str, int]]  # (YYYY-MM-DD, indicator, cards)


def _period(since: datetime | None, until: datetime | None) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if since is not None:
        conds.append(Card.created_at >= since)
    if until is not None:
        conds.append(Card.created_at < until)
    return conds


def _override_reasons(
    *, session: Session, period: list[ColumnElement[bool]]
) -> dict[str, dict[str, int]]:
    """rule -> override reason -> feedback items, for overridden cards in the period.

    A LEFT JOIN on purpose: it makes the cards side the outer loop (SQLite does not
    reorder it), read from the covering ``ix_cards_stats`` index, with one probe of the
    covering ``ix_feedback_card_outcome`` per overridden card. An inner join lets SQLite (without
    ANALYZE statistics) start from feedback and read each card's fat row instead, about
    three times slower. Every override item counts: a card overridden twice with two
    reasons shows both.
    """
    reason = func.coalesce(Feedback.override_display, Feedback.override_code, "(no reason given)")
    stmt = (
        select(Card.primary_rule, reason, func.count(Feedback.id))
        .select_from(Card)
        .outerjoin(Feedback, and_(Feedback.card_id == Card.id, Feedback.outcome == "overridden"))
        .where(*period, Card.feedback_outcome == "overridden")
        .group_by(Card.primary_rule, reason)
    )
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for rule, text, count in session.execute(stmt):
        if count:  # cards whose override item was replaced by a later one have none
            out[rule][text] = int(count)
    return out


def dashboard(*, session: Session, since: datetime | None, until: datetime | None) -> Dashboard:
    """Per-rule and per-category outcomes, override reasons and cards per day by severity.

    A rule is counted by the cards it set the severity of (``cards.primary_rule``): that
    is the rule the prescriber saw the card for, so its override rate is the one to read.
    """
    period = _period(since, until)
    by_rule: dict[str, RuleStat] = {}
    # Grouped by a prefix of ``ix_cards_stats`` (covering, no sort), folded in Python.
    group = (*_FACETS.values(), Card.feedback_outcome)
    stmt = select(*group, func.count()).where(*period).group_by(*group)
    for rule, category, *_, outcome, count in session.execute(stmt):
        stat = by_rule.setdefault(rule, RuleStat(key=rule, category=category))
        stat.issued += count
        if outcome == "accepted":
            stat.accepted += count
        elif outcome == "overridden":
            stat.overridden += count

    reasons = _override_reasons(session=session, period=period)
    by_category: dict[str, RuleStat] = {}
    cat_reasons: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for stat in by_rule.values():
        stat.reasons = sorted(reasons.get(stat.key, {}).items(), key=lambda kv: (-kv[1], kv[0]))
        cat = by_category.setdefault(
            stat.category, RuleStat(key=stat.category, category=stat.category)
        )
        cat.issued += stat.issued
        cat.accepted += stat.accepted
        cat.overridden += stat.overridden
        for text, count in stat.reasons:
            cat_reasons[stat.category][text] += count
    for cat in by_category.values():
        cat.reasons = sorted(cat_reasons[cat.key].items(), key=lambda kv: (-kv[1], kv[0]))

    day = func.date(Card.created_at)
    daily_stmt = (
        select(day, Card.indicator, func.count())
        .where(*period)
        .group_by(day, Card.indicator)
        .order_by(day)
    )
    daily = [(str(d), ind, int(n)) for d, ind, n in session.execute(daily_stmt)]

    def order(stats: dict[str, RuleStat]) -> list[RuleStat]:
        return sorted(stats.values(), key=lambda s: (-s.issued, s.key))

    return Dashboard(rules=order(by_rule), categories=order(by_category), daily=daily)


# --- export ----------------------------------------------------------------------------

EXPORT_COLUMNS = (
    "card_id",
    "created_at",
    "indicator",
    "category",
    "rule",
    "pack_id",
    "pack_version",
    "review_status",
    "feedback_outcome",
    "patient",
    "order_id",
    "hook",
    "summary",
)


def iter_export(
    *, maker: sessionmaker[Session], filter: QueueFilter, batch: int = 5000
) -> Iterator[list[QueueRow]]:
    """Every card the filter matches, newest first, in batches (one short read each).

    Short transactions on purpose: a slow download must not hold a read transaction (and
    with SQLite, the WAL) open for minutes; keyset paging keeps each batch as cheap as
    the first.
    """
    cursor: Cursor | None = None
    while True:
        with maker() as s:
            page = queue_page(session=s, filter=filter, limit=batch, before=cursor)
        if page.rows:
            yield page.rows
        if page.older is None:
            return
        cursor = page.older


def known_values(*, session: Session) -> dict[str, list[str]]:
    """Distinct categories, rules and pack versions (filter choices with nothing chosen)."""
    out: dict[str, list[str]] = {}
    for name in ("category", "rule", "pack_version"):
        col = _FACETS[name]
        out[name] = [v for (v,) in session.execute(select(col).distinct().order_by(col))]
    return out


def period_bounds(*, session: Session) -> tuple[datetime, datetime] | None:
    """Oldest and newest card times (for sensible default periods on an old database)."""
    # Two queries: SQLite answers a lone min() or max() from the index end, both together
    # with a full scan.
    lo = session.scalar(select(func.min(Card.created_at)))
    hi = session.scalar(select(func.max(Card.created_at)))
    if lo is None or hi is None:
        return None
    return as_utc(lo), as_utc(hi)


__all__ = [
    "INDICATORS",
    "NOTE_REQUIRED",
    "REVIEW_ACTIONS",
    "REVIEW_STATUSES",
    "CardDetail",
    "Cursor",
    "Dashboard",
    "Facets",
    "QueueFilter",
    "QueuePage",
    "QueueRow",
    "ReviewError",
    "RuleStat",
    "add_review",
    "card_detail",
    "dashboard",
    "facet_counts",
    "iter_export",
    "queue_page",
]
