"""The main paths over real HTTP against a real ``cds serve`` (uvicorn) process, with JWT
on, on SQLite (migrated by ``cds serve`` itself) and on PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from cds.store.db import make_engine, make_sessionmaker, upgrade
from cds.store.models import Card, Feedback, Invocation
from cds.testing.issuer import TestIssuer
from tests.conftest import REPO
from tests.server import ServeProcess

EXAMPLES = {
    "order-sign-renal-moderate.json": ("medication-safety-order-sign", "renal-adjustment"),
    "order-sign-above-ceiling.json": ("medication-safety-order-sign", "dose-ceiling"),
    "order-sign-abrupt-stop.json": ("medication-safety-order-sign", "withdrawal-risk"),
    "patient-view-itb-refill-overdue.json": ("medication-safety-patient-view", "withdrawal-risk"),
}


def _exercise(server: ServeProcess, issuer: TestIssuer) -> list[str]:
    """Discovery, each example and feedback over HTTP; returns the card uuids issued."""
    url = f"{server.base}/cds-services"
    r = httpx.get(url, headers=issuer.header(url))
    assert r.status_code == 200 and len(r.json()["services"]) == 3
    assert httpx.get(url).status_code == 401
    uuids = []
    for name, (service, category) in EXAMPLES.items():
        body = json.loads((REPO / "fhir" / "examples" / name).read_text())
        call = f"{url}/{service}"
        r = httpx.post(call, json=body, headers=issuer.header(call), timeout=10)
        assert r.status_code == 200, r.text
        cards = r.json()["cards"]
        assert category in [c["source"]["topic"]["code"] for c in cards]
        uuids.extend(c["uuid"] for c in cards)
    missing = json.loads(
        (REPO / "fhir" / "examples" / "order-sign-prefetch-missing.json").read_text()
    )
    call = f"{url}/medication-safety-order-sign"
    r = httpx.post(call, json=missing, headers=issuer.header(call), timeout=10)
    assert r.status_code == 412 and r.json()["resourceType"] == "OperationOutcome"
    fb = f"{call}/feedback"
    first = uuids[0]
    item = {"card": first, "outcome": "overridden", "outcomeTimestamp": "2026-11-20T12:00:00Z"}
    r = httpx.post(fb, json={"feedback": [item]}, headers=issuer.header(fb))
    assert r.status_code == 200 and r.json()["stored"] == 1
    return uuids


def _assert_stored(url: str, uuids: list[str]) -> None:
    maker = make_sessionmaker(make_engine(url))
    with maker() as s:
        stored = set(s.scalars(select(Card.id)))
        assert set(uuids) <= stored
        assert s.scalar(select(func.count()).select_from(Invocation)) >= 4
        assert s.scalar(select(func.count()).select_from(Feedback)) == 1


def _env(tmp_path: Path, db_url: str, issuer: TestIssuer) -> dict[str, str]:
    return {
        "CDS_DATABASE_URL": db_url,
        "CDS_AUTH": "jwt",
        "CDS_TRUSTED_ISSUERS": str(issuer.issuers_path),
        "CDS_PUBLIC_BASE_URL": "{base}",
        "TMPDIR": str(tmp_path),
    }


def test_real_http_on_sqlite_serve_migrates_itself(tmp_path: Path) -> None:
    issuer = TestIssuer(tmp_path / "ehr")
    db_url = f"sqlite:///{tmp_path / 'served.db'}"
    with ServeProcess(_env(tmp_path, db_url, issuer), cwd=tmp_path) as server:
        uuids = _exercise(server, issuer)
        log = server.output()
    assert issuer.minted and not any(t in log for t in issuer.minted)
    assert "example-access-token" not in log
    _assert_stored(db_url, uuids)


@pytest.mark.postgres
def test_real_http_on_postgres(tmp_path: Path, pg_url: str) -> None:
    upgrade(pg_url)
    issuer = TestIssuer(tmp_path / "ehr")
    with ServeProcess(_env(tmp_path, pg_url, issuer), cwd=tmp_path) as server:
        uuids = _exercise(server, issuer)
    _assert_stored(pg_url, uuids)


def test_dev_mode_warns_loudly(tmp_path: Path) -> None:
    env = {
        "CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'dev.db'}",
        "CDS_AUTH": "off",
        "TMPDIR": str(tmp_path),
    }
    with ServeProcess(env, cwd=tmp_path) as server:
        r = httpx.get(f"{server.base}/cds-services")
        assert r.status_code == 200
        assert "DEVELOPMENT MODE" in server.output()
