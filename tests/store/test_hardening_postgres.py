"""Hardening findings seen on PostgreSQL only, checked on the real PostgreSQL server.

- #6: ids longer than 128 characters (a normal absolute URL) or holding a NUL got 503
  "audit store unavailable" there and 200 on SQLite: a data error reported as an outage.
- #11: a NUL in a console filter was a 500 there and cut the CSV export short.
- #13: the sign-in failure count under a parallel burst, on PostgreSQL's row locking.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cds.errors import UnstorableValue
from cds.settings import Settings
from cds.store import users as store_users
from cds.store.audit import InvocationRecord, bounded_ref, save_invocation
from cds.store.db import make_engine, make_sessionmaker, upgrade
from cds.store.models import Card, Invocation, RejectedRequest
from cds.web.app import create_app
from tests.conftest import FIXED_NOW
from tests.console.conftest import SECRET, build_app, login, make_user
from tests.console.seed import add_card
from tests.reliability.conftest import typical

pytestmark = pytest.mark.postgres
SIGN = "/cds-services/baclofen-order-sign"


@pytest.fixture
def pg_maker(pg_url: str) -> Iterator[sessionmaker[Session]]:
    upgrade(pg_url)
    engine = make_engine(pg_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def pg_client(pg_url: str, pg_maker: sessionmaker[Session]) -> Iterator[TestClient]:
    app = create_app(Settings(database_url=pg_url, auth="off"), clock=lambda: FIXED_NOW)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _long(prefix: str, n: int) -> str:
    return (prefix + "x" * n)[:n]


def test_long_ids_are_stored_on_postgres(
    pg_client: TestClient, pg_maker: sessionmaker[Session]
) -> None:
    body = typical()
    user = _long("https://ehr.hospital.example/fhir/R4/Practitioner/", 300)
    encounter = _long("enc-", 300)
    draft_id = _long("draft-", 300)
    body["context"]["userId"] = user
    body["context"]["encounterId"] = encounter
    body["context"]["draftOrders"]["entry"][0]["resource"]["id"] = draft_id
    resp = pg_client.post(SIGN, json=body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["cards"]
    with pg_maker() as s:
        inv = s.scalars(select(Invocation)).one()
        assert inv.user_ref == user  # whole: a normal absolute URL fits
        assert inv.encounter_ref == f"Encounter/{encounter}"
        assert {c.order_id for c in s.scalars(select(Card))} == {draft_id}


def test_very_long_ids_are_stored_bounded_with_a_hash(
    pg_client: TestClient, pg_maker: sessionmaker[Session]
) -> None:
    body = typical()
    user = _long("https://ehr.hospital.example/fhir/R4/Practitioner/", 5000)
    body["context"]["userId"] = user
    assert pg_client.post(SIGN, json=body).status_code == 200
    with pg_maker() as s:
        stored = s.scalars(select(Invocation.user_ref)).one()
    assert stored == bounded_ref(user) and len(stored) <= 512 and "sha256:" in stored


def test_a_nul_in_an_id_is_a_400_not_a_503(
    pg_client: TestClient, pg_maker: sessionmaker[Session]
) -> None:
    for field in ("userId", "encounterId"):
        body = typical()
        body["context"][field] = "Practitioner/a\x00b"
        resp = pg_client.post(SIGN, json=body)
        assert resp.status_code == 400, resp.text
        assert resp.json()["resourceType"] == "OperationOutcome"
    with pg_maker() as s:
        assert [r.status for r in s.scalars(select(RejectedRequest))] == [400, 400]


def test_a_value_postgres_refuses_is_a_data_error_not_an_outage(
    pg_maker: sessionmaker[Session],
) -> None:
    record = InvocationRecord(
        id=str(uuid.uuid4()),
        hook_instance=str(uuid.uuid4()),
        service_id="baclofen-order-sign",
        hook="order-sign",
        patient_ref="Patient/p",
        user_ref="Practitioner/a\x00b",  # past the boundary only through a bug
        encounter_ref=None,
        issuer=None,
        tenant=None,
        received_at=datetime.now(UTC),
        evaluated_at=datetime.now(UTC),
        duration_ms=1.0,
        timings={},
        pack_id=None,
        pack_version=None,
    )
    with pytest.raises(UnstorableValue):
        save_invocation(maker=pg_maker, invocation=record, cards=[])


def test_a_nul_in_a_console_filter_on_postgres(
    pg_url: str, pg_maker: sessionmaker[Session]
) -> None:
    for _ in range(3):
        add_card(pg_maker)
    account = make_user(pg_maker, "pg.nul")
    settings = Settings(
        database_url=pg_url, secure_cookies=False, session_secret=SECRET, auth="off", packs=""
    )
    with TestClient(build_app(settings, pg_maker), follow_redirects=False) as client:
        assert login(client, account).status_code == 303  # type: ignore[attr-defined]
        for query in ("rule=%00", "patient=Patient%2F%00x", "category=a%00b"):
            page = client.get(f"/review/alerts?{query}")
            assert page.status_code == 200, (query, page.text[:300])
            assert "control characters" in page.text
            export = client.get(f"/review/alerts.csv?{query}")
            assert export.status_code == 200
            assert len(export.text.strip().splitlines()) == 1 + 3  # header + every card
        assert client.get("/review/alerts/a%00b").status_code == 404


def test_a_parallel_burst_on_postgres(pg_maker: sessionmaker[Session]) -> None:
    make_user(pg_maker, "pg.burst")
    barrier = threading.Barrier(10)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt() -> None:
        barrier.wait()
        result = store_users.authenticate(
            maker=pg_maker, username="pg.burst", password="wrong password!"
        )
        with lock:
            outcomes.append(result.outcome)

    threads = [threading.Thread(target=attempt) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert outcomes.count("invalid") == store_users.MAX_FAILURES, outcomes
    assert outcomes.count("locked") == 10 - store_users.MAX_FAILURES


def test_usernames_are_case_insensitive_on_postgres(pg_maker: sessionmaker[Session]) -> None:
    make_user(pg_maker, "Élodie")
    with pytest.raises(store_users.UserError), pg_maker.begin() as s:
        store_users.create_user(session=s, username="éLODIE", password="x" * 12, role="pharmacist")
