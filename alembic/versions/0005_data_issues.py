"""data issues of a hook call kept with its audit record (not shown as prescriber cards)

Revision ID: 0005_data_issues
Revises: 0004_sweep
Create Date: 2026-12-06 12:00:00
"""

import sqlalchemy as sa

from alembic import op

revision = "0005_data_issues"
down_revision = "0004_sweep"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("invocations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("data_issues", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("invocations", schema=None) as batch_op:
        batch_op.drop_column("data_issues")
