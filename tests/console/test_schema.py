"""The console's schema additions (migration 0002) match the models exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from cds.store.db import downgrade, make_engine, upgrade
from cds.store.models import Base

MINE = {
    "console_sessions",
    "ix_console_sessions_user_id",
    "ix_cards_stats",
    "ix_cards_period",
    "ix_feedback_card_outcome",
    # migration 0006
    "ix_cards_hourly",
    "ix_cards_reviewed",
    "ix_cards_mrn",
    "ix_cards_name",
    "ix_cards_patient_order_rule",
    "ix_reviews_batch_id",
}


def _names(diff: object) -> set[str]:
    """Names of tables and indexes a (possibly nested) autogenerate diff touches."""
    out: set[str] = set()
    items = diff if isinstance(diff, list) else [diff]
    for item in items:
        if isinstance(item, list | tuple):
            for part in item:
                name = getattr(part, "name", None)
                if isinstance(name, str):
                    out.add(name)
                if isinstance(part, list | tuple):
                    out |= _names(list(part))
    return out


def test_migration_0002_matches_the_models(db_url: str) -> None:
    engine = make_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert not (_names(diff) & MINE), diff
    indexes = {i["name"] for i in inspect(engine).get_indexes("cards")}
    assert {"ix_cards_stats", "ix_cards_period", "ix_cards_hourly", "ix_cards_reviewed"} <= indexes
    assert "ix_feedback_card_outcome" in {
        i["name"] for i in inspect(engine).get_indexes("feedback")
    }
    engine.dispose()


def test_migration_0002_downgrades_cleanly(db_url: str) -> None:
    downgrade(db_url, "0001")
    engine = make_engine(db_url)
    assert "console_sessions" not in inspect(engine).get_table_names()
    engine.dispose()
    upgrade(db_url)
