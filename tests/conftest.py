"""Shared fixtures: the fixed evaluation instant, databases (SQLite and a real PostgreSQL),
apps built with ``create_app``.

Real parts: PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth). Each test session
creates its own database and drops it afterwards. Without a server the PostgreSQL tests
skip with a message saying how to enable them, except under CI=true where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

FIXED_NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parent.parent
# The shipped baclofen pack's version (tests that watch a version change read it from here)
PACK_VERSION = str(
    __import__("yaml").safe_load((REPO / "rules" / "baclofen" / "pack.yaml").read_text())["version"]
)
PG_ADMIN = os.environ.get("CDS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() == "true"


def skip_or_fail(message: str) -> None:
    """Skip on a developer's laptop; under CI a missing real part is a failure."""
    if IN_CI:
        pytest.fail(f"{message} (CI=true: real parts must run)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[object]:
    try:
        import psycopg

        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except Exception as exc:  # noqa: BLE001
        skip_or_fail(
            f"PostgreSQL not reachable at {PG_ADMIN} ({type(exc).__name__}); start "
            "it on 127.0.0.1:5432 (user postgres, trust auth) to run these tests"
        )
        raise
    yield admin
    admin.close()


@pytest.fixture
def pg_url(pg_admin: object) -> Iterator[str]:
    """A fresh PostgreSQL database for one test (dropped afterwards)."""
    admin = pg_admin
    name = f"cds_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cds.db'}"


@pytest.fixture(scope="session")
def rules_dir() -> Path:
    return REPO / "rules"
