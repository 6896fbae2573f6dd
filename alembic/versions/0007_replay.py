"""replay and shadow packs: kept hook requests, shadow evaluations and cards, replay reports

New tables only (no change to existing ones), so this revision can be re-chained after any
other without touching it.

Revision ID: 0007_replay
Revises: 0006_console
Create Date: 2026-12-10 12:00:00
"""

import sqlalchemy as sa

from alembic import op

revision = "0007_replay"
down_revision = "0006_console"  # re-chained after the console (0006)
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hook_requests",
        sa.Column("invocation_id", sa.String(length=36), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("service_id", sa.String(length=64), nullable=False),
        sa.Column("hook", sa.String(length=32), nullable=False),
        sa.Column("pack_version", sa.String(length=32), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("body_bytes", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("invocation_id"),
    )
    with op.batch_alter_table("hook_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_hook_requests_received_at"), ["received_at"])
        batch_op.create_index(batch_op.f("ix_hook_requests_stored_at"), ["stored_at"])

    op.create_table(
        "shadow_evaluations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("invocation_id", sa.String(length=36), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("evaluated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("service_id", sa.String(length=64), nullable=False),
        sa.Column("hook", sa.String(length=32), nullable=False),
        sa.Column("pack_id", sa.String(length=64), nullable=False),
        sa.Column("pack_version", sa.String(length=32), nullable=False),
        sa.Column("pack_digest", sa.String(length=64), nullable=False),
        sa.Column("live_version", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("error", sa.String(length=128), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("card_count", sa.Integer(), nullable=False),
        sa.Column("live_card_count", sa.Integer(), nullable=False),
        sa.Column("changed", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("shadow_evaluations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_shadow_evaluations_invocation_id"), ["invocation_id"])
        batch_op.create_index(
            "ix_shadow_evaluations_pack", ["pack_id", "pack_version", "received_at"]
        )

    op.create_table(
        "shadow_cards",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("evaluation_id", sa.Integer(), nullable=False),
        sa.Column("invocation_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pack_id", sa.String(length=64), nullable=False),
        sa.Column("pack_version", sa.String(length=32), nullable=False),
        sa.Column("change", sa.String(length=16), nullable=False),
        sa.Column("rule_id", sa.String(length=128), nullable=False),
        sa.Column("order_id", sa.String(length=512), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("grp", sa.String(length=128), nullable=False),
        sa.Column("card_uuid", sa.String(length=36), nullable=True),
        sa.Column("indicator", sa.String(length=16), nullable=True),
        sa.Column("primary_rule", sa.String(length=128), nullable=True),
        sa.Column("rule_ids", sa.JSON(), nullable=True),
        sa.Column("summary", sa.String(length=200), nullable=True),
        sa.Column("card_json", sa.JSON(), nullable=True),
        sa.Column("live_card_id", sa.String(length=36), nullable=True),
        sa.Column("live_indicator", sa.String(length=16), nullable=True),
        sa.Column("live_rule", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(["evaluation_id"], ["shadow_evaluations.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("shadow_cards", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_shadow_cards_evaluation_id"), ["evaluation_id"])
        batch_op.create_index(batch_op.f("ix_shadow_cards_invocation_id"), ["invocation_id"])
        batch_op.create_index(batch_op.f("ix_shadow_cards_live_card_id"), ["live_card_id"])
        batch_op.create_index("ix_shadow_cards_pack", ["pack_id", "pack_version", "created_at"])

    op.create_table(
        "replay_reports",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("pack_id", sa.String(length=64), nullable=False),
        sa.Column("baseline_version", sa.String(length=32), nullable=True),
        sa.Column("candidate_version", sa.String(length=32), nullable=False),
        sa.Column("candidate_digest", sa.String(length=64), nullable=False),
        sa.Column("candidate_dir", sa.String(length=1024), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=True),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("changed_calls", sa.Integer(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("totals", sa.JSON(), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("replay_reports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_replay_reports_created_at"), ["created_at"])


def downgrade() -> None:
    op.drop_table("replay_reports")
    op.drop_table("shadow_cards")
    op.drop_table("shadow_evaluations")
    op.drop_table("hook_requests")
