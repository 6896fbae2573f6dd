"""Queries behind the review console: the queue (grouped by patient, order and problem, or
every card), one alert, reviews (one card or a group), measures, the CSV export.

Everything here must stay fast with hundreds of thousands of cards, so:

* every list is paged by keyset on ``(created_at, id)`` (no OFFSET: page 2,000 costs what
  page 1 costs) and selects only the columns it shows, never the card JSON;
* the per-filter counts come from ONE grouped query over the narrow ``ix_cards_stats``
  covering index, then are split per facet in Python (each facet counted with every
  *other* filter applied, so the pharmacist sees what choosing another value would give);
* the dashboard (``cds.store.measures``) aggregates in SQL over covering indexes: what it
  needs of the feedback and the reviews is kept on the card row when they arrive.

A *problem* is one rule on one order of one patient: the same rule firing again on every
order-select of that order is the same problem (``cards.problem_id`` names its first
card), shown once with how many times it fired.

Functions are keyword-only and take a ``Session``; the caller owns the transaction.
"""

from __future__ import annotations

import base64
import binascii
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, or_, select, tuple_
from sqlalchemy.orm import Session, sessionmaker

from cds.store.audit import search_key
from cds.store.measures import Dashboard, Period, RuleStat, dashboard
from cds.store.models import Card, CardRule, Feedback, Invocation, Review, User

#: Review actions and the status each one leaves the card in (``None``: unchanged).
REVIEW_ACTIONS: dict[str, str | None] = {
    "acknowledge": "acknowledged",
    "escalate": "escalated",
    "resolve": "resolved",
    "annotate": None,
}
#: The statuses an action moves a card from (a group action skips the others: acknowledging
#: a patient's alerts must not turn an escalation back into "seen").
ACTS_ON: dict[str, frozenset[str]] = {
    "acknowledge": frozenset({"unreviewed"}),
    "escalate": frozenset({"unreviewed", "acknowledged", "escalated"}),
    "resolve": frozenset({"unreviewed", "acknowledged", "escalated"}),
    "annotate": frozenset({"unreviewed", "acknowledged", "escalated", "resolved"}),
}
#: Actions that make no sense without words.
NOTE_REQUIRED = frozenset({"escalate", "annotate"})
REVIEW_STATUSES = ("unreviewed", "acknowledged", "escalated", "resolved")
OPEN_STATUSES = ("unreviewed", "acknowledged", "escalated")
INDICATORS = ("critical", "warning", "info")
SOURCES = ("hook", "sweep")
#: feedback filter value -> the ``feedback_state`` values it matches ("overridden": at
#: least once, whatever else happened).
FEEDBACK_FILTERS: dict[str, frozenset[str]] = {
    "overridden": frozenset({"overridden", "both"}),
    "accepted": frozenset({"accepted", "both"}),
    "both": frozenset({"both"}),
    "none": frozenset({"none"}),
}
ESCALATION_ROLES = ("pharmacist", "admin")
DATA_QUALITY = "data-quality"
MAX_NOTE_CHARS = 4000
MAX_GROUP_ACTION = 2000  # cards one group action may change (a bigger one: narrow it)
SEVERITY = {"critical": 3, "warning": 2, "info": 1}

# Filter attribute -> card column; also the facets the queue counts.
# In the column order of ``ix_cards_stats`` so grouping by them streams from the index.
_FACETS: dict[str, Any] = {
    "rule": Card.primary_rule,
    "category": Card.category,
    "indicator": Card.indicator,
    "pack": Card.pack_id,
    "pack_version": Card.pack_version,
    "review_status": Card.review_status,
    "source": Card.source,
    "feedback": Card.feedback_state,
}


def _facet_matches(name: str, chosen: str, stored: Any) -> bool:
    if name == "feedback":
        return stored in FEEDBACK_FILTERS.get(chosen, frozenset())
    return bool(stored == chosen)


def as_utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; every timestamp the service stores is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class Escalation:
    """Who an escalation goes to: a named user (``user_id``) or everybody in ``role``."""

    user_id: int | None = None
    role: str | None = None


