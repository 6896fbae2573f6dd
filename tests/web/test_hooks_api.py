"""The CDS Hooks API in process (TestClient): discovery, calls, errors, feedback, JWT."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from cds.settings import Settings
from cds.store.db import make_engine, make_sessionmaker, upgrade
from cds.store.models import Card, Feedback, Invocation, RejectedRequest
from cds.testing.issuer import TestIssuer
from cds.web.app import create_app
from tests.conftest import FIXED_NOW, PACK_VERSION, REPO

EXAMPLES = REPO / "fhir" / "examples"
SIGN = "/cds-services/medication-safety-order-sign"


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / name).read_text())


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    upgrade(sqlite_url)
    return sqlite_url


@pytest.fixture
def client(db_url: str):
    settings = Settings(database_url=db_url, auth="off", secure_cookies=False)
    app = create_app(settings, clock=lambda: FIXED_NOW)
    with TestClient(app) as c:
        c.maker = app.state.maker  # type: ignore[attr-defined]
        yield c


def count(maker, model) -> int:
    with maker() as s:
        return s.scalar(select(func.count()).select_from(model))


def assert_outcome(resp, status: int, text: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"] and body["issue"][0]["diagnostics"]
    if text:
        assert text in json.dumps(body)
    assert "Traceback" not in resp.text
    return body


def test_discovery_lists_three_services_with_prefetch(client) -> None:
    resp = client.get("/cds-services")
    assert resp.status_code == 200
    services = {s["id"]: s for s in resp.json()["services"]}
    assert {s["hook"] for s in services.values()} == {"order-select", "order-sign", "patient-view"}
    for s in services.values():
        assert s["title"] and s["description"] and s["usageRequirements"]
        assert s["version"].startswith("baclofen-")
        for key in (
            "patient",
            "medications",
            "renal",
            "weight",
            "vitals",
            "conditions",
            "encounter",
        ):
            assert key in s["prefetch"]


@pytest.mark.parametrize(
    "name",
    [
        "order-sign-renal-moderate.json",
        "order-sign-above-ceiling.json",
        "order-sign-abrupt-stop.json",
    ],
)
def test_examples_give_cards_that_are_stored(client, name) -> None:
    resp = client.post(SIGN, json=example(name))
    assert resp.status_code == 200, resp.text
    cards = resp.json()["cards"]
    assert len(cards) == 1
    with client.maker() as s:
        stored = s.get(Card, cards[0]["uuid"])
        assert stored is not None and stored.card_json == cards[0]
        assert stored.pack_version == PACK_VERSION
        inv = s.get(Invocation, stored.invocation_id)
        assert inv.hook_instance == example(name)["hookInstance"]
        assert inv.patient_ref == "Patient/pat-1"


def test_patient_view_example(client) -> None:
    resp = client.post(
        "/cds-services/medication-safety-patient-view",
        json=example("patient-view-itb-refill-overdue.json"),
    )
    assert resp.status_code == 200
    [card] = resp.json()["cards"]
    assert card["indicator"] == "critical"


def test_no_problem_gives_empty_cards(client) -> None:
    body = example("order-sign-renal-moderate.json")
    obs = body["prefetch"]["renal"]["entry"][0]["resource"]
    obs["valueQuantity"]["value"] = 0.9
    resp = client.post(SIGN, json=body)
    assert resp.json() == {"cards": []}


def test_prefetch_missing_without_server_is_412(client) -> None:
    resp = client.post(SIGN, json=example("order-sign-prefetch-missing.json"))
    assert_outcome(resp, 412, "medications")
    assert count(client.maker, RejectedRequest) == 1


@pytest.mark.parametrize(
    ("mutate", "status", "text"),
    [
        (lambda b: b.update(hook="patient-view"), 400, "does not match"),
        (lambda b: b.update(hookInstance="not-a-uuid"), 400, "UUID"),
        (lambda b: b["context"].pop("patientId"), 400, "context.patientId"),
        (lambda b: b["context"].update(draftOrders=[]), 400, "Bundle"),
        (lambda b: b.pop("context"), 400, "context"),
        (lambda b: b.update(prefetch=[1, 2]), 400, "prefetch"),
        (lambda b: b.update(fhirAuthorization="token"), 400, "fhirAuthorization"),
    ],
)
def test_bad_requests_are_400_operation_outcomes(client, mutate, status, text) -> None:
    body = example("order-sign-renal-moderate.json")
    mutate(body)
    assert_outcome(client.post(SIGN, json=body), status, text)


def test_invalid_patient_is_422_and_missing_patient_412(client) -> None:
    body = example("order-sign-renal-moderate.json")
    body["prefetch"]["patient"]["birthDate"] = "the day before yesterday"
    assert_outcome(client.post(SIGN, json=body), 422, "prefetch.patient.birthDate")
    body = example("order-sign-renal-moderate.json")
    body["prefetch"]["patient"]["id"] = "someone-else"
    assert_outcome(client.post(SIGN, json=body), 422, "context.patientId")
    body = example("order-sign-renal-moderate.json")
    body["prefetch"]["patient"] = None
    assert_outcome(client.post(SIGN, json=body), 412, "patient")


def test_malformed_json_is_400(client) -> None:
    resp = client.post(SIGN, content=b'{"hook": ', headers={"content-type": "application/json"})
    assert_outcome(resp, 400, "not valid JSON")
    resp = client.post(SIGN, content=b"[NaN]", headers={"content-type": "application/json"})
    assert_outcome(resp, 400)
    resp = client.post(SIGN, content=b"", headers={"content-type": "application/json"})
    assert_outcome(resp, 400, "empty")


def test_deeply_nested_json_is_400_not_500(client) -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    assert_outcome(client.post(SIGN, content=body), 400)


def test_unknown_service_is_404(client) -> None:
    assert_outcome(
        client.post("/cds-services/nope", json=example("order-sign-renal-moderate.json")),
        404,
        "nope",
    )
    assert_outcome(client.get("/nowhere"), 404)


def test_wrong_method_is_405_outcome(client) -> None:
    assert_outcome(client.get(SIGN), 405)


def test_body_over_the_cap_is_413(db_url) -> None:
    app = create_app(
        Settings(database_url=db_url, auth="off", max_body_bytes=2000), clock=lambda: FIXED_NOW
    )
    with TestClient(app) as c:
        assert_outcome(c.post(SIGN, json=example("order-sign-renal-moderate.json")), 413)


def test_order_select_selections_must_be_drafts(client) -> None:
    body = example("order-sign-renal-moderate.json")
    body["hook"] = "order-select"
    body["context"]["selections"] = ["MedicationRequest/other"]
    assert_outcome(
        client.post("/cds-services/medication-safety-order-select", json=body), 400, "selections"
    )
    body["context"]["selections"] = ["MedicationRequest/draft-1"]
    resp = client.post("/cds-services/medication-safety-order-select", json=body)
    assert resp.status_code == 200
    assert [c["source"]["topic"]["code"] for c in resp.json()["cards"]] == ["renal-adjustment"]


def test_real_ehr_quirks_are_tolerated(client) -> None:
    body = example("order-sign-renal-moderate.json")
    body["unknownTopLevel"] = {"x": 1}
    obs = body["prefetch"]["renal"]["entry"][0]["resource"]
    obs["category"] = obs["category"][0]  # an object where an array belongs
    body["prefetch"]["weight"]["entry"].append(
        {"resource": {"resourceType": "Observation", "id": "junk", "status": 7}}
    )
    resp = client.post(SIGN, json=body)
    assert resp.status_code == 200, resp.text
    assert "renal-adjustment" in [c["source"]["topic"]["code"] for c in resp.json()["cards"]]


def test_order_select_draft_without_medication_is_not_an_error(client) -> None:
    body = example("order-sign-renal-moderate.json")
    body["hook"] = "order-select"
    draft = body["context"]["draftOrders"]["entry"][0]["resource"]
    draft.pop("medicationCodeableConcept")
    body["context"]["selections"] = ["MedicationRequest/draft-1"]
    resp = client.post("/cds-services/medication-safety-order-select", json=body)
    assert resp.status_code == 200
    assert resp.json() == {"cards": []}


def test_store_down_is_503_and_opt_in_serves_unaudited(tmp_path) -> None:
    bad = f"sqlite:///{tmp_path / 'missing-dir' / 'cds.db'}"
    app = create_app(Settings(database_url=bad, auth="off"), clock=lambda: FIXED_NOW)
    with TestClient(app) as c:
        assert_outcome(
            c.post(SIGN, json=example("order-sign-renal-moderate.json")), 503, "audit store"
        )
    app = create_app(
        Settings(database_url=bad, auth="off", serve_unaudited=True), clock=lambda: FIXED_NOW
    )
    with TestClient(app) as c:
        resp = c.post(SIGN, json=example("order-sign-renal-moderate.json"))
        assert resp.status_code == 200 and len(resp.json()["cards"]) == 1


# ---- feedback -----------------------------------------------------------------------------


def _issue_card(client) -> dict[str, Any]:
    return client.post(SIGN, json=example("order-sign-renal-moderate.json")).json()["cards"][0]


def test_feedback_accepted_is_stored_once(client) -> None:
    card = _issue_card(client)
    item = {
        "card": card["uuid"],
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
        "outcomeTimestamp": "2026-11-20T12:01:00Z",
    }
    url = f"{SIGN}/feedback"
    assert client.post(url, json={"feedback": [item]}).json() == {"stored": 1, "duplicates": 0}
    assert client.post(url, json={"feedback": [item, item]}).json() == {
        "stored": 0,
        "duplicates": 2,
    }
    assert count(client.maker, Feedback) == 1
    with client.maker() as s:
        assert s.get(Card, card["uuid"]).feedback_outcome == "accepted"


def test_feedback_batch_keeps_valid_items_and_names_rejected_ones(client) -> None:
    card = _issue_card(client)
    good = {
        "card": card["uuid"],
        "outcome": "overridden",
        "overrideReason": {"reason": card["overrideReasons"][0], "userComment": "seen"},
        "outcomeTimestamp": "2026-11-20T12:02:00Z",
    }
    items = [
        good,
        {
            "card": "00000000-0000-0000-0000-000000000000",
            "outcome": "overridden",
            "outcomeTimestamp": "2026-11-20T12:02:00Z",
        },
        {"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-11-20T12:02Z"},
        {"card": card["uuid"], "outcome": "maybe", "outcomeTimestamp": "2026-11-20T12:02:00Z"},
        {
            "card": card["uuid"],
            "outcome": "accepted",
            "acceptedSuggestions": [{"id": "not-offered"}],
            "outcomeTimestamp": "2026-11-20T12:02:00Z",
        },
        "junk",
    ]
    resp = client.post(f"{SIGN}/feedback", json={"feedback": items})
    body = assert_outcome(resp, 400, "5 feedback item(s) rejected; 1 stored")
    named = {i["expression"][0] for i in body["issue"][1:]}
    assert named == {f"feedback[{i}]" for i in range(1, 6)}
    assert count(client.maker, Feedback) == 1


def test_feedback_for_another_services_card_is_rejected(client) -> None:
    card = _issue_card(client)
    item = {
        "card": card["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-20T12:01:00Z",
    }
    resp = client.post(
        "/cds-services/medication-safety-patient-view/feedback", json={"feedback": [item]}
    )
    assert_outcome(resp, 400, "not issued by this service")


def test_feedback_body_must_be_a_feedback_array(client) -> None:
    assert_outcome(client.post(f"{SIGN}/feedback", json={"items": []}), 400, "feedback")
    assert_outcome(client.post(f"{SIGN}/feedback", json={"feedback": []}), 400, "empty")


# ---- JWT ----------------------------------------------------------------------------------


@pytest.fixture
def jwt_client(db_url, tmp_path):
    issuer = TestIssuer(tmp_path / "ehr")
    settings = Settings(
        database_url=db_url,
        auth="jwt",
        trusted_issuers=issuer.issuers_path,
        public_base_url="https://cds.hospital.test",
    )
    app = create_app(settings, clock=lambda: FIXED_NOW)
    with TestClient(app) as c:
        c.issuer = issuer  # type: ignore[attr-defined]
        c.maker = app.state.maker  # type: ignore[attr-defined]
        yield c


def test_jwt_required_and_bare_401(jwt_client) -> None:
    for path, method in (("/cds-services", "GET"), (SIGN, "POST"), (f"{SIGN}/feedback", "POST")):
        resp = jwt_client.request(method, path, json={} if method == "POST" else None)
        body = assert_outcome(resp, 401)
        assert body["issue"][0]["diagnostics"] == "authentication failed"
        assert resp.headers["www-authenticate"] == "Bearer"


def test_jwt_valid_token_with_audience_of_the_public_url(jwt_client) -> None:
    aud = "https://cds.hospital.test" + SIGN
    resp = jwt_client.post(
        SIGN, json=example("order-sign-renal-moderate.json"), headers=jwt_client.issuer.header(aud)
    )
    assert resp.status_code == 200, resp.text
    with jwt_client.maker() as s:
        inv = s.scalars(select(Invocation)).one()
        assert inv.issuer == jwt_client.issuer.iss


def test_jwt_wrong_audience_and_replay_refused(jwt_client) -> None:
    wrong = jwt_client.issuer.header("https://cds.hospital.test/cds-services/other")
    assert_outcome(
        jwt_client.post(SIGN, json=example("order-sign-renal-moderate.json"), headers=wrong), 401
    )
    headers = jwt_client.issuer.header("https://cds.hospital.test" + SIGN)
    body = example("order-sign-renal-moderate.json")
    assert jwt_client.post(SIGN, json=body, headers=headers).status_code == 200
    assert_outcome(jwt_client.post(SIGN, json=body, headers=headers), 401)


def test_tokens_never_reach_logs_or_database(jwt_client, caplog) -> None:
    caplog.set_level("DEBUG")
    token = jwt_client.issuer.token("https://cds.hospital.test" + SIGN)
    body = copy.deepcopy(example("order-sign-prefetch-missing.json"))
    body["fhirAuthorization"]["access_token"] = "secret-access-token-xyz"
    jwt_client.post(SIGN, json=body, headers={"Authorization": f"Bearer {token}"})
    jwt_client.post(SIGN, json=body, headers={"Authorization": f"Bearer {token}"})  # replay
    assert token not in caplog.text and "secret-access-token-xyz" not in caplog.text
    db_path = Path(jwt_client.maker.kw["bind"].url.database)
    raw = db_path.read_bytes() + (
        db_path.with_name(db_path.name + "-wal").read_bytes()
        if db_path.with_name(db_path.name + "-wal").exists()
        else b""
    )
    assert token.encode() not in raw and b"secret-access-token-xyz" not in raw


def test_cors_only_for_configured_origins(db_url) -> None:
    app = create_app(
        Settings(database_url=db_url, auth="off", cors_origins="https://ehr.hospital.test")
    )
    with TestClient(app) as c:
        ok = c.options(
            "/cds-services",
            headers={
                "Origin": "https://ehr.hospital.test",
                "Access-Control-Request-Method": "POST",
            },
        )
        assert ok.headers.get("access-control-allow-origin") == "https://ehr.hospital.test"
        other = c.get("/cds-services", headers={"Origin": "https://evil.test"})
        assert "access-control-allow-origin" not in other.headers


def test_make_engine_sqlite_is_wal(db_url) -> None:
    engine = make_engine(db_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    make_sessionmaker(engine)


def test_legacy_service_ids_still_answer_and_take_feedback(client) -> None:
    """EHRs registered the baclofen-* service ids before the medication-safety services; a
    pack keeps them as aliases (pack.yaml service_aliases): the same service, the same
    cards, and feedback on a card works under either id."""
    body = example("order-sign-renal-moderate.json")
    old = client.post("/cds-services/baclofen-order-sign", json=body)
    assert old.status_code == 200
    card = old.json()["cards"][0]
    services = [s["id"] for s in client.get("/cds-services").json()["services"]]
    assert "baclofen-order-sign" not in services  # discovery lists the services, not aliases
    item = {
        "card": card["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-20T12:00:00Z",
    }
    r = client.post(
        "/cds-services/medication-safety-order-sign/feedback", json={"feedback": [item]}
    )
    assert r.status_code == 200, r.text
