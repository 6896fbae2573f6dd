"""SQLAlchemy 2 typed models. Alembic migrations in ``alembic/`` are the only way the
schema changes; a test fails if these models and the migrations drift apart."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Invocation(Base):
    """One hook call that produced a response (cards or none)."""

    __tablename__ = "invocations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    hook_instance: Mapped[str] = mapped_column(String(64), index=True)
    service_id: Mapped[str] = mapped_column(String(64))
    hook: Mapped[str] = mapped_column(String(32))
    # Request ids are stored whole up to REF_MAX characters (an absolute URL is a normal
    # userId), longer ones bounded with a hash (``cds.store.audit.bounded_ref``).
    patient_ref: Mapped[str | None] = mapped_column(String(512))
    user_ref: Mapped[str | None] = mapped_column(String(512))
    encounter_ref: Mapped[str | None] = mapped_column(String(512))
    issuer: Mapped[str | None] = mapped_column(String(256))
    tenant: Mapped[str | None] = mapped_column(String(128))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    evaluated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[float] = mapped_column(Float)
    timings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16))  # ok
    pack_id: Mapped[str | None] = mapped_column(String(64))
    pack_version: Mapped[str | None] = mapped_column(String(32))
    card_count: Mapped[int] = mapped_column(Integer, default=0)
    fetched_keys: Mapped[list[str]] = mapped_column(JSON, default=list)
    # What the service could not use in the request (a malformed field, an implausible
    # weight): kept for the pharmacist console; only problems that stop a check are cards.
    data_issues: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    # Migration 0004: "hook" (an EHR called) or "sweep" (``cds sweep``; ``run_id`` names
    # the run, a ``sweep_runs`` row).
    source: Mapped[str] = mapped_column(String(8), default="hook", server_default="hook")
    run_id: Mapped[str | None] = mapped_column(String(36), index=True)
    # Migration 0006: who and where the call was about, as its prefetch showed them at the
    # time (patient name and MRN, ward, prescriber; ``cds.hooks.context_capture``). The
    # audit of what the service saw: never fetched or refreshed afterwards.
    context: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    cards: Mapped[list[Card]] = relationship(back_populates="invocation")


def hour_of(when: datetime) -> int:
    """Whole hours since 1970-01-01 UTC (an aware time; a naive one is taken as UTC)."""
    seconds = when.timestamp() if when.tzinfo else when.replace(tzinfo=UTC).timestamp()
    return int(seconds // 3600)


def _hour_of_row(context: Any) -> int | None:
    when = context.get_current_parameters().get("created_at")
    return hour_of(when) if isinstance(when, datetime) else None


class Card(Base):
    """A card as issued, with the facts and rules behind it."""

    __tablename__ = "cards"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the card uuid
    invocation_id: Mapped[str] = mapped_column(ForeignKey("invocations.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    service_id: Mapped[str] = mapped_column(String(64))
    hook: Mapped[str] = mapped_column(String(32))
    patient_ref: Mapped[str | None] = mapped_column(String(512))
    order_id: Mapped[str] = mapped_column(String(512))
    category: Mapped[str] = mapped_column(String(32))
    indicator: Mapped[str] = mapped_column(String(16))
    severity_rank: Mapped[int] = mapped_column(Integer)  # info 1, warning 2, critical 3
    summary: Mapped[str] = mapped_column(String(200))
    primary_rule: Mapped[str] = mapped_column(String(128))
    pack_id: Mapped[str] = mapped_column(String(64))
    pack_version: Mapped[str] = mapped_column(String(32))
    facts: Mapped[dict[str, Any]] = mapped_column(JSON)
    card_json: Mapped[dict[str, Any]] = mapped_column(JSON)
    review_status: Mapped[str] = mapped_column(String(16), default="unreviewed")
    feedback_outcome: Mapped[str | None] = mapped_column(String(16))
    # Migration 0004: copied from the invocation like ``hook`` and ``patient_ref``, so the
    # console can filter on them without a join.
    source: Mapped[str] = mapped_column(String(8), default="hook", server_default="hook")
    run_id: Mapped[str | None] = mapped_column(String(36))
    # Migration 0006, for the review console (copied or derived at write time so the
    # queue, its search and the dashboard read narrow index entries, never the JSON):
    # - what the call's prefetch said about the patient, ward and prescriber;
    patient_name: Mapped[str | None] = mapped_column(String(256))
    patient_name_key: Mapped[str | None] = mapped_column(String(256))  # casefolded, search
    patient_mrn: Mapped[str | None] = mapped_column(String(128))
    location: Mapped[str | None] = mapped_column(String(256))
    prescriber_ref: Mapped[str | None] = mapped_column(String(512))  # context.userId
    prescriber_name: Mapped[str | None] = mapped_column(String(256))
    order_text: Mapped[str | None] = mapped_column(String(512))  # the order as received
    # - the problem: the first card of the same (patient, order, rule); itself when first;
    problem_id: Mapped[str | None] = mapped_column(String(36))
    is_repeat: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # 1: a repeat
    # - every feedback event counted, the latest override reason in the words offered;
    accepted_n: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    overridden_n: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    feedback_state: Mapped[str] = mapped_column(  # none | accepted | overridden | both
        String(12), default="none", server_default="none"
    )
    override_reason: Mapped[str | None] = mapped_column(String(256))
    # - minutes from issue to the first pharmacist review; who an escalation went to.
    review_minutes: Mapped[int | None] = mapped_column(Integer)
    escalated_to_user_id: Mapped[int | None] = mapped_column(Integer)
    escalated_to_role: Mapped[str | None] = mapped_column(String(16))
    # - the UTC hour it was issued in (hours since 1970), so the dashboard's time series
    #   groups in index order in any site time zone (no sort of every card).
    created_hour: Mapped[int | None] = mapped_column(Integer, default=_hour_of_row)

    invocation: Mapped[Invocation] = relationship(back_populates="cards")
    rules: Mapped[list[CardRule]] = relationship(back_populates="card")

    __table_args__ = (
        Index("ix_cards_created", "created_at"),
        Index("ix_cards_indicator_created", "indicator", "created_at"),
        Index("ix_cards_category_created", "category", "created_at"),
        Index("ix_cards_rule_created", "primary_rule", "created_at"),
        Index("ix_cards_review_created", "review_status", "created_at"),
        Index("ix_cards_patient_created", "patient_ref", "created_at"),
        Index("ix_cards_pack_created", "pack_version", "created_at"),
        # A patient's problems (migration 0006 extends the 0004 sweep deduplication
        # index): the sweep's open alerts, the problem of a new card, open problem counts.
        Index(
            "ix_cards_patient_order_rule",
            "patient_ref",
            "order_id",
            "primary_rule",
            "problem_id",
            "review_status",
            "created_at",
            "id",
        ),
        # Review console (migrations 0002, 0006): covering indexes so the counts, the
        # grouped queue and the dashboard read narrow index entries, never the card JSON
        # in the table rows; "stats" groups without a sort, "period" serves a bounded
        # date range and the queue's keyset walk.
        Index(
            "ix_cards_stats",
            "primary_rule",
            "category",
            "indicator",
            "pack_id",
            "pack_version",
            "review_status",
            "source",
            "feedback_state",
            "override_reason",
            "created_at",
            "accepted_n",
            "overridden_n",
            "is_repeat",
        ),
        # Time to review (migration 0006): only reviewed cards, so a new card costs
        # nothing here; grouped in index order, minutes included.
        Index(
            "ix_cards_reviewed",
            "primary_rule",
            "pack_id",
            "pack_version",
            "review_minutes",
            "created_at",
            sqlite_where=text("review_minutes IS NOT NULL"),
            postgresql_where=text("review_minutes IS NOT NULL"),
        ),
        # The dashboard's time series: grouped by hour in index order (migration 0006).
        Index(
            "ix_cards_hourly",
            "created_hour",
            "indicator",
            "created_at",
            "primary_rule",
            "pack_id",
            "accepted_n",
            "overridden_n",
            "is_repeat",
        ),
        Index(
            "ix_cards_period",
            "created_at",
            "indicator",
            "primary_rule",
            "category",
            "pack_id",
            "pack_version",
            "review_status",
            "source",
            "feedback_state",
            "patient_ref",
            "id",
        ),
        # Search by MRN (exact) and by name (a scan of this narrow index, not the rows).
        Index("ix_cards_mrn", "patient_mrn", "patient_ref"),
        Index("ix_cards_name", "patient_name_key", "patient_ref"),
    )


class CardRule(Base):
    """Each rule that contributed to a card; the one that set its severity is marked."""

    __tablename__ = "card_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    card_id: Mapped[str] = mapped_column(ForeignKey("cards.id"), index=True)
    rule_id: Mapped[str] = mapped_column(String(128), index=True)
    severity: Mapped[str] = mapped_column(String(16))
    sets_severity: Mapped[bool] = mapped_column(Boolean, default=False)

    card: Mapped[Card] = relationship(back_populates="rules")


class Feedback(Base):
    """What the clinician did with a card. ``dedupe_key`` makes re-sent items idempotent."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dedupe_key: Mapped[str] = mapped_column(String(64), unique=True)
    card_id: Mapped[str] = mapped_column(ForeignKey("cards.id"), index=True)
    service_id: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    accepted_suggestions: Mapped[list[str]] = mapped_column(JSON, default=list)
    override_code: Mapped[str | None] = mapped_column(String(128))
    override_system: Mapped[str | None] = mapped_column(String(256))
    override_display: Mapped[str | None] = mapped_column(String(256))
    override_comment: Mapped[str | None] = mapped_column(Text)
    outcome_timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Who sent it (migration 0003): the verified issuer and configured tenant, which must
    # be those the card was issued to.
    issuer: Mapped[str | None] = mapped_column(String(256))
    tenant: Mapped[str | None] = mapped_column(String(128))

    # Review console (migration 0002): override reasons per rule, read from the index.
    __table_args__ = (
        Index(
            "ix_feedback_card_outcome", "card_id", "outcome", "override_display", "override_code"
        ),
    )