@dataclass(frozen=True)
class QueueFilter:
    """What the pharmacist narrowed the queue to (``None``: any)."""

    indicator: str | None = None
    category: str | None = None
    rule: str | None = None
    pack: str | None = None
    pack_version: str | None = None
    review_status: str | None = None
    source: str | None = None
    feedback: str | None = None  # a FEEDBACK_FILTERS key
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    patient: str | None = None  # a patient id, an MRN or (part of) a name
    run_id: str | None = None  # one sweep run
    hide_data_quality: bool | None = None
    escalated_to: Escalation | None = None  # "escalated to me": the user and their role

    def facet_value(self, name: str) -> str | None:
        value: str | None = getattr(self, name)
        return value

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))


def _literal_refs(patient: str) -> list[str]:
    """``123`` matches ``Patient/123`` as well as a bare ``123`` (stored as the audit
    stores them: long ones bounded with a hash)."""
    from cds.store.audit import bounded_ref

    patient = patient.strip()
    refs = [patient] if "/" in patient else [patient, f"Patient/{patient}"]
    return [bounded_ref(r) or r for r in refs]


def _like(term: str) -> str:
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


MAX_PATIENT_MATCHES = 200


def patient_refs(*, session: Session, text: str) -> list[str]:
    """The patients a search names: their id (``123`` or ``Patient/123``) or their MRN
    (exactly); when neither finds anyone, every word of their name (in any order, ignoring
    case and accents). Names and MRNs are the ones the calls' data gave (cards keep them)."""
    refs = _literal_refs(text)
    known = set(
        session.scalars(select(Card.patient_ref).where(Card.patient_ref.in_(refs)).limit(2))
    )
    found = set(
        session.scalars(
            select(Card.patient_ref)
            .where(Card.patient_mrn == text.strip())
            .distinct()
            .limit(MAX_PATIENT_MATCHES)
        )
    )
    words = (search_key(text) or "").replace(",", " ").split()
    if not known and not found and words and max(len(w) for w in words) >= 2:
        found = set(
            ref
            for _, ref in session.execute(
                # (name, patient) in the order of ``ix_cards_name``: a scan of that narrow
                # index; DISTINCT on the patient alone walked another index and read
                # every card row (0.5 s at 100,000 cards)
                select(Card.patient_name_key, Card.patient_ref)
                .where(*(Card.patient_name_key.like(_like(w), escape="\\") for w in words))
                .distinct()
                .limit(MAX_PATIENT_MATCHES)
            )
        )
    return refs + sorted(r for r in found if r and r not in refs)


@dataclass(frozen=True)
class _Scope:
    """A filter made SQL: the patients its search names, resolved once per request."""

    filter: QueueFilter
    refs: tuple[str, ...] | None


def _scope(session: Session, f: QueueFilter) -> _Scope:
    refs = tuple(patient_refs(session=session, text=f.patient)) if f.patient else None
    return _Scope(f, refs)


def _base_conditions(scope: _Scope) -> list[ColumnElement[bool]]:
    """Conditions that are not facets (a period, a patient, a run, an escalation)."""
    f = scope.filter
    conds: list[ColumnElement[bool]] = []
    if f.since is not None:  # in UTC: SQLite compares the stored text
        conds.append(Card.created_at >= as_utc(f.since))
    if f.until is not None:
        conds.append(Card.created_at < as_utc(f.until))
    if scope.refs is not None:
        conds.append(Card.patient_ref.in_(scope.refs) if scope.refs else false())
    if f.run_id:
        conds.append(Card.run_id == f.run_id)
    if f.hide_data_quality:
        conds.append(Card.category != DATA_QUALITY)
    if f.escalated_to is not None:
        who = []
        if f.escalated_to.user_id is not None:
            who.append(Card.escalated_to_user_id == f.escalated_to.user_id)
        if f.escalated_to.role is not None:
            who.append(
                and_(
                    Card.escalated_to_role == f.escalated_to.role,
                    Card.escalated_to_user_id.is_(None),
                )
            )
        conds += [Card.review_status == "escalated", or_(*who) if who else false()]
    return conds


