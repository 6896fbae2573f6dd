"""Engine and session factory; Alembic upgrade run from code (``cds db upgrade``)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from cds.paths import data_dir


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoint; WAL survives crashes
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def json_text(value: Any) -> str:
    """JSON columns as text: orjson (5-10x the standard library on card JSON), and the
    standard library for what orjson refuses (an integer past 64 bits, a non-string key)."""
    try:
        return orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value)


def make_engine(url: str) -> Engine:
    """Engine for ``url``; SQLite gets WAL mode and a busy timeout (several workers)."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 5},
            json_serializer=json_text,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(
        url, pool_size=10, max_overflow=10, pool_pre_ping=True, json_serializer=json_text
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


_SQLITE_WRITE = threading.Lock()


@contextmanager
def write_lock(maker: sessionmaker[Session]) -> Iterator[None]:
    """Serialise writers in this process on SQLite.

    SQLite has one writer at a time; under 16 concurrent requests the threads starved each
    other past the busy timeout and calls failed closed with 503 (measured: 14 "database is
    locked" in 20 s; with this lock none). PostgreSQL needs no lock.
    """
    bind = maker.kw.get("bind")
    if bind is not None and bind.dialect.name == "sqlite":
        with _SQLITE_WRITE:
            yield
    else:
        yield


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    folder: Path = data_dir("alembic")
    cfg = Config()
    cfg.set_main_option("script_location", str(folder))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply pending migrations (the only way the schema changes)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def make_memory_sessionmaker() -> sessionmaker[Session]:
    """A private in-memory SQLite store with the current schema (``cds evaluate``, tests)."""
    from sqlalchemy.pool import StaticPool

    from cds.store.models import Base

    engine = create_engine(
        "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
    )
    event.listen(engine, "connect", _sqlite_pragmas)
    Base.metadata.create_all(engine)
    return make_sessionmaker(engine)