class RejectedRequest(Base):
    """A hook or feedback call refused with a 4xx (reason only; no PHI beyond ids)."""

    __tablename__ = "rejected_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    path: Mapped[str] = mapped_column(String(256))
    status: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(512))
    hook_instance: Mapped[str | None] = mapped_column(String(64))
    # Migration 0003: identical anonymous rejections (401s) within a window share one row.
    count: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    last_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Review(Base):
    """A pharmacist's action on a card; never edited or deleted (history)."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    card_id: Mapped[str] = mapped_column(ForeignKey("cards.id"), index=True)
    action: Mapped[str] = mapped_column(String(16))  # acknowledge, escalate, resolve, annotate
    note: Mapped[str | None] = mapped_column(Text)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Migration 0006: an escalation goes to a named user or to a role; one action taken on
    # a group of cards (a patient, an order, a problem's repeats) shares a ``batch_id``.
    escalated_to_user_id: Mapped[int | None] = mapped_column(Integer)
    escalated_to_role: Mapped[str | None] = mapped_column(String(16))
    batch_id: Mapped[str | None] = mapped_column(String(36), index=True)


class User(Base):
    """A console account (pharmacist or admin)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(128))
    # casefolded username (migration 0003): "alice" and "Alice" are one account
    username_key: Mapped[str] = mapped_column(String(128))
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("username", name="uq_users_username"),
        UniqueConstraint("username_key", name="uq_users_username_key"),
    )