def _conditions(
    scope: _Scope, *, steer: bool = False, by_patient: bool = False
) -> list[ColumnElement[bool]]:
    """SQL conditions for the scope's filter.

    ``steer``: with two or more menu filters, or a patient and a menu filter, compare
    ``column || ''`` so no menu-column index qualifies. Otherwise SQLite seeks one
    equality index (say review_status = 'unreviewed', three cards in four) and reads fat
    rows in date order until the other filters match: 250 ms at 100k cards for a rare
    combination. Steered, it walks the covering ``ix_cards_period`` in date order
    (about 20 ms at worst), or the patient's own index. PostgreSQL plans either form.
    """
    f = scope.filter
    chosen = [
        (name, column, f.facet_value(name))
        for name, column in _FACETS.items()
        if f.facet_value(name) is not None
    ]
    # ``by_patient``: the caller narrows to a few patients itself (their own index)
    steer = steer and (
        len(chosen) >= 2 or ((scope.refs is not None or by_patient) and bool(chosen))
    )
    conds = _base_conditions(scope)
    for name, column, value in chosen:
        target = column.concat("") if steer else column
        if name == "feedback":
            conds.append(target.in_(sorted(FEEDBACK_FILTERS.get(value or "", frozenset()))))
        else:
            conds.append(target == value)
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
    source: str
    run_id: str | None
    patient_name: str | None
    patient_mrn: str | None
    location: str | None
    prescriber_ref: str | None
    prescriber_name: str | None
    order_text: str | None
    problem_id: str | None
    accepted_n: int
    overridden_n: int
    feedback_state: str
    override_reason: str | None
    escalated_to_user_id: int | None
    escalated_to_role: str | None

    @property
    def is_repeat(self) -> bool:
        return self.problem_id is not None and self.problem_id != self.id


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
    Card.source,
    Card.run_id,
    Card.patient_name,
    Card.patient_mrn,
    Card.location,
    Card.prescriber_ref,
    Card.prescriber_name,
    Card.order_text,
    Card.problem_id,
    Card.accepted_n,
    Card.overridden_n,
    Card.feedback_state,
    Card.override_reason,
    Card.escalated_to_user_id,
    Card.escalated_to_role,
)


def _row(r: Any) -> QueueRow:
    values = list(r)
    values[1] = as_utc(values[1])
    values[22] = int(values[22] or 0)  # accepted_n
    values[23] = int(values[23] or 0)  # overridden_n
    return QueueRow(*values)


def _key() -> Any:
    return tuple_(Card.created_at, Card.id)


def _rows_by_id(conn: Any, keys: Sequence[str]) -> dict[str, QueueRow]:
    if not keys:
        return {}
    return {r[0]: _row(r) for r in conn.execute(select(*_ROW_COLUMNS).where(Card.id.in_(keys)))}


def queue_page(
    *,
    session: Session,
    filter: QueueFilter,
    limit: int = 50,
    before: Cursor | None = None,
    after: Cursor | None = None,
) -> QueuePage:
    """One page of every card (the audit view), newest first, after a cursor (keyset).

    Two steps: the page's keys from the narrowest index that can answer (see
    ``_conditions``), then the listed columns of just those cards by primary key.
    """
    conds = _conditions(_scope(session, filter), steer=True)
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
    by_id = _rows_by_id(conn, keys)
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


# --- the grouped queue: patient -> order -> problem ------------------------------------


def _status_of(statuses: Sequence[str]) -> str:
    """A problem's status from its firings': escalated beats unreviewed beats
    acknowledged; resolved only when every firing is."""
    for s in ("escalated", "unreviewed", "acknowledged"):
        if s in statuses:
            return s
    return "resolved"


