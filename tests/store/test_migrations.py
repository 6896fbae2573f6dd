"""Alembic is the only way the schema changes: upgrade from empty, downgrade/upgrade round
trip, and no drift between the models and the migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from cds.store.db import downgrade, make_engine, upgrade
from cds.store.models import Base

TABLES = {"invocations", "cards", "card_rules", "feedback", "rejected_requests", "reviews", "users"}


def _check_roundtrip(url: str) -> None:
    upgrade(url)
    engine = make_engine(url)
    assert set(inspect(engine).get_table_names()) >= TABLES
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
        assert diff == [], f"models and migrations drift: {diff}"
    downgrade(url, "base")
    assert not TABLES & set(inspect(engine).get_table_names())
    upgrade(url)
    assert set(inspect(engine).get_table_names()) >= TABLES
    engine.dispose()


def test_sqlite_upgrade_downgrade_roundtrip(sqlite_url: str) -> None:
    _check_roundtrip(sqlite_url)


@pytest.mark.postgres
def test_postgres_upgrade_downgrade_roundtrip(pg_url: str) -> None:
    _check_roundtrip(pg_url)