class LoginThrottle(Base):
    """Failed sign-ins for usernames that have no account (migration 0003).

    They count and lock exactly like an account's, so an unknown name is neither an
    endless free guess nor distinguishable from a real, locked one. ``key`` is the
    SHA-256 of the casefolded username (no typed name is kept).
    """

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class ConsoleSession(Base):
    """A signed-in review-console session (server side, so logout and disabling revoke it).

    The browser holds a random token; only its SHA-256 is stored here (``id``), so a copy
    of this table does not let anyone sign in. ``csrf_token`` is the synchronizer token
    every console form must echo.
    """

    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256(token) hex
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SweepRun(Base):
    """One ``cds sweep`` over a Bulk Data export: what went in, what came out, and how far.

    Counters grow as batches commit (a resumed run keeps adding to them); ``status`` is
    ``running`` while a process works on it, ``completed``, or ``interrupted`` (Ctrl-C,
    SIGTERM, a store outage: ``cds sweep --resume`` carries on). A run killed outright
    stays ``running``; ``--resume`` accepts that too.
    """

    __tablename__ = "sweep_runs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    engine: Mapped[str] = mapped_column(String(16))
    as_of: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    duration_s: Mapped[float] = mapped_column(Float, default=0.0)  # summed over attempts
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    export_dir: Mapped[str] = mapped_column(String(1024))
    # [{"path", "resource_type", "bytes", "sha256"}] of every file read
    input_files: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # [{"id", "version", "profile", "digest"}]
    packs: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    patients: Mapped[int] = mapped_column(Integer, default=0)
    patients_with_alerts: Mapped[int] = mapped_column(Integer, default=0)
    patient_errors: Mapped[int] = mapped_column(Integer, default=0)
    resources: Mapped[int] = mapped_column(Integer, default=0)
    bad_lines: Mapped[int] = mapped_column(Integer, default=0)
    alerts_new: Mapped[int] = mapped_column(Integer, default=0)
    alerts_duplicate: Mapped[int] = mapped_column(Integer, default=0)
    # the first bad lines (file, line, reason), for the console and ``--resume`` summaries
    bad_sample: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text)


class SweepBatch(Base):
    """A batch of patients whose results committed together: what ``--resume`` skips."""

    __tablename__ = "sweep_batches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("sweep_runs.id"), index=True)
    committed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    patient_count: Mapped[int] = mapped_column(Integer)
    patients: Mapped[list[str]] = mapped_column(JSON)  # patient ids (the key, no prefix)


class SweepItem(Base):
    """One line of a run's worklist: a problem found, and the alert that carries it.

    ``status`` ``new``: the sweep issued ``card_id``; ``duplicate``: ``card_id`` is the
    open alert (from a hook call or an earlier sweep) already showing the same problem.
    """

    __tablename__ = "sweep_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("sweep_runs.id"))
    patient_ref: Mapped[str] = mapped_column(String(128))
    order_id: Mapped[str] = mapped_column(String(128))
    rule_id: Mapped[str] = mapped_column(String(128))
    category: Mapped[str] = mapped_column(String(32))
    indicator: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))  # new | duplicate
    card_id: Mapped[str] = mapped_column(ForeignKey("cards.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint(
            "run_id", "patient_ref", "order_id", "rule_id", name="uq_sweep_items_problem"
        ),
    )


# Migration 0007 (replay and shadow packs): its tables live in their own module, imported
# here so that Base.metadata always holds them.
import cds.store.models_replay  # noqa: E402, F401