@dataclass
class Problem:
    """One rule on one order: every firing that matches the filter, newest first."""

    rule: str
    category: str
    cards: list[QueueRow]

    @property
    def latest(self) -> QueueRow:
        return self.cards[0]

    @property
    def fired(self) -> int:
        return len(self.cards)

    @property
    def first_at(self) -> datetime:
        return self.cards[-1].created_at

    @property
    def indicator(self) -> str:
        return max((c.indicator for c in self.cards), key=lambda i: SEVERITY.get(i, 0))

    @property
    def status(self) -> str:
        return _status_of([c.review_status for c in self.cards])

    @property
    def unreviewed(self) -> int:
        return sum(1 for c in self.cards if c.review_status == "unreviewed")

    @property
    def open_cards(self) -> int:
        return sum(1 for c in self.cards if c.review_status != "resolved")

    @property
    def accepted(self) -> int:
        return sum(c.accepted_n for c in self.cards)

    @property
    def overridden(self) -> int:
        return sum(c.overridden_n for c in self.cards)

    @property
    def override_reason(self) -> str | None:
        return next((c.override_reason for c in self.cards if c.override_reason), None)

    @property
    def sort_key(self) -> tuple[int, int, int, float]:
        """Open before resolved, clinical before data quality, severe first, newest first."""
        return (
            self.status == "resolved",
            self.category == DATA_QUALITY,
            -SEVERITY.get(self.indicator, 0),
            -self.latest.created_at.timestamp(),
        )


@dataclass
class OrderGroup:
    order_id: str
    problems: list[Problem]

    @property
    def latest(self) -> QueueRow:
        return max((p.latest for p in self.problems), key=lambda r: (r.created_at, r.id))

    @property
    def order_text(self) -> str | None:
        return next((p.latest.order_text for p in self.problems if p.latest.order_text), None)

    @property
    def prescribers(self) -> list[tuple[str | None, str | None]]:
        """(name, userId) of who ordered it, newest first, each once."""
        seen: list[tuple[str | None, str | None]] = []
        for p in self.problems:
            for c in p.cards:
                who = (c.prescriber_name, c.prescriber_ref)
                if (who[0] or who[1]) and who not in seen:
                    seen.append(who)
        return seen[:3]

    @property
    def cards(self) -> int:
        return sum(p.fired for p in self.problems)


@dataclass
class PatientGroup:
    patient_ref: str | None
    orders: list[OrderGroup]
    open_problems: int = 0  # every problem of the patient not resolved, whatever the filter
    new_problems: int = 0  # of which with a firing nobody has reviewed

    def _latest_with(self, attr: str) -> str | None:
        rows = sorted(
            (p.latest for o in self.orders for p in o.problems),
            key=lambda r: (r.created_at, r.id),
            reverse=True,
        )
        return next((getattr(r, attr) for r in rows if getattr(r, attr)), None)

    @property
    def name(self) -> str | None:
        return self._latest_with("patient_name")

    @property
    def mrn(self) -> str | None:
        return self._latest_with("patient_mrn")

    @property
    def location(self) -> str | None:
        return self._latest_with("location")

    @property
    def problems(self) -> int:
        return sum(len(o.problems) for o in self.orders)

    @property
    def cards(self) -> int:
        return sum(o.cards for o in self.orders)

    @property
    def latest(self) -> QueueRow:
        return max((o.latest for o in self.orders), key=lambda r: (r.created_at, r.id))


@dataclass
class GroupedPage:
    patients: list[PatientGroup]
    older: Cursor | None  # pass as ``start`` for the next page (inclusive)
    truncated: bool = False  # a patient had more firings than one page shows


SCAN_CHUNK = 500
SCAN_CAP = 50_000  # cards walked looking for one page of patients
CARDS_PER_PAGE_CAP = 3000


