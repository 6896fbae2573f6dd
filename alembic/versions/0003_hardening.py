"""hardening: long request ids, case-insensitive usernames, sign-in throttle for unknown
names, aggregated rejections, feedback bound to its sender and keyed on its comment

Revision ID: 0003_hardening
Revises: 0002
Create Date: 2026-11-26 12:00:00
"""

import hashlib
import json
import unicodedata
from datetime import datetime

import sqlalchemy as sa

from alembic import op

revision = "0003_hardening"
down_revision = "0002"
branch_labels = None
depends_on = None

_WIDENED = {
    "invocations": ("patient_ref", "user_ref", "encounter_ref"),
    "cards": ("patient_ref", "order_id"),
}


def _username_key(username: str) -> str:
    # Frozen copy of cds.store.users.username_key at this revision.
    return unicodedata.normalize("NFKC", username.strip()).casefold()


def _feedback_key(row: sa.Row) -> str:
    # Frozen copy of cds.store.audit.feedback_key at this revision (v2: the override's
    # system, display and comment are part of the item, so a new comment is not a duplicate).
    ts = row.outcome_timestamp
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts)
    if ts.tzinfo is None:
        from datetime import UTC

        ts = ts.replace(tzinfo=UTC)
    accepted = row.accepted_suggestions
    if isinstance(accepted, str):
        accepted = json.loads(accepted)
    raw = json.dumps(
        [
            "v2",
            row.service_id,
            row.card_id,
            row.outcome,
            sorted(accepted or []),
            row.override_code,
            row.override_system,
            row.override_display,
            row.override_comment,
            ts.isoformat(),
        ],
        separators=(",", ":"),
    )
    return hashlib.sha256(raw.encode()).hexdigest()


def upgrade() -> None:
    bind = op.get_bind()
    for table, columns in _WIDENED.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in columns:
                batch_op.alter_column(
                    column,
                    existing_type=sa.String(length=128),
                    type_=sa.String(length=512),
                    existing_nullable=column != "order_id",
                )

    with op.batch_alter_table("rejected_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("count", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("last_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.add_column(sa.Column("issuer", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("tenant", sa.String(length=128), nullable=True))

    # Feedback keys v2 (see _feedback_key), recomputed for the rows already stored.
    feedback = sa.table(
        "feedback",
        sa.column("id", sa.Integer),
        sa.column("dedupe_key", sa.String),
        sa.column("service_id", sa.String),
        sa.column("card_id", sa.String),
        sa.column("outcome", sa.String),
        sa.column("accepted_suggestions", sa.JSON),
        sa.column("override_code", sa.String),
        sa.column("override_system", sa.String),
        sa.column("override_display", sa.String),
        sa.column("override_comment", sa.Text),
        sa.column("outcome_timestamp", sa.DateTime(timezone=True)),
    )
    for row in bind.execute(sa.select(feedback)).all():
        bind.execute(
            feedback.update().where(feedback.c.id == row.id).values(dedupe_key=_feedback_key(row))
        )

    # Usernames are one account whatever their case.
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("username_key", sa.String(length=128), nullable=True))
    users = sa.table(
        "users",
        sa.column("id", sa.Integer),
        sa.column("username", sa.String),
        sa.column("username_key", sa.String),
    )
    seen: dict[str, str] = {}
    clashes: list[str] = []
    for uid, name in bind.execute(sa.select(users.c.id, users.c.username)).all():
        key = _username_key(name)
        if key in seen:
            clashes.append(f"{seen[key]!r} and {name!r}")
        seen[key] = name
        bind.execute(users.update().where(users.c.id == uid).values(username_key=key))
    if clashes:
        raise RuntimeError(
            "usernames that differ only by case must become one account before this "
            "upgrade; rename or delete one of: " + "; ".join(clashes)
        )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.alter_column("username_key", existing_type=sa.String(length=128), nullable=False)
        batch_op.create_unique_constraint("uq_users_username_key", ["username_key"])

    op.create_table(
        "login_throttle",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("login_throttle", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_login_throttle_updated_at"), ["updated_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("login_throttle", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_login_throttle_updated_at"))
    op.drop_table("login_throttle")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_constraint("uq_users_username_key", type_="unique")
        batch_op.drop_column("username_key")
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.drop_column("tenant")
        batch_op.drop_column("issuer")
    # Feedback keys stay v2: they are only compared, and a v1 key would merely let an
    # item re-sent after the downgrade be stored once more.
    with op.batch_alter_table("rejected_requests", schema=None) as batch_op:
        batch_op.drop_column("last_at")
        batch_op.drop_column("count")
    for table, columns in _WIDENED.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in columns:
                batch_op.alter_column(
                    column,
                    existing_type=sa.String(length=512),
                    type_=sa.String(length=128),
                    existing_nullable=column != "order_id",
                )
