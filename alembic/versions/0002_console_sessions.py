"""review console: server-side sessions, covering indexes for its queries

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 12:00:00
"""

import sqlalchemy as sa

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("console_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_console_sessions_user_id"), ["user_id"], unique=False)
    # Covering indexes for the console's counts and dashboard (see cds/store/console.py).
    with op.batch_alter_table("cards", schema=None) as batch_op:
        batch_op.create_index(
            "ix_cards_stats",
            [
                "primary_rule",
                "category",
                "indicator",
                "pack_version",
                "review_status",
                "feedback_outcome",
                "created_at",
                "id",
            ],
            unique=False,
        )
        batch_op.create_index(
            "ix_cards_period",
            [
                "created_at",
                "indicator",
                "primary_rule",
                "category",
                "pack_version",
                "review_status",
                "feedback_outcome",
                "id",
            ],
            unique=False,
        )
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.create_index(
            "ix_feedback_card_outcome",
            ["card_id", "outcome", "override_display", "override_code"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.drop_index("ix_feedback_card_outcome")
    with op.batch_alter_table("cards", schema=None) as batch_op:
        batch_op.drop_index("ix_cards_period")
        batch_op.drop_index("ix_cards_stats")
    with op.batch_alter_table("console_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_console_sessions_user_id"))
    op.drop_table("console_sessions")