def _page_patients(
    conn: Any, conds: list[ColumnElement[bool]], start: Cursor | None, want: int
) -> list[tuple[str | None, Cursor]]:
    """The first ``want`` patients, in order of their newest matching card at or before
    ``start``; a patient with a matching card after ``start`` was on an earlier page."""
    found: dict[str | None, Cursor] = {}
    excluded: set[str | None] = set()
    position = start
    inclusive = True
    scanned = 0
    while len(found) < want and scanned < SCAN_CAP:
        where = list(conds)
        if position is not None:
            pos = (position.created_at, position.id)
            where.append(_key() <= pos if inclusive else _key() < pos)
        rows = conn.execute(
            select(Card.patient_ref, Card.created_at, Card.id)
            .where(*where)
            .order_by(Card.created_at.desc(), Card.id.desc())
            .limit(SCAN_CHUNK)
        ).all()
        if not rows:
            break
        scanned += len(rows)
        fresh = []
        for ref, at, card_id in rows:
            if ref not in found and ref not in excluded:
                found[ref] = Cursor(as_utc(at), card_id)
                fresh.append(ref)
        if start is not None and fresh:
            later = _key() > (start.created_at, start.id)
            named = [r for r in fresh if r is not None]
            seen_before = set(
                conn.execute(
                    select(Card.patient_ref)
                    .where(*conds, later, Card.patient_ref.in_(named))
                    .distinct()
                ).scalars()
            )
            if (
                None in fresh
                and conn.execute(
                    select(Card.id).where(*conds, later, Card.patient_ref.is_(None)).limit(1)
                ).first()
            ):
                seen_before.add(None)
            for ref in seen_before:
                excluded.add(ref)
                found.pop(ref, None)
        last = rows[-1]
        position, inclusive = Cursor(as_utc(last[1]), last[2]), False
        if len(rows) < SCAN_CHUNK:
            break
    return list(found.items())[:want]


def grouped_page(
    *, session: Session, filter: QueueFilter, patients: int = 20, start: Cursor | None = None
) -> GroupedPage:
    """A page of the queue as a pharmacist works it: ``patients`` patients, newest
    activity first, each with their orders and each order's problems (repeats collapsed).

    Three reads: walk the matching cards' keys in date order to find the page's patients
    (narrow index entries), fetch those patients' matching cards (their own index), and
    count their open problems whatever the filter (``ix_cards_patient_order_rule``).
    """
    scope = _scope(session, filter)
    conds = _conditions(scope, steer=True)
    conn = session.connection()
    picked = _page_patients(conn, conds, start, patients + 1)
    older = picked[patients][1] if len(picked) > patients else None
    refs = [ref for ref, _ in picked[:patients]]
    if not refs:
        return GroupedPage(patients=[], older=None)
    named = [r for r in refs if r is not None]
    who = [Card.patient_ref.in_(named)] if named else []
    if None in refs:
        who.append(Card.patient_ref.is_(None))
    keys = [
        k
        for (k,) in conn.execute(
            select(Card.id)
            .where(*_conditions(scope, steer=True, by_patient=True), or_(*who))
            .order_by(Card.created_at.desc(), Card.id.desc())
            .limit(CARDS_PER_PAGE_CAP + 1)
        )
    ]
    truncated = len(keys) > CARDS_PER_PAGE_CAP
    by_id = _rows_by_id(conn, keys[:CARDS_PER_PAGE_CAP])
    rows = sorted(by_id.values(), key=lambda r: (r.created_at, r.id), reverse=True)
    # patient -> order -> rule -> firings (newest first)
    tree: dict[str | None, dict[str, dict[str, list[QueueRow]]]] = {r: {} for r in refs}
    for row in rows:
        orders = tree.setdefault(row.patient_ref, {})
        orders.setdefault(row.order_id, {}).setdefault(row.rule, []).append(row)
    counts = _open_problem_counts(conn, named)
    groups = []
    for ref in refs:
        order_groups = [
            OrderGroup(
                order_id=order_id,
                problems=sorted(
                    (Problem(rule, cards[0].category, cards) for rule, cards in rules.items()),
                    key=lambda p: p.sort_key,
                ),
            )
            for order_id, rules in tree.get(ref, {}).items()
        ]
        if not order_groups:
            continue
        order_groups.sort(key=lambda o: (o.latest.created_at, o.latest.id), reverse=True)
        open_n, new_n = counts.get(ref, (0, 0))
        groups.append(PatientGroup(ref, order_groups, open_problems=open_n, new_problems=new_n))
    return GroupedPage(patients=groups, older=older, truncated=truncated)


