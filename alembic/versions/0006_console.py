"""review console as a pharmacist uses it: who and where a call was about, problems and
repeats, every feedback event counted, the override reason on the card, time to review
(minutes), the hour of issue,
escalation to a user or a role, bulk actions

Revision ID: 0006_console
Revises: 0005_data_issues
Create Date: 2026-12-08 12:00:00

Backfilled from what is stored: the prescriber (the invocation's ``userId``), the problem
of every card (the first card of the same patient, order and rule), the feedback counts,
state and latest override reason (in the words the card offered, else the words the EHR
sent, else the code), and the time to the first review. Not backfilled: patient names,
MRNs, wards, prescriber names and the order in words: earlier calls did not keep their
prefetch, and the console never fetches it afterwards.
"""

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from alembic import op

revision = "0006_console"
down_revision = "0005_data_issues"
branch_labels = None
depends_on = None

_OLD_STATS = [
    "primary_rule",
    "category",
    "indicator",
    "pack_version",
    "review_status",
    "feedback_outcome",
    "created_at",
    "id",
]
_OLD_PERIOD = [
    "created_at",
    "indicator",
    "primary_rule",
    "category",
    "pack_version",
    "review_status",
    "feedback_outcome",
    "id",
]
_STATS = [
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
]
_REVIEWED = [
    "primary_rule",
    "pack_id",
    "pack_version",
    "review_minutes",
    "created_at",
]
_HOURLY = [
    "created_hour",
    "indicator",
    "created_at",
    "primary_rule",
    "pack_id",
    "accepted_n",
    "overridden_n",
    "is_repeat",
]
_PERIOD = [
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
]
_PROBLEM = [
    "patient_ref",
    "order_id",
    "primary_rule",
    "problem_id",
    "review_status",
    "created_at",
    "id",
]


