"""Fixtures for the reliability tests: migrated stores, in-process apps, real servers.

Real parts: PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379). Without them the tests
that need them skip with a message, except under CI=true where they fail.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bench.gen_requests import build
from cds.settings import Settings
from cds.store.db import upgrade
from cds.web.app import create_app
from tests.conftest import FIXED_NOW, skip_or_fail

REDIS_URL = "redis://127.0.0.1:6379/14"


def typical(now: datetime = FIXED_NOW, kind: str = "order-sign-typical") -> dict[str, Any]:
    """The benchmark's typical request (gives cards at ``now``)."""
    return build(kind, now)


def assert_outcome(status: int, text: str, expected: int | None = None) -> dict[str, Any]:
    """A non-2xx answer: an OperationOutcome with diagnostics and no traceback."""
    if expected is not None:
        assert status == expected, text[:500]
    assert 400 <= status < 600 and status != 500, text[:500]
    body: dict[str, Any] = json.loads(text)
    assert body["resourceType"] == "OperationOutcome", text[:500]
    assert body["issue"] and body["issue"][0]["diagnostics"], text[:500]
    assert "Traceback" not in text and 'File "' not in text
    return body


@pytest.fixture
def migrated_sqlite(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'cds.db'}"
    upgrade(url)
    return url


@pytest.fixture
def offline_client(migrated_sqlite: str) -> Iterator[TestClient]:
    """The app without auth, on a migrated SQLite file, the clock at FIXED_NOW."""
    app = create_app(Settings(auth="off", database_url=migrated_sqlite), clock=lambda: FIXED_NOW)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        skip_or_fail(
            f"Redis not reachable at {REDIS_URL} ({type(exc).__name__}); start it "
            "on 127.0.0.1:6379 to run the scale-out tests"
        )
    return REDIS_URL
