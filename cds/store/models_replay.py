"""Tables of migration 0007 (replay and shadow packs), on the same ``Base`` as the rest.

Kept in their own module so the audit models stay readable; ``cds.store.models`` imports
this module, so ``Base.metadata`` (Alembic, the drift test) always holds these tables.

None of them has a foreign key to ``invocations``: the rows are written after the hook
call's own audit write, by another process (the sidecar, see ``cds.hooks.shadow``), and
must neither wait for nor fail on how that write is committed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from cds.store.models import Base


class HookRequest(Base):
    """A hook call's input as it was evaluated, kept for ``cds rules replay``.

    Only with ``CDS_KEEP_REQUESTS_DAYS`` above 0, and deleted ``CDS_KEEP_REQUESTS_DAYS``
    after ``stored_at``: it is patient data. ``body`` is zlib-compressed JSON: the hook,
    ``hookInstance``, ``context`` and the resolved prefetch resources (what was sent plus
    what was fetched), never ``fhirAuthorization`` or ``fhirServer``.
    """

    __tablename__ = "hook_requests"

    invocation_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    stored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    service_id: Mapped[str] = mapped_column(String(64))
    hook: Mapped[str] = mapped_column(String(32))
    pack_version: Mapped[str | None] = mapped_column(String(32))  # the live packs' versions
    body: Mapped[bytes] = mapped_column(LargeBinary)
    body_bytes: Mapped[int] = mapped_column(Integer)  # uncompressed JSON size
    sha256: Mapped[str] = mapped_column(String(64))  # of the uncompressed JSON


class ShadowEvaluation(Base):
    """A shadow pack evaluated on one live call (``CDS_SHADOW_PACKS``); never answered."""

    __tablename__ = "shadow_evaluations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    invocation_id: Mapped[str] = mapped_column(String(36), index=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    evaluated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    service_id: Mapped[str] = mapped_column(String(64))
    hook: Mapped[str] = mapped_column(String(32))
    pack_id: Mapped[str] = mapped_column(String(64))
    pack_version: Mapped[str] = mapped_column(String(32))
    pack_digest: Mapped[str] = mapped_column(String(64))
    live_version: Mapped[str | None] = mapped_column(String(32))  # the live pack's, if any
    status: Mapped[str] = mapped_column(String(8))  # ok | error | timeout
    error: Mapped[str | None] = mapped_column(String(128))  # exception type only
    duration_ms: Mapped[float] = mapped_column(Float)
    card_count: Mapped[int] = mapped_column(Integer, default=0)  # the shadow pack's cards
    live_card_count: Mapped[int] = mapped_column(Integer, default=0)  # the live pack's
    changed: Mapped[int] = mapped_column(Integer, default=0)  # cards appearing/going/changing

    __table_args__ = (
        Index("ix_shadow_evaluations_pack", "pack_id", "pack_version", "received_at"),
    )


class ShadowCard(Base):
    """One card key of a shadow evaluation: the card the shadow pack would give (marked by
    ``change``: appear, severity, rules, same) or a live card it would not give
    (``disappear``: no shadow card, only the live one). ``live_card_id`` is the live card
    on the same call, order and category, whose feedback says what the prescriber did."""

    __tablename__ = "shadow_cards"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    evaluation_id: Mapped[int] = mapped_column(ForeignKey("shadow_evaluations.id"), index=True)
    invocation_id: Mapped[str] = mapped_column(String(36), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    pack_id: Mapped[str] = mapped_column(String(64))
    pack_version: Mapped[str] = mapped_column(String(32))
    change: Mapped[str] = mapped_column(String(16))
    rule_id: Mapped[str] = mapped_column(String(128))  # the rule the change is attributed to
    order_id: Mapped[str] = mapped_column(String(512))
    category: Mapped[str] = mapped_column(String(32))
    grp: Mapped[str] = mapped_column(String(128), default="")
    # the would-be card (absent for "disappear")
    card_uuid: Mapped[str | None] = mapped_column(String(36))
    indicator: Mapped[str | None] = mapped_column(String(16))
    primary_rule: Mapped[str | None] = mapped_column(String(128))
    rule_ids: Mapped[list[str] | None] = mapped_column(JSON)
    summary: Mapped[str | None] = mapped_column(String(200))
    card_json: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # the live card on the same call (absent for "appear")
    live_card_id: Mapped[str | None] = mapped_column(String(36), index=True)
    live_indicator: Mapped[str | None] = mapped_column(String(16))
    live_rule: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (Index("ix_shadow_cards_pack", "pack_id", "pack_version", "created_at"),)


class ReplayReport(Base):
    """A ``cds rules replay`` run: what a pack's working copy would change, per rule."""

    __tablename__ = "replay_reports"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    source: Mapped[str] = mapped_column(String(8))  # stored | bulk
    pack_id: Mapped[str] = mapped_column(String(64))
    baseline_version: Mapped[str | None] = mapped_column(String(32))  # None: a new pack
    candidate_version: Mapped[str] = mapped_column(String(32))
    candidate_digest: Mapped[str] = mapped_column(String(64))
    candidate_dir: Mapped[str] = mapped_column(String(1024))
    since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    as_of: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # bulk only
    calls: Mapped[int] = mapped_column(Integer, default=0)  # calls or patients evaluated
    errors: Mapped[int] = mapped_column(Integer, default=0)  # could not be evaluated
    changed_calls: Mapped[int] = mapped_column(Integer, default=0)
    duration_s: Mapped[float] = mapped_column(Float, default=0.0)
    # {"appear": n, "disappear": n, "severity_up": n, "severity_down": n, "rules": n}
    totals: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # one row per rule that changed: counts and example invocation ids (or patient ids)
    rules: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