def upgrade() -> None:
    with op.batch_alter_table("invocations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("context", sa.JSON(), nullable=True))
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.add_column(sa.Column("escalated_to_user_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("escalated_to_role", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("batch_id", sa.String(length=36), nullable=True))
        batch_op.create_index(batch_op.f("ix_reviews_batch_id"), ["batch_id"], unique=False)
    with op.batch_alter_table("cards", schema=None) as batch_op:
        for name, length in (
            ("patient_name", 256),
            ("patient_name_key", 256),
            ("patient_mrn", 128),
            ("location", 256),
            ("prescriber_ref", 512),
            ("prescriber_name", 256),
            ("order_text", 512),
            ("problem_id", 36),
        ):
            batch_op.add_column(sa.Column(name, sa.String(length=length), nullable=True))
        batch_op.add_column(
            sa.Column("is_repeat", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("accepted_n", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("overridden_n", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("feedback_state", sa.String(length=12), server_default="none", nullable=False)
        )
        batch_op.add_column(sa.Column("override_reason", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("review_minutes", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("escalated_to_user_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("escalated_to_role", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("created_hour", sa.Integer(), nullable=True))

    _backfill()  # while the 0004 index still serves the problem lookup

    with op.batch_alter_table("cards", schema=None) as batch_op:
        batch_op.drop_index("ix_cards_stats")
        batch_op.drop_index("ix_cards_period")
        batch_op.drop_index("ix_cards_patient_order_rule")
    with op.batch_alter_table("cards", schema=None) as batch_op:
        batch_op.create_index("ix_cards_patient_order_rule", _PROBLEM, unique=False)
        batch_op.create_index("ix_cards_stats", _STATS, unique=False)
        batch_op.create_index("ix_cards_period", _PERIOD, unique=False)
        batch_op.create_index("ix_cards_mrn", ["patient_mrn", "patient_ref"], unique=False)
        batch_op.create_index("ix_cards_name", ["patient_name_key", "patient_ref"], unique=False)
        batch_op.create_index("ix_cards_hourly", _HOURLY, unique=False)
        batch_op.create_index(
            "ix_cards_reviewed",
            _REVIEWED,
            unique=False,
            sqlite_where=sa.text("review_minutes IS NOT NULL"),
            postgresql_where=sa.text("review_minutes IS NOT NULL"),
        )


def _chunks(rows: list[Any], size: int = 500) -> Iterator[list[Any]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def _utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _backfill() -> None:
    bind = op.get_bind()
    # The UTC hour of issue (hours since 1970): the dashboard groups by it in index order.
    if bind.dialect.name == "postgresql":
        hour = "CAST(floor(extract(epoch from created_at) / 3600) AS INTEGER)"
    else:
        hour = "CAST(strftime('%s', created_at) AS INTEGER) / 3600"
    bind.execute(sa.text(f"UPDATE cards SET created_hour = {hour}"))  # noqa: S608
    # The prescriber of every card is the userId of its call.
    bind.execute(
        sa.text(
            "UPDATE cards SET prescriber_ref = (SELECT i.user_ref FROM invocations i "
            "WHERE i.id = cards.invocation_id)"
        )
    )
    # The problem: the first card (by time, then id) of the same patient, order and rule.
    bind.execute(
        sa.text(
            "UPDATE cards SET problem_id = COALESCE((SELECT c2.id FROM cards c2 "
            "WHERE c2.patient_ref = cards.patient_ref AND c2.order_id = cards.order_id "
            "AND c2.primary_rule = cards.primary_rule "
            "ORDER BY c2.created_at, c2.id LIMIT 1), cards.id)"
        )
    )
    bind.execute(sa.text("UPDATE cards SET is_repeat = 1 WHERE problem_id <> id"))
    # Every feedback event counted, and the state they add up to.
    for outcome, column in (("accepted", "accepted_n"), ("overridden", "overridden_n")):
        bind.execute(
            sa.text(
                f"UPDATE cards SET {column} = (SELECT COUNT(*) FROM feedback f "  # noqa: S608
                f"WHERE f.card_id = cards.id AND f.outcome = '{outcome}') "
                "WHERE cards.id IN (SELECT card_id FROM feedback)"
            )
        )
    bind.execute(
        sa.text(
            "UPDATE cards SET feedback_state = CASE "
            "WHEN accepted_n > 0 AND overridden_n > 0 THEN 'both' "
            "WHEN accepted_n > 0 THEN 'accepted' "
            "WHEN overridden_n > 0 THEN 'overridden' ELSE 'none' END"
        )
    )
    # The latest override reason, in the words the card offered (Python: they are in the
    # card JSON).
    latest: dict[str, tuple[str | None, str | None]] = {}
    for card_id, code, display in bind.execute(
        sa.text(
            "SELECT card_id, override_code, override_display FROM feedback "
            "WHERE outcome = 'overridden' ORDER BY card_id, outcome_timestamp, id"
        )
    ):
        latest[card_id] = (code, display)
    cards = sa.table(
        "cards",
        sa.column("id", sa.String()),
        sa.column("card_json", sa.JSON()),
        sa.column("override_reason", sa.String()),
        sa.column("review_minutes", sa.Integer()),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    for chunk in _chunks(list(latest)):
        updates = []
        for card_id, card_json in bind.execute(
            sa.select(cards.c.id, cards.c.card_json).where(cards.c.id.in_(chunk))
        ):
            code, display = latest[card_id]
            offered = {
                r.get("code"): r.get("display")
                for r in (card_json or {}).get("overrideReasons") or []
                if isinstance(r, dict)
            }
            words = offered.get(code) or display or code or "(no reason given)"
            updates.append({"cid": card_id, "reason": str(words)[:256]})
        if updates:
            bind.execute(
                cards.update()
                .where(cards.c.id == sa.bindparam("cid"))
                .values(override_reason=sa.bindparam("reason")),
                updates,
            )
    # Minutes from issue to the first review action.
    rows = list(
        bind.execute(
            sa.text(
                "SELECT c.id, c.created_at, MIN(r.created_at) FROM cards c "
                "JOIN reviews r ON r.card_id = c.id GROUP BY c.id, c.created_at"
            )
        )
    )
    for chunk in _chunks(rows):
        updates = [
            {
                "cid": card_id,
                "mins": max(0, int((_utc(first) - _utc(created)).total_seconds() // 60)),
            }
            for card_id, created, first in chunk
        ]
        bind.execute(
            cards.update()
            .where(cards.c.id == sa.bindparam("cid"))
            .values(review_minutes=sa.bindparam("mins")),
            updates,
        )
    # An escalation stored before 0006 went to nobody in particular: the pharmacists.
    bind.execute(
        sa.text(
            "UPDATE cards SET escalated_to_role = 'pharmacist' WHERE review_status = 'escalated'"
        )
    )


_CARD_COLUMNS = (
    "created_hour",
    "escalated_to_role",
    "escalated_to_user_id",
    "review_minutes",
    "override_reason",
    "feedback_state",
    "overridden_n",
    "accepted_n",
    "is_repeat",
    "problem_id",
    "order_text",
    "prescriber_name",
    "prescriber_ref",
    "location",
    "patient_mrn",
    "patient_name_key",
    "patient_name",
)


def _drop_columns(table: str, names: tuple[str, ...]) -> None:
    """Plain ``ALTER TABLE ... DROP COLUMN`` (SQLite 3.35+ has it): a batch would copy the
    table and drop the original, which SQLite refuses while other tables' rows point at it
    (``feedback``, ``reviews`` and ``card_rules`` reference ``cards``)."""
    bind = op.get_bind()
    if bind.dialect.name == "sqlite" and bind.dialect.dbapi.sqlite_version_info >= (3, 35):
        for name in names:
            op.execute(sa.text(f'ALTER TABLE "{table}" DROP COLUMN "{name}"'))
        return
    with op.batch_alter_table(table, schema=None) as batch_op:
        for name in names:
            batch_op.drop_column(name)


def downgrade() -> None:
    with op.batch_alter_table("cards", schema=None) as batch_op:
        batch_op.drop_index("ix_cards_reviewed")
        batch_op.drop_index("ix_cards_hourly")
        batch_op.drop_index("ix_cards_name")
        batch_op.drop_index("ix_cards_mrn")
        batch_op.drop_index("ix_cards_period")
        batch_op.drop_index("ix_cards_stats")
        batch_op.drop_index("ix_cards_patient_order_rule")
    _drop_columns("cards", _CARD_COLUMNS)
    with op.batch_alter_table("cards", schema=None) as batch_op:
        batch_op.create_index(
            "ix_cards_patient_order_rule", ["patient_ref", "order_id", "primary_rule"]
        )
        batch_op.create_index("ix_cards_stats", _OLD_STATS, unique=False)
        batch_op.create_index("ix_cards_period", _OLD_PERIOD, unique=False)
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reviews_batch_id"))
    _drop_columns("reviews", ("batch_id", "escalated_to_role", "escalated_to_user_id"))
    _drop_columns("invocations", ("context",))
