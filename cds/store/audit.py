"""Writing the audit trail: invocations with their cards, rejected requests, feedback.

Keyword-only functions taking a ``Session``; callers own the transaction boundary
(``with sessionmaker.begin() as s``) so an invocation and its cards commit together.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, delete, func, insert, select, update
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from cds.errors import StoreUnavailable, UnstorableValue
from cds.store.models import Card, CardRule, Feedback, Invocation, RejectedRequest, hour_of

log = logging.getLogger("cds.store")
SEVERITY_RANK = {"info": 1, "warning": 2, "critical": 3}
#: Request ids (patient, user, encounter, order) are kept whole up to this many characters;
#: longer ones keep their start and a SHA-256 of the whole (see ``bounded_ref``).
REF_MAX = 512
_HASHED_TAIL = 72  # "…sha256:" + 64 hex digits
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def bounded_ref(value: str | None, limit: int = REF_MAX) -> str | None:
    """``value`` as stored: whole when it fits, else its start plus a hash of the whole.

    The same id always maps to the same stored text, so the console can still find it.
    """
    if value is None or len(value) <= limit:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return value[: limit - _HASHED_TAIL] + "…sha256:" + digest


def clean_text(text: str, limit: int) -> str:
    """Text safe for any database column: no control characters or surrogates, bounded."""
    return _UNPRINTABLE.sub("\ufffd", text)[:limit]


def _store_error(exc: Exception, what: str) -> Exception:
    """Data errors (a value the database refuses) are not outages: 422, not 503."""
    orig = getattr(exc, "orig", None)
    log.error(
        "%s failed: %s: %s",
        what,
        type(exc).__name__,
        str(orig)[:200].replace("\n", " ") if orig is not None else "",
    )
    if isinstance(exc, DataError | IntegrityError):
        return UnstorableValue(
            "a value in this request cannot be stored in the audit store (too long or not "
            "valid text); no cards are returned without their audit record"
        )
    return StoreUnavailable(
        "the audit store is unavailable; no cards are returned without their audit record"
    )


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
    order_text: str | None = None  # the order as received, in words (migration 0006)


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
    # patient_name, patient_mrn, location, prescriber_name as the call's data gave them
    # (``cds.hooks.context_capture``; migration 0006)
    context: dict[str, str] | None = None


def record_invocation(
    *, session: Session, invocation: InvocationRecord, cards: list[IssuedCard]
) -> None:
    """Insert the invocation and every card it issued (caller commits once)."""
    record_invocations(session=session, calls=[(invocation, cards)])


def record_invocations(
    *, session: Session, calls: list[tuple[InvocationRecord, list[IssuedCard]]]
) -> None:
    """Insert several invocations and their cards: three statements, whatever the count.

    Core ``insert`` on the tables with parameter lists, not ORM objects nor the ORM's bulk
    insert: this runs on every hook call, and the ORM's bookkeeping cost more than the SQL
    itself (measured: 0.6 of 1.3 ms per call on SQLite).
    """
    insert_calls(session.connection(), calls)


def insert_calls(conn: Connection, calls: list[tuple[InvocationRecord, list[IssuedCard]]]) -> None:
    """``record_invocations`` on a Core connection (the caller's transaction)."""
    inv_rows: list[dict[str, Any]] = []
    card_rows: list[dict[str, Any]] = []
    rule_rows: list[dict[str, Any]] = []
    seen: dict[tuple[str | None, str | None, str], str] = {}  # problems within the batch
    for invocation, cards in calls:
        inv_rows.append(_invocation_row(invocation, len(cards)))
        _card_rows(conn, invocation, cards, card_rows, rule_rows, seen)
    conn.execute(insert(cast(Table, Invocation.__table__)), inv_rows)
    if card_rows:
        conn.execute(insert(cast(Table, Card.__table__)), card_rows)
    if rule_rows:
        conn.execute(insert(cast(Table, CardRule.__table__)), rule_rows)


def _invocation_row(invocation: InvocationRecord, n_cards: int) -> dict[str, Any]:
    return {
        "id": invocation.id,
        "hook_instance": invocation.hook_instance,
        "service_id": invocation.service_id,
        "hook": invocation.hook,
        "patient_ref": bounded_ref(invocation.patient_ref),
        "user_ref": bounded_ref(invocation.user_ref),
        "encounter_ref": bounded_ref(invocation.encounter_ref),
        "issuer": invocation.issuer,
        "tenant": invocation.tenant,
        "received_at": invocation.received_at,
        "evaluated_at": invocation.evaluated_at,
        "duration_ms": invocation.duration_ms,
        "timings": invocation.timings,
        "status": "ok",
        "pack_id": invocation.pack_id,
        "pack_version": invocation.pack_version,
        "card_count": n_cards,
        "fetched_keys": invocation.fetched_keys,
        "data_issues": invocation.data_issues or None,
        "source": invocation.source,
        "run_id": invocation.run_id,
        "context": invocation.context or None,
    }


def _card_rows(
    conn: Connection,
    invocation: InvocationRecord,
    cards: list[IssuedCard],
    card_rows: list[dict[str, Any]],
    rule_rows: list[dict[str, Any]],
    seen: dict[tuple[str | None, str | None, str], str],
) -> None:
    if not cards:
        return
    patient_ref = bounded_ref(invocation.patient_ref)
    ctx = invocation.context or {}
    name = ctx.get("patient_name")
    problems = _problems(conn, patient_ref, cards)
    for (p, order, rule), first in seen.items():  # an earlier call of the same batch
        if p == patient_ref:
            problems.setdefault((order, rule), first)
    for c in cards:
        problem = problems.get((bounded_ref(c.order_id), c.primary_rule))
        top = max(SEVERITY_RANK[s] for _, s in c.rules) if c.rules else 1
        card_rows.append(
            {
                "id": c.card["uuid"],
                "invocation_id": invocation.id,
                "created_at": invocation.received_at,
                "service_id": invocation.service_id,
                "hook": invocation.hook,
                "patient_ref": bounded_ref(invocation.patient_ref),
                "order_id": bounded_ref(c.order_id),
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
                "patient_name": name,
                "patient_name_key": search_key(name),
                "patient_mrn": ctx.get("patient_mrn"),
                "location": ctx.get("location"),
                "prescriber_ref": bounded_ref(invocation.user_ref),
                "prescriber_name": ctx.get("prescriber_name"),
                "order_text": _order_text(c),
                "problem_id": problem or c.card["uuid"],
                "is_repeat": 1 if problem else 0,
                "accepted_n": 0,
                "overridden_n": 0,
                "feedback_state": "none",
                "created_hour": hour_of(invocation.received_at),
            }
        )
        problems.setdefault((bounded_ref(c.order_id), c.primary_rule), c.card["uuid"])
        seen.setdefault(
            (patient_ref, bounded_ref(c.order_id), c.primary_rule),
            problems[(bounded_ref(c.order_id), c.primary_rule)],
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


def search_key(name: str | None) -> str | None:
    """A patient name as the console searches it: casefolded, accents and spacing kept out."""
    if not name:
        return None
    flat = unicodedata.normalize("NFKD", name)
    flat = "".join(ch for ch in flat if not unicodedata.combining(ch))
    return " ".join(flat.casefold().split())[:256] or None


def _order_text(c: IssuedCard) -> str | None:
    text = c.order_text or (c.facts or {}).get("order_text")
    return clean_text(text, 512) if isinstance(text, str) and text else None


def _problems(
    session: Session | Connection, patient_ref: str | None, cards: list[IssuedCard]
) -> dict[tuple[str | None, str], str]:
    """(order, rule) -> the problem an earlier card of this patient opened, if any.

    Every card of one (patient, order, rule) carries the same ``problem_id`` (the first
    card's id), so one index entry answers: ``MIN(problem_id)`` on the last column of
    ``ix_cards_patient_order_rule`` is a seek, one per pair, all in one statement. Reading
    every earlier card of the order instead cost time linear in the patient's history (a
    chart evaluated thousands of times made each audit write ~10 ms of CPU).
    """
    if patient_ref is None:
        return {}
    pairs = sorted(
        {(ref, c.primary_rule) for c in cards if (ref := bounded_ref(c.order_id)) is not None}
    )
    if not pairs:
        return {}
    firsts = [
        select(func.min(Card.problem_id))
        .where(
            Card.patient_ref == patient_ref,
            Card.order_id == order_id,
            Card.primary_rule == rule,
        )
        .scalar_subquery()
        for order_id, rule in pairs
    ]
    row = session.execute(select(*firsts)).one()
    return {pair: first for pair, first in zip(pairs, row, strict=True) if first is not None}


def record_rejection(
    *,
    maker: sessionmaker[Session],
    received_at: datetime,
    path: str,
    status: int,
    reason: str,
    hook_instance: str | None,
) -> int | None:
    """Best effort: a rejection that cannot be stored must not turn a 4xx into a 5xx.

    Returns the row id (None if it could not be written).
    """
    try:
        with maker.begin() as s:
            row = RejectedRequest(
                received_at=received_at,
                path=clean_text(path, 256),
                status=status,
                reason=clean_text(reason, 512),
                hook_instance=clean_text(hook_instance, 64) if hook_instance else None,
                count=1,
                last_at=received_at,
            )
            s.add(row)
            s.flush()
            return int(row.id)
    except Exception:  # noqa: BLE001 - the caller's response matters more than this row
        return None


@dataclass
class _Window:
    row_id: int | None
    opened: float
    pending: int = 0
    flushed: float = 0.0
    last_at: datetime | None = None


class RejectionLog:
    """Rejected calls into ``rejected_requests``, without a flood writing a row each.

    Every rejection is counted; identical *aggregatable* ones (anonymous 401s: same path,
    status and reason) within ``aggregate_seconds`` share one row whose ``count`` grows,
    written at most once a second. Rows older than ``retention_days`` are deleted (checked
    at most hourly). Measured before: 723 rows/s from anonymous 401s, kept forever.
    """

    def __init__(
        self,
        maker: sessionmaker[Session],
        *,
        aggregate_seconds: float = 60.0,
        retention_days: int = 90,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._maker = maker
        self._window = aggregate_seconds
        self._retention = timedelta(days=retention_days)
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, int, str], _Window] = {}
        self._purged_at: float | None = None

    def record(
        self,
        *,
        received_at: datetime,
        path: str,
        status: int,
        reason: str,
        hook_instance: str | None,
        aggregate: bool = False,
    ) -> None:
        self._maybe_purge(received_at)
        if not aggregate or self._window <= 0:
            record_rejection(
                maker=self._maker,
                received_at=received_at,
                path=path,
                status=status,
                reason=reason,
                hook_instance=hook_instance,
            )
            return
        key = (path[:256], status, reason[:512])
        now = self._clock()
        if self.absorb(path=path, status=status, reason=reason):
            return
        expired: _Window | None = None
        flush: tuple[int, int, datetime] | None = None
        with self._lock:
            win = self._windows.get(key)
            if win is not None and now - win.opened < self._window:
                win.pending += 1
                win.last_at = received_at
                if win.row_id is None or now - win.flushed < 1.0:
                    return
                flush = (win.row_id, win.pending, received_at)
                win.pending, win.flushed = 0, now
            else:
                expired = win
                win = _Window(row_id=None, opened=now, flushed=now)
                self._windows[key] = win
                if len(self._windows) > 1000:  # bounded: forget the oldest windows
                    for k in sorted(self._windows, key=lambda k: self._windows[k].opened)[:500]:
                        if k != key:
                            self._windows.pop(k, None)
        if flush is not None:
            self._add(*flush)
            return
        if expired is not None and expired.pending and expired.row_id is not None:
            self._add(expired.row_id, expired.pending, expired.last_at or received_at)
        win.row_id = record_rejection(
            maker=self._maker,
            received_at=received_at,
            path=path,
            status=status,
            reason=reason,
            hook_instance=hook_instance,
        )

    def absorb(self, *, path: str, status: int, reason: str) -> bool:
        """Count an aggregatable rejection in memory if no database write is due (True),
        so the caller needs no thread and no connection for it."""
        if self._window <= 0:
            return False
        key = (path[:256], status, reason[:512])
        now = self._clock()
        with self._lock:
            win = self._windows.get(key)
            if (
                win is None
                or now - win.opened >= self._window
                or (win.row_id is not None and now - win.flushed >= 1.0)
            ):
                return False
            win.pending += 1
            return True

    def _add(self, row_id: int, count: int, last_at: datetime) -> None:
        try:
            with self._maker.begin() as s:
                s.execute(
                    update(RejectedRequest)
                    .where(RejectedRequest.id == row_id)
                    .values(count=RejectedRequest.count + count, last_at=last_at)
                )
        except Exception:  # noqa: BLE001 - best effort, as record_rejection
            pass

    def flush(self) -> None:
        """Write every pending count (at shutdown)."""
        with self._lock:
            pending = [
                (w.row_id, w.pending, w.last_at)
                for w in self._windows.values()
                if w.pending and w.row_id is not None
            ]
            for w in self._windows.values():
                w.pending = 0
        for row_id, count, last_at in pending:
            assert row_id is not None
            self._add(row_id, count, last_at or datetime.now().astimezone())

    def _maybe_purge(self, now: datetime) -> None:
        mono = self._clock()
        with self._lock:
            if self._purged_at is not None and mono - self._purged_at < 3600:
                return
            self._purged_at = mono
        purge_rejections(maker=self._maker, before=now - self._retention)


def purge_rejections(*, maker: sessionmaker[Session], before: datetime) -> int:
    """Delete rejection rows received before ``before``; returns how many."""
    try:
        with maker.begin() as s:
            result = s.execute(delete(RejectedRequest).where(RejectedRequest.received_at < before))
            return int(getattr(result, "rowcount", 0) or 0)
    except Exception:  # noqa: BLE001 - retention must never fail a request
        log.warning("could not purge old rejection rows")
        return 0


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
    """Stable identity of a feedback item: the same item sent twice is stored once.

    v2 (migration 0003 rewrote the stored keys): the override's system, display and
    comment are part of the item, so an item re-sent with a new ``userComment`` is kept.
    """
    raw = json.dumps(
        [
            "v2",
            service_id,
            item.card_id,
            item.outcome,
            sorted(item.accepted_suggestions),
            item.override_code,
            item.override_system,
            item.override_display,
            item.override_comment,
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
    issuer: str | None = None  # who the card was issued to (verified iss, configured tenant)
    tenant: str | None = None
    feedback_count: int = 0


def cards_for_feedback(*, maker: sessionmaker[Session], card_ids: list[str]) -> dict[str, CardRef]:
    """card id -> its service, suggestion uuids, recipient and feedback so far."""
    ids = {c for c in card_ids if 0 < len(c) <= 64}
    if not ids:
        return {}
    with maker() as s:
        counts = dict(
            s.execute(
                select(Feedback.card_id, func.count())
                .where(Feedback.card_id.in_(ids))
                .group_by(Feedback.card_id)
            ).all()
        )
        rows = s.execute(
            select(
                Card.id,
                Card.service_id,
                Card.card_json,
                Invocation.issuer,
                Invocation.tenant,
            )
            .join(Invocation, Invocation.id == Card.invocation_id)
            .where(Card.id.in_(ids))
        )
        return {
            r[0]: CardRef(
                r[1],
                frozenset(str(x.get("uuid")) for x in (r[2] or {}).get("suggestions", [])),
                issuer=r[3],
                tenant=r[4],
                feedback_count=int(counts.get(r[0], 0)),
            )
            for r in rows
        }


FEEDBACK_CHUNK = 20  # items per transaction: the SQLite write lock is held for one chunk


def _chunks(items: list[FeedbackItem], size: int) -> Iterator[list[FeedbackItem]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def store_feedback(
    *,
    maker: sessionmaker[Session],
    service_id: str,
    items: list[FeedbackItem],
    received_at: datetime,
    issuer: str | None = None,
    tenant: str | None = None,
) -> list[bool]:
    """Store each item idempotently; returns, per item, whether it was new.

    Small transactions (``FEEDBACK_CHUNK`` items each, the write lock released between
    them) with a savepoint per item, so a duplicate (unique key) is skipped without losing
    the others, and a big batch never holds the SQLite write lock long enough to stall the
    hook calls (40,000 items held it 23 s). Every item is durable when this returns. The
    card's ``feedback_outcome`` is the outcome with the latest ``outcomeTimestamp`` (ties:
    the later arrival), whatever order the items arrive in.
    """
    from cds.store.db import write_lock

    created: list[bool] = []
    for chunk in _chunks(items, FEEDBACK_CHUNK):
        touched: set[str] = set()
        with write_lock(maker), maker.begin() as s:
            for item in chunk:
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
                                issuer=issuer,
                                tenant=tenant,
                            )
                        )
                        s.flush()
                    created.append(True)
                    touched.add(item.card_id)
                except IntegrityError:  # a concurrent duplicate won the race
                    created.append(False)
            for card_id in touched:
                s.execute(
                    update(Card).where(Card.id == card_id).values(**feedback_summary(s, card_id))
                )
    return created


def override_words(card_json: dict[str, Any] | None, code: str | None, display: str | None) -> str:
    """An override reason in the words the card offered the prescriber (its
    ``overrideReasons`` displays, from the pack), else the words the EHR sent, else the
    code."""
    for r in (card_json or {}).get("overrideReasons") or []:
        if isinstance(r, dict) and code is not None and r.get("code") == code and r.get("display"):
            return str(r["display"])[:256]
    return (display or code or "(no reason given)")[:256]


def feedback_summary(s: Session, card_id: str) -> dict[str, Any]:
    """What a card's row keeps of its feedback (migration 0006), so the queue and the
    dashboard never read the feedback table: every event counted, the state they add up
    to, the latest outcome (by ``outcomeTimestamp``, ties: the later arrival) and the
    latest override reason in the words offered."""
    rows = s.execute(
        select(Feedback.outcome, Feedback.override_code, Feedback.override_display)
        .where(Feedback.card_id == card_id)
        .order_by(Feedback.outcome_timestamp, Feedback.id)
    ).all()
    accepted = sum(1 for r in rows if r.outcome == "accepted")
    overridden = len(rows) - accepted
    state = {(False, False): "none", (True, False): "accepted", (False, True): "overridden"}
    reason = None
    overrides = [r for r in rows if r.outcome == "overridden"]
    if overrides:
        card_json = s.execute(select(Card.card_json).where(Card.id == card_id)).scalar()
        reason = override_words(
            card_json, overrides[-1].override_code, overrides[-1].override_display
        )
    return {
        "feedback_outcome": rows[-1].outcome if rows else None,
        "accepted_n": accepted,
        "overridden_n": overridden,
        "feedback_state": state.get((accepted > 0, overridden > 0), "both"),
        "override_reason": reason,
    }


def save_invocation(
    *, maker: sessionmaker[Session], invocation: InvocationRecord, cards: list[IssuedCard]
) -> None:
    """Commit the invocation and its cards in one transaction.

    Raises ``StoreUnavailable`` (503) when the database cannot be used, and
    ``UnstorableValue`` (422) when it refuses a value: a data error is never an outage.
    """
    from cds.store.db import write_lock

    try:
        with write_lock(maker), maker.begin() as s:
            record_invocation(session=s, invocation=invocation, cards=cards)
    except (OperationalError, DBAPIError) as exc:
        raise _store_error(exc, "audit write") from exc


@dataclass
class _Pending:
    invocation: InvocationRecord
    cards: list[IssuedCard]
    done: bool = False
    error: BaseException | None = None


class AuditWriter:
    """Group commit of the hook calls' audit records.

    The guarantee is ``save_invocation``'s: ``save`` returns only once the transaction
    holding the call's rows has committed, and raises as it does (503 when the store is
    down, 422 for a value it refuses); nothing is answered that is not stored. What
    changes is who writes: the first waiting call writes, in one transaction, every record
    that is waiting (at most ``max_batch``); the calls that arrived during its commit find
    their rows committed or write the next batch. One call alone writes its own row at
    once, with no hand-off; under load one commit and three statements serve many calls.

    A batch the database refuses for a value (``DataError``, ``IntegrityError``) is
    written again one call per transaction, so only the call that holds the bad value
    fails. An outage fails the whole batch (each call gets its own 503).
    """

    def __init__(self, maker: sessionmaker[Session], *, max_batch: int = 64) -> None:
        self._maker = maker
        self._max = max_batch
        self._write = threading.Lock()  # one writer at a time (the leader)
        self._queue_lock = threading.Lock()
        self._queue: list[_Pending] = []
        self.batches = 0  # commits made (a call count / batches ratio for the benchmarks)

    def save(self, *, invocation: InvocationRecord, cards: list[IssuedCard]) -> None:
        me = _Pending(invocation, cards)
        with self._queue_lock:
            self._queue.append(me)
        while not me.done:
            with self._write:
                if me.done:  # a leader wrote it while this call waited for the lock
                    break
                with self._queue_lock:
                    batch = self._queue[: self._max]
                    del self._queue[: len(batch)]
                self._commit(batch)
        if me.error is not None:
            raise me.error

    def _commit(self, batch: list[_Pending]) -> None:
        from cds.store.db import write_lock

        calls = [(p.invocation, p.cards) for p in batch]
        bind = self._maker.kw.get("bind")
        try:
            if isinstance(bind, Engine):  # a Core transaction: no Session to build (0.3 ms)
                with write_lock(self._maker), bind.begin() as conn:
                    insert_calls(conn, calls)
            else:
                with write_lock(self._maker), self._maker.begin() as s:
                    record_invocations(session=s, calls=calls)
            self.batches += 1
        except (DataError, IntegrityError) as exc:
            if len(batch) == 1:
                batch[0].error = _store_error(exc, "audit write")
            else:
                for p in batch:  # find the call that holds the value
                    try:
                        save_invocation(maker=self._maker, invocation=p.invocation, cards=p.cards)
                        self.batches += 1
                    except Exception as one:  # noqa: BLE001 - handed to its own call
                        p.error = one
        except (OperationalError, DBAPIError) as exc:
            first = _store_error(exc, "audit write")
            for p in batch:
                p.error = type(first)(*first.args)
                p.error.__cause__ = exc
        except BaseException as exc:  # noqa: BLE001 - every waiting call hears of it
            for p in batch:
                p.error = exc
        finally:
            for p in batch:
                p.done = True


def guarded(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a store call: database outages become StoreUnavailable (503), values the
    database refuses UnstorableValue (422)."""
    try:
        return fn(*args, **kwargs)
    except (OperationalError, DBAPIError) as exc:
        raise _store_error(exc, getattr(fn, "__name__", "store call")) from exc
