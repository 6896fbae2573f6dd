"""The sandbox-style flow without prefetch: the service fetches what the EHR did not send
from a REAL FHIR server on 127.0.0.1 (Medplum's router), with the bearer token, and the
cards are the same as with prefetch."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds.cards import card_extension
from cds.settings import Settings
from cds.store.db import upgrade
from cds.web.app import create_app
from tests.conftest import FIXED_NOW, REPO
from tests.fhirserver.fixture import fhir_server  # noqa: F401  (the session fixture)

SIGN = "/cds-services/medication-safety-order-sign"


def _example(name: str) -> dict[str, Any]:
    return json.loads((REPO / "fhir" / "examples" / name).read_text())


def _resources(body: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for value in body["prefetch"].values():
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            out += [e["resource"] for e in value.get("entry", [])]
        elif isinstance(value, dict):
            out.append(value)
    return out


def _summary(resp) -> list[tuple[str, str, tuple[str, ...]]]:
    return sorted(
        (
            c["source"]["topic"]["code"],
            c["indicator"],
            tuple(card_extension(c)["ruleIds"]),
        )
        for c in resp.json()["cards"]
    )


@pytest.fixture
def app_for(sqlite_url):
    upgrade(sqlite_url)

    def build(allowlist: str) -> TestClient:
        return TestClient(
            create_app(
                Settings(database_url=sqlite_url, auth="off", fhir_allowlist=allowlist),
                clock=lambda: FIXED_NOW,
            )
        )

    return build


def test_fetched_data_gives_the_same_cards_as_prefetch(fhir_server, app_for) -> None:  # noqa: F811
    full = _example("order-sign-renal-moderate.json")
    fhir_server.seed(_resources(full))
    bare = copy.deepcopy(full)
    bare["prefetch"] = {"patient": full["prefetch"]["patient"]}  # like prefetch-missing
    bare["fhirServer"] = fhir_server.base_url
    bare["fhirAuthorization"] = {
        "access_token": fhir_server.token,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "user/*.read",
        "subject": "cds-service",
    }
    with app_for(fhir_server.base_url) as client:
        with_prefetch = client.post(SIGN, json=full)
        fetched = client.post(SIGN, json=bare)
    assert with_prefetch.status_code == 200 and fetched.status_code == 200, fetched.text
    assert _summary(fetched) == _summary(with_prefetch) != []
    seen = fhir_server.requests_seen()
    assert any("MedicationRequest" in r.get("path", r.get("url", "")) for r in seen)


def test_not_allowlisted_server_is_never_called(fhir_server, app_for) -> None:  # noqa: F811
    body = _example("order-sign-prefetch-missing.json")
    body["fhirServer"] = fhir_server.base_url
    before = len(fhir_server.requests_seen())
    with app_for("https://other.example.org/fhir") as client:
        resp = client.post(SIGN, json=body)
    assert resp.status_code == 412
    assert len(fhir_server.requests_seen()) == before