def _open_problem_counts(conn: Any, refs: list[str]) -> dict[str | None, tuple[int, int]]:
    """patient -> (open problems, problems with an unreviewed firing), every card counted."""
    if not refs:
        return {}
    statuses: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for ref, order_id, rule, status in conn.execute(
        select(Card.patient_ref, Card.order_id, Card.primary_rule, Card.review_status)
        .where(Card.patient_ref.in_(refs))
        .distinct()
    ):
        statuses[(ref, order_id, rule)].add(status)
    out: dict[str | None, list[int]] = defaultdict(lambda: [0, 0])
    for (ref, _, _), seen in statuses.items():
        if seen - {"resolved"}:
            out[ref][0] += 1
        if "unreviewed" in seen:
            out[ref][1] += 1
    return {k: (v[0], v[1]) for k, v in out.items()}


# --- counts for the filter bar ---------------------------------------------------------


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
        .where(*_base_conditions(_scope(session, filter)))
        .group_by(*_FACETS.values())
    )
    combos = [(tuple(r[:-1]), int(r[-1])) for r in session.execute(stmt)]
    chosen = [filter.facet_value(n) for n in names]
    per: dict[str, dict[str, int]] = {n: defaultdict(int) for n in names}
    total = 0
    critical_unreviewed = 0
    i_ind, i_status = names.index("indicator"), names.index("review_status")
    i_feedback = names.index("feedback")
    for values, count in combos:
        misses = [
            i
            for i, want in enumerate(chosen)
            if want is not None and not _facet_matches(names[i], want, values[i])
        ]
        if not misses:
            total += count
        for i, name in enumerate(names):
            if misses and misses != [i]:
                continue
            if i == i_feedback:
                for value, states in FEEDBACK_FILTERS.items():
                    if values[i] in states:
                        per[name][value] += count
            else:
                per[name][values[i]] += count
        if values[i_ind] == "critical" and values[i_status] == "unreviewed":
            critical_unreviewed += count
    ordered = {n: sorted(per[n].items(), key=lambda kv: (-kv[1], kv[0])) for n in names}
    return Facets(total=total, counts=ordered, critical_unreviewed=critical_unreviewed)


def escalated_count(*, session: Session, to: Escalation) -> int:
    """Cards escalated to this user, or to their role without a named user."""
    f = QueueFilter(escalated_to=to)
    return int(session.scalar(select(func.count()).where(*_base_conditions(_Scope(f, None)))) or 0)


# --- one alert -------------------------------------------------------------------------


@dataclass
class CardDetail:
    """Everything the alert page shows, loaded while the session is open."""

    card: Card
    invocation: Invocation | None
    rules: list[CardRule]
    feedback: list[Feedback]
    reviews: list[tuple[Review, str]]  # (review, reviewer username)
    firings: list[QueueRow] = field(default_factory=list)  # the problem's, newest first
    users: dict[int, str] = field(default_factory=dict)  # id -> username (escalations)

    @property
    def open_firings(self) -> int:
        return sum(1 for r in self.firings if r.review_status != "resolved")


MAX_FIRINGS_SHOWN = 200


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
    conn = session.connection()
    keys = [
        k
        for (k,) in conn.execute(
            select(Card.id)
            .where(*_problem_of(card))
            .order_by(Card.created_at.desc(), Card.id.desc())
            .limit(MAX_FIRINGS_SHOWN)
        )
    ]
    by_id = _rows_by_id(conn, keys)
    return CardDetail(
        card=card,
        invocation=invocation,
        rules=rules,
        feedback=feedback,
        reviews=reviews,
        firings=[by_id[k] for k in keys if k in by_id],
        users=user_names(session=session),
    )


def _problem_of(card: Card) -> list[ColumnElement[bool]]:
    same_patient = (
        Card.patient_ref == card.patient_ref
        if card.patient_ref is not None
        else Card.patient_ref.is_(None)
    )
    return [same_patient, Card.order_id == card.order_id, Card.primary_rule == card.primary_rule]


def user_names(*, session: Session) -> dict[int, str]:
    return {i: n for i, n in session.execute(select(User.id, User.username))}


# --- export ----------------------------------------------------------------------------

