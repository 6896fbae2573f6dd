"""resolve_prefetch: the four states of a prefetch key, with the network mocked out.

The rules differ by state (present, null, OperationOutcome, absent), and confusing them is a
clinical bug: refetching a ``null`` key wastes the deadline, trusting an OperationOutcome hides
missing data, and a silent gap in a required key would let the rules run on half a chart.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from cds.errors import PrefetchUnavailable
from cds.hooks.fetch import FetchLimits
from cds.hooks.prefetch import PrefetchKey, ResolvedData, resolve_prefetch

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
BASE = "https://ehr.example.org/fhir"
TOKEN = "secret-access-token-123"
CONTEXT = {"userId": "Practitioner/prac-1", "patientId": "pat-1"}
KEYS = {
    "patient": PrefetchKey("Patient/{{context.patientId}}", required=True),
    "medications": PrefetchKey("MedicationRequest?patient={{context.patientId}}", required=True),
    "conditions": PrefetchKey("Condition?patient={{context.patientId}}"),
    "encounter": PrefetchKey("Encounter/{{context.encounterId}}"),
}
PATIENT = {"resourceType": "Patient", "id": "pat-1", "birthDate": "1971-03-02"}
MED = {"resourceType": "MedicationRequest", "id": "mr-1", "status": "active"}
MEDICATION = {"resourceType": "Medication", "id": "med-1"}
CONDITION = {"resourceType": "Condition", "id": "c-1"}
OUTCOME = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}


def searchset(*resources: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
        **extra,
    }


class FakeFhir:
    """A MockTransport-backed FHIR server: route by resource type, record every request."""

    def __init__(self, routes: dict[str, Callable[[httpx.Request], httpx.Response]] | None = None):
        self.requests: list[httpx.Request] = []
        self.routes = routes or {}

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        rtype = request.url.path.removeprefix("/fhir/").split("/")[0]
        if rtype in self.routes:
            return self.routes[rtype](request)
        if rtype == "Patient":
            return fhir(PATIENT)
        if rtype == "MedicationRequest":
            return fhir(searchset(MED))
        if rtype == "Condition":
            return fhir(searchset(CONDITION))
        return httpx.Response(404)

    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]


def fhir(body: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(
        status, content=json.dumps(body), headers={"Content-Type": "application/fhir+json"}
    )


def resolve(
    prefetch: dict[str, Any] | None,
    fake: FakeFhir | None = None,
    *,
    keys: dict[str, PrefetchKey] = KEYS,
    fhir_server: str | None = BASE,
    allowlist: list[str] | None = None,
    context: dict[str, Any] = CONTEXT,
) -> ResolvedData:
    fake = fake or FakeFhir()

    async def go() -> ResolvedData:
        async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as client:
            return await resolve_prefetch(
                keys=keys,
                prefetch=prefetch,
                context=context,
                fhir_server=fhir_server,
                access_token=TOKEN,
                allowlist=[BASE] if allowlist is None else allowlist,
                now=NOW,
                limits=FetchLimits(),
                client=client,
            )

    return asyncio.run(go())


def ids(data: ResolvedData) -> list[str]:
    return [f"{r['resourceType']}/{r['id']}" for r in data.resources]


FULL = {
    "patient": PATIENT,
    "medications": searchset(MED),
    "conditions": searchset(CONDITION),
    "encounter": None,
}


def test_everything_prefetched_fetches_nothing() -> None:
    fake = FakeFhir()
    data = resolve(FULL, fake)
    assert fake.requests == []
    assert ids(data) == ["Patient/pat-1", "MedicationRequest/mr-1", "Condition/c-1"]
    assert data.fetched == set()
    assert data.no_data == {"encounter"}
    assert data.problems == []
    assert data.by_key["medications"] == [MED]


def test_null_is_no_data_and_never_fetched() -> None:
    fake = FakeFhir()
    data = resolve({**FULL, "conditions": None}, fake)
    assert fake.requests == []
    assert data.no_data == {"conditions", "encounter"}
    assert "Condition/c-1" not in ids(data)


def test_absent_key_is_fetched_with_the_bearer_token() -> None:
    fake = FakeFhir()
    data = resolve({"patient": PATIENT, "encounter": None}, fake)
    assert sorted(fake.paths()) == ["/fhir/Condition", "/fhir/MedicationRequest"]
    for request in fake.requests:
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert request.url.params["patient"] == "pat-1"
    assert data.fetched == {"medications", "conditions"}
    assert ids(data) == ["Patient/pat-1", "MedicationRequest/mr-1", "Condition/c-1"]


def test_prefetch_none_fetches_every_key() -> None:
    fake = FakeFhir()
    data = resolve(None, fake)
    assert sorted(fake.paths()) == [
        "/fhir/Condition",
        "/fhir/MedicationRequest",
        "/fhir/Patient/pat-1",
    ]
    assert data.fetched == {"patient", "medications", "conditions"}
    # encounterId is not in the context: that key cannot be fetched and counts as no data
    assert data.no_data == {"encounter"}
    assert data.problems == ["encounter: not prefetched and the call has no context.encounterId"]


def test_operation_outcome_value_is_treated_as_missing() -> None:
    fake = FakeFhir()
    data = resolve({**FULL, "medications": OUTCOME}, fake)
    assert fake.paths() == ["/fhir/MedicationRequest"]
    assert data.fetched == {"medications"}
    assert "MedicationRequest/mr-1" in ids(data)
    assert all(r["resourceType"] != "OperationOutcome" for r in data.resources)


@pytest.mark.parametrize("junk", ["text", 42, [], {"id": "x"}, {"resourceType": ""}])
def test_non_fhir_value_is_treated_as_missing(junk: Any) -> None:
    fake = FakeFhir()
    data = resolve({**FULL, "conditions": junk}, fake)
    assert fake.paths() == ["/fhir/Condition"]
    assert data.fetched == {"conditions"}


def test_required_key_unobtainable_raises_412() -> None:
    fake = FakeFhir({"MedicationRequest": lambda r: httpx.Response(503)})
    with pytest.raises(PrefetchUnavailable) as caught:
        resolve({**FULL, "medications": OUTCOME}, fake)
    assert str(caught.value) == (
        "required prefetch 'medications' could not be obtained: FHIR server answered HTTP 503"
    )
    assert caught.value.status == 412
    assert caught.value.expression == ["prefetch.medications"]


def test_optional_key_unobtainable_is_no_data_with_a_note() -> None:
    fake = FakeFhir({"Condition": lambda r: httpx.Response(500)})
    data = resolve({"patient": PATIENT, "medications": searchset(MED)}, fake)
    assert "conditions" in data.no_data
    assert "conditions" not in data.fetched
    assert "conditions: FHIR server answered HTTP 500" in data.problems


def test_not_allowlisted_server_is_never_called() -> None:
    fake = FakeFhir()
    data = resolve(
        {"patient": PATIENT, "medications": searchset(MED)},
        fake,
        allowlist=["https://other.example.org/fhir"],
    )
    assert fake.requests == []
    assert data.no_data == {"conditions", "encounter"}
    assert "conditions: not prefetched and fhirServer is not on the allowlist" in data.problems


def test_not_allowlisted_required_key_raises() -> None:
    fake = FakeFhir()
    with pytest.raises(PrefetchUnavailable, match="required prefetch 'patient'.*allowlist"):
        resolve({"medications": searchset(MED)}, fake, allowlist=[])
    assert fake.requests == []


def test_no_fhir_server_required_key_raises() -> None:
    with pytest.raises(PrefetchUnavailable, match="'patient'.*no fhirServer"):
        resolve({}, fhir_server=None)


def test_prefetched_bundle_next_pages_are_not_followed() -> None:
    fake = FakeFhir()
    paged = searchset(MED, link=[{"relation": "next", "url": f"{BASE}/MedicationRequest?p=2"}])
    data = resolve({**FULL, "medications": paged}, fake)
    assert fake.requests == []
    assert "MedicationRequest/mr-1" in ids(data)
    assert "medications: prefetched Bundle has more pages (not followed)" in data.problems


def test_include_entries_kept_outcome_entries_dropped_duplicates_merged() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"resource": MED, "search": {"mode": "match"}},
            {"resource": MEDICATION, "search": {"mode": "include"}},
            {"resource": OUTCOME, "search": {"mode": "outcome"}},
            {"resource": PATIENT, "search": {"mode": "include"}},  # also under "patient"
            {"search": {"mode": "match"}},  # no resource: skipped, not fatal
        ],
    }
    data = resolve({**FULL, "medications": bundle})
    assert ids(data) == [
        "Patient/pat-1",
        "MedicationRequest/mr-1",
        "Medication/med-1",
        "Condition/c-1",
    ]


def test_fetched_empty_search_is_fetched_and_no_data() -> None:
    fake = FakeFhir({"Condition": lambda r: fhir(searchset())})
    data = resolve({"patient": PATIENT, "medications": searchset(MED)}, fake)
    assert "conditions" in data.fetched
    assert "conditions" in data.no_data
    assert data.by_key["conditions"] == []


def test_read_404_is_no_data_not_a_failure() -> None:
    keys = {**KEYS, "encounter": PrefetchKey("Encounter/{{context.encounterId}}")}
    fake = FakeFhir()  # unknown types answer 404
    data = resolve(
        {"patient": PATIENT, "medications": searchset(MED), "conditions": searchset()},
        fake,
        keys=keys,
        context={**CONTEXT, "encounterId": "enc-1"},
    )
    assert fake.paths() == ["/fhir/Encounter/enc-1"]
    assert "encounter" in data.fetched and "encounter" in data.no_data
    assert data.problems == []


def test_search_404_is_a_failure() -> None:
    fake = FakeFhir({"MedicationRequest": lambda r: httpx.Response(404)})
    with pytest.raises(PrefetchUnavailable, match="HTTP 404"):
        resolve({"patient": PATIENT}, fake)


def test_operation_outcome_body_from_the_server_is_a_failure() -> None:
    fake = FakeFhir({"Condition": lambda r: fhir(OUTCOME)})
    data = resolve({"patient": PATIENT, "medications": searchset(MED)}, fake)
    assert "conditions: FHIR server returned an OperationOutcome (timeout)" in data.problems


def test_undeclared_prefetch_keys_are_used_as_given_never_fetched() -> None:
    """A site may prefetch under its own key names: the resources are used (the clinical
    layer still drops other patients' data); an undeclared key is never fetched, and junk
    under one (not a FHIR resource, an OperationOutcome) is ignored."""
    data = resolve(
        {
            **FULL,
            "extra": {"resourceType": "Observation", "id": "o-1"},
            "junk": {"not": "fhir"},
            "failed": {"resourceType": "OperationOutcome", "id": "oo"},
        }
    )
    assert "Observation/o-1" in ids(data)
    assert "OperationOutcome/oo" not in ids(data)
    assert "extra" not in data.fetched


def test_token_never_in_problems_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    fake = FakeFhir(
        {
            "Condition": lambda r: httpx.Response(401),
            "MedicationRequest": lambda r: httpx.Response(500, text=TOKEN),
        }
    )
    with pytest.raises(PrefetchUnavailable) as caught:
        resolve({"patient": PATIENT}, fake)
    assert TOKEN not in str(caught.value)
    data = resolve({"patient": PATIENT, "medications": searchset(MED)}, fake)
    assert "conditions: FHIR server refused the access token (HTTP 401)" in data.problems
    assert not any(TOKEN in p for p in data.problems)
    assert TOKEN not in caplog.text  # every logger, httpx's included
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("cds."))
    assert "key=conditions host=ehr.example.org status=401" in ours
    assert "pat-1" not in ours  # our logs carry no patient ids (httpx's INFO log has the URL)
