"""population sweeps: source and run id on invocations and cards, run records, worklist

Revision ID: 0004_sweep
Revises: 0003_hardening
Create Date: 2026-12-06 06:00:00

"""

import sqlalchemy as sa

from alembic import op

revision = "0004_sweep"
down_revision = "0003_hardening"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("invocations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("source", sa.String(length=8), server_default="hook", nullable=False)
        )
        batch_op.add_column(sa.Column("run_id", sa.String(length=36), nullable=True))
        batch_op.create_index(batch_op.f("ix_invocations_run_id"), ["run_id"], unique=False)
    with op.batch_alter_table("cards", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("source", sa.String(length=8), server_default="hook", nullable=False)
        )
        batch_op.add_column(sa.Column("run_id", sa.String(length=36), nullable=True))
        batch_op.create_index(
            "ix_cards_patient_order_rule", ["patient_ref", "order_id", "primary_rule"], unique=False
        )

    op.create_table(
        "sweep_runs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("engine", sa.String(length=16), nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("export_dir", sa.String(length=1024), nullable=False),
        sa.Column("input_files", sa.JSON(), nullable=False),
        sa.Column("packs", sa.JSON(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("patients", sa.Integer(), nullable=False),
        sa.Column("patients_with_alerts", sa.Integer(), nullable=False),
        sa.Column("patient_errors", sa.Integer(), nullable=False),
        sa.Column("resources", sa.Integer(), nullable=False),
        sa.Column("bad_lines", sa.Integer(), nullable=False),
        sa.Column("alerts_new", sa.Integer(), nullable=False),
        sa.Column("alerts_duplicate", sa.Integer(), nullable=False),
        sa.Column("bad_sample", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("sweep_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sweep_runs_started_at"), ["started_at"], unique=False)

    op.create_table(
        "sweep_batches",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("committed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("patient_count", sa.Integer(), nullable=False),
        sa.Column("patients", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["sweep_runs.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("sweep_batches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sweep_batches_run_id"), ["run_id"], unique=False)

    op.create_table(
        "sweep_items",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("patient_ref", sa.String(length=128), nullable=False),
        sa.Column("order_id", sa.String(length=128), nullable=False),
        sa.Column("rule_id", sa.String(length=128), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("indicator", sa.String(length=16), nullable=False),
        sa.Column("summary", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("card_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["card_id"], ["cards.id"]),
        sa.ForeignKeyConstraint(["run_id"], ["sweep_runs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "run_id", "patient_ref", "order_id", "rule_id", name="uq_sweep_items_problem"
        ),
    )
    with op.batch_alter_table("sweep_items", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sweep_items_card_id"), ["card_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sweep_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sweep_items_card_id"))
    op.drop_table("sweep_items")
    with op.batch_alter_table("sweep_batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sweep_batches_run_id"))
    op.drop_table("sweep_batches")
    with op.batch_alter_table("sweep_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sweep_runs_started_at"))
    op.drop_table("sweep_runs")
    with op.batch_alter_table("cards", schema=None) as batch_op:
        batch_op.drop_index("ix_cards_patient_order_rule")
        batch_op.drop_column("run_id")
        batch_op.drop_column("source")
    with op.batch_alter_table("invocations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_invocations_run_id"))
        batch_op.drop_column("run_id")
        batch_op.drop_column("source")
