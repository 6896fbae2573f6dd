"""The fallback fetch against a real FHIR server (Medplum's router, see tests/fhirserver/).

Mocks prove our reading of the spec; these prove the requests we build are ones a real FHIR
server answers as intended: bare-id reference searches, token codes, ``today()`` date bounds,
``_include``, and next-link paging with a small ``_count``.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cds.errors import PrefetchUnavailable
from cds.hooks.fetch import FetchLimits
from cds.hooks.prefetch import PrefetchKey, ResolvedData, resolve_prefetch
from tests.fhirserver.fixture import FhirTestServer

NOW = datetime.now(UTC)
CREATININE = "http://loinc.org|2160-0"


def new_patient(server: FhirTestServer) -> str:
    """A fresh patient id per test: the server lives for the whole session."""
    pid = f"pat-{uuid.uuid4().hex[:12]}"
    server.seed(
        [{"resourceType": "Patient", "id": pid, "gender": "male", "birthDate": "1971-03-02"}]
    )
    return pid


def observation(pid: str, n: int, *, code: str = "2160-0", days_ago: int = 1) -> dict[str, Any]:
    when = (NOW - timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "resourceType": "Observation",
        "id": f"{pid}-obs-{code}-{n}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": 1.0 + n / 10, "unit": "mg/dL"},
    }


def resolve(
    server: FhirTestServer,
    pid: str,
    keys: dict[str, PrefetchKey],
    prefetch: dict[str, Any] | None = None,
    *,
    token: str | None = None,
    limits: FetchLimits | None = None,
) -> ResolvedData:
    return asyncio.run(
        resolve_prefetch(
            keys=keys,
            prefetch=prefetch,
            context={"userId": "Practitioner/prac-1", "patientId": pid},
            fhir_server=server.base_url,
            access_token=server.token if token is None else token,
            allowlist=[server.base_url.rsplit("/fhir", 1)[0]],
            now=NOW,
            limits=limits or FetchLimits(),
        )
    )


def test_absent_keys_fetched_with_bearer_token(fhir_server: FhirTestServer) -> None:
    pid = new_patient(fhir_server)
    fhir_server.seed(
        [
            {"resourceType": "Medication", "id": f"{pid}-med", "code": {"text": "baclofen 10 mg"}},
            {
                "resourceType": "MedicationRequest",
                "id": f"{pid}-mr",
                "status": "active",
                "intent": "order",
                "medicationReference": {"reference": f"Medication/{pid}-med"},
                "subject": {"reference": f"Patient/{pid}"},
            },
            {
                "resourceType": "Condition",
                "id": f"{pid}-cond",
                "code": {"text": "spasticity"},
                "subject": {"reference": f"Patient/{pid}"},
            },
        ]
    )
    keys = {
        "patient": PrefetchKey("Patient/{{context.patientId}}", required=True),
        "medications": PrefetchKey(
            "MedicationRequest?patient={{context.patientId}}&_include=MedicationRequest:medication",
            required=True,
        ),
        "conditions": PrefetchKey("Condition?patient={{context.patientId}}"),
    }
    patient = {"resourceType": "Patient", "id": pid}
    data = resolve(fhir_server, pid, keys, {"patient": patient})

    assert data.fetched == {"medications", "conditions"}
    assert data.problems == []
    assert [f"{r['resourceType']}/{r['id']}" for r in data.resources] == [
        f"Patient/{pid}",
        f"MedicationRequest/{pid}-mr",
        f"Medication/{pid}-med",  # the _include entry
        f"Condition/{pid}-cond",
    ]
    gets = [r for r in fhir_server.requests_seen() if r["method"] == "GET" and pid in r["path"]]
    assert {r["path"].split("?")[0] for r in gets} == {"/fhir/MedicationRequest", "/fhir/Condition"}
    assert all(r["authorization"] == f"Bearer {fhir_server.token}" for r in gets)


def test_observation_search_with_code_and_today_token(fhir_server: FhirTestServer) -> None:
    pid = new_patient(fhir_server)
    fhir_server.seed(
        [
            observation(pid, 1, days_ago=1),
            observation(pid, 2, days_ago=200),  # outside the 90-day window
            observation(pid, 3, code="29463-7", days_ago=1),  # weight, not creatinine
        ]
    )
    keys = {
        "renal": PrefetchKey(
            "Observation?patient={{context.patientId}}&code="
            + CREATININE
            + "&date=ge{{today() - 90 days}}"
        )
    }
    data = resolve(fhir_server, pid, keys)
    assert [r["id"] for r in data.resources] == [f"{pid}-obs-2160-0-1"]


def test_read_of_unknown_patient_is_no_data(fhir_server: FhirTestServer) -> None:
    keys = {"patient": PrefetchKey("Patient/{{context.patientId}}", required=True)}
    data = resolve(fhir_server, "no-such-patient", keys)
    assert data.fetched == {"patient"} and data.no_data == {"patient"}
    assert data.resources == []


def test_all_pages_gathered_with_small_count(fhir_server: FhirTestServer) -> None:
    pid = new_patient(fhir_server)
    fhir_server.seed([observation(pid, n) for n in range(7)])
    keys = {"renal": PrefetchKey("Observation?patient={{context.patientId}}&_count=2")}
    before = len(fhir_server.requests_seen())
    data = resolve(fhir_server, pid, keys, limits=FetchLimits(page_cap=5))
    assert sorted(r["id"] for r in data.resources) == sorted(
        f"{pid}-obs-2160-0-{n}" for n in range(7)
    )
    assert data.problems == []
    assert len(fhir_server.requests_seen()) - before == 4  # 2 + 2 + 2 + 1


def test_page_cap_honoured(fhir_server: FhirTestServer) -> None:
    pid = new_patient(fhir_server)
    fhir_server.seed([observation(pid, n) for n in range(7)])
    keys = {"renal": PrefetchKey("Observation?patient={{context.patientId}}&_count=2")}
    before = len(fhir_server.requests_seen())
    data = resolve(fhir_server, pid, keys, limits=FetchLimits(page_cap=2))
    assert len(data.resources) == 4
    assert len(fhir_server.requests_seen()) - before == 2
    assert data.problems == ["renal: more pages than the cap of 2; later pages not read"]


def test_wrong_token_is_refused_and_not_echoed(fhir_server: FhirTestServer) -> None:
    pid = new_patient(fhir_server)
    keys = {"patient": PrefetchKey("Patient/{{context.patientId}}", required=True)}
    with pytest.raises(PrefetchUnavailable) as caught:
        resolve(fhir_server, pid, keys, token="wrong-token-xyz")
    assert str(caught.value) == (
        "required prefetch 'patient' could not be obtained: "
        "FHIR server refused the access token (HTTP 401)"
    )
    assert "wrong-token-xyz" not in str(caught.value)


def test_service_templates_work_against_a_real_server(fhir_server: FhirTestServer) -> None:
    """The templates discovery publishes render to searches a real server accepts."""
    from cds.engine.pack import compile_pack
    from cds.hooks.services import merged_prefetch
    from tests.conftest import REPO

    keys: dict[str, PrefetchKey] = merged_prefetch([compile_pack(REPO / "rules" / "baclofen")])
    pid = new_patient(fhir_server)
    fhir_server.seed([observation(pid, 1)])
    data = resolve(fhir_server, pid, keys)
    assert {"patient", "medications"} <= data.fetched
    assert [p for p in data.problems if not p.startswith("encounter:")] == []
    assert f"Patient/{pid}" in {f"{r['resourceType']}/{r['id']}" for r in data.resources}