EXPORT_COLUMNS = (
    "card_id",
    "created_at",
    "created_at_local",
    "indicator",
    "category",
    "rule",
    "pack_id",
    "pack_version",
    "source",
    "run_id",
    "patient",
    "patient_name",
    "patient_mrn",
    "location",
    "order_id",
    "drug_and_dose",
    "prescriber",
    "prescriber_id",
    "hook",
    "summary",
    "repeat_of",
    "feedback_outcome",
    "accepted_count",
    "overridden_count",
    "override_reason",
    "review_status",
    "escalated_to",
    "reviewer",
    "reviewed_at",
    "review_note",
)


@dataclass(frozen=True)
class LastReview:
    reviewer: str
    at: datetime
    note: str | None  # the latest note on the card (from any action)


@dataclass
class ExportBatch:
    rows: list[QueueRow]
    reviews: dict[str, LastReview]
    users: dict[int, str]


def _last_reviews(conn: Any, ids: Sequence[str]) -> dict[str, LastReview]:
    out: dict[str, LastReview] = {}
    notes: dict[str, str] = {}
    for i in range(0, len(ids), 500):
        for card_id, note, name, at in conn.execute(
            select(Review.card_id, Review.note, User.username, Review.created_at)
            .join(User, User.id == Review.reviewer_id)
            .where(Review.card_id.in_(ids[i : i + 500]))
            .order_by(Review.card_id, Review.created_at, Review.id)
        ):
            if note:
                notes[card_id] = note
            out[card_id] = LastReview(name, as_utc(at), None)
    return {k: replace(v, note=notes.get(k)) for k, v in out.items()}


def iter_export(
    *, maker: sessionmaker[Session], filter: QueueFilter, batch: int = 5000
) -> Iterator[ExportBatch]:
    """Every card the filter matches, newest first, in batches (one short read each),
    with each card's latest reviewer and note.

    Short transactions on purpose: a slow download must not hold a read transaction (and
    with SQLite, the WAL) open for minutes; keyset paging keeps each batch as cheap as
    the first.
    """
    cursor: Cursor | None = None
    with maker() as s:
        users = user_names(session=s)
    while True:
        with maker() as s:
            page = queue_page(session=s, filter=filter, limit=batch, before=cursor)
            reviewed = [r.id for r in page.rows]
            reviews = _last_reviews(s.connection(), reviewed) if reviewed else {}
        if page.rows:
            yield ExportBatch(page.rows, reviews, users)
        if page.older is None:
            return
        cursor = page.older


def known_values(*, session: Session) -> dict[str, list[str]]:
    """Distinct categories, rules, packs and versions (filter choices with nothing chosen)."""
    out: dict[str, list[str]] = {}
    for name in ("category", "rule", "pack", "pack_version"):
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


_REVIEWS: frozenset[str] = frozenset(
    {
        "Assignee",
        "Group",
        "ReviewError",
        "add_review",
        "escalation_choices",
        "group_review",
        "parse_escalation",
    }
)


def __getattr__(name: str) -> Any:
    """The review actions live in ``cds.store.reviews`` (which reads this module's
    filters); ``console.add_review`` and friends still resolve, without an import cycle."""
    if name in _REVIEWS:
        from cds.store import reviews

        return getattr(reviews, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Dashboard",
    "Period",
    "RuleStat",
    "dashboard",
    "ACTS_ON",
    "EXPORT_COLUMNS",
    "FEEDBACK_FILTERS",
    "INDICATORS",
    "NOTE_REQUIRED",
    "OPEN_STATUSES",
    "REVIEW_ACTIONS",
    "REVIEW_STATUSES",
    "SOURCES",
    "CardDetail",
    "Cursor",
    "Escalation",
    "ExportBatch",
    "Facets",
    "GroupedPage",
    "OrderGroup",
    "PatientGroup",
    "Problem",
    "QueueFilter",
    "QueuePage",
    "QueueRow",
    "card_detail",
    "escalated_count",
    "facet_counts",
    "grouped_page",
    "iter_export",
    "patient_refs",
    "queue_page",
    "user_names",
]
