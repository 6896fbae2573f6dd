"""Fuzzing by extremes, the class the value fuzzers (``test_fuzz_bodies``) never reach.

Why they missed twelve 500s (hardening #9): they draw ordinary values (``st.text`` never
makes a lone surrogate; floats rarely land on 1e308 or a subnormal in a dose or a
frequency; ``st.recursive`` with 40 leaves nests a few levels, never 200), they change one
value of a valid request, and a ``fhirServer`` only matters when a prefetch key is also
missing, which they never arrange. Here every strategy is an extreme on one of four axes:
magnitude, depth, text that is not Unicode or not printable, and shape (an array where an
object was, a Bundle whose entry is not an array), written at any path of a typical
order-sign, in the envelope, or in a FHIR server's answer for a key that must be fetched.
The answer must be a 2xx whose cards keep the card contract, or a 4xx OperationOutcome:
never a 5xx, never a traceback, and every refusal leaves a rejection row.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from cds.cards import contract_problems
from cds.settings import Settings
from cds.store.db import upgrade
from cds.store.models import RejectedRequest
from cds.web.app import create_app
from tests.conftest import FIXED_NOW
from tests.reliability.conftest import assert_outcome, typical
from tests.reliability.test_fuzz_bodies import SIGN_PATHS, TYPICAL, replace_at

SIGN = "/cds-services/medication-safety-order-sign"
FHIR = "https://fhir.hospital.test/r4"
EXTREME = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

numbers = st.sampled_from(
    [1e308, -1e308, 1.7976931348623157e308, 5e-324, 1e-320, -1e-310, 1e16, 2**64, -(2**63)]
) | st.integers(min_value=10**15 + 1, max_value=10**30)
# text that is not Unicode (lone surrogates) or not printable (C0, DEL, C1, separators)
bad_chars = st.sampled_from(
    ["\ud800", "\udfff", "\x00", "\x01", "\x1b", "\x7f", "\x85", "\u2028", "\ufeff"]
)
bad_text = st.builds(lambda a, c, b: a + c + b, st.text(max_size=8), bad_chars, st.text(max_size=8))


def _nested(depth: int, kind: str) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value] if kind == "list" else {"extension": [value]}
    return value


deep = st.builds(
    _nested, st.integers(min_value=40, max_value=600), st.sampled_from(["list", "obj"])
)
shapes = st.sampled_from(
    [
        {"resourceType": "Bundle", "entry": 5},
        {"resourceType": "Bundle", "link": "next"},
        {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient"}}] * 3},
        [],
        {},
        True,
    ]
)
extremes = numbers | bad_text | deep | shapes


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    folder: Path = tmp_path_factory.mktemp("fuzz-extremes")
    url = f"sqlite:///{folder / 'cds.db'}"
    upgrade(url)
    app = create_app(
        Settings(auth="off", database_url=url, fhir_allowlist=FHIR), clock=lambda: FIXED_NOW
    )
    with TestClient(app, raise_server_exceptions=False) as c:
        c.app_state = app.state  # type: ignore[attr-defined]
        yield c


def rejections(client: TestClient) -> int:
    with client.app_state.maker() as s:  # type: ignore[attr-defined]
        return int(s.scalar(select(func.count()).select_from(RejectedRequest)) or 0)


def check(client: TestClient, body: Any) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()  # ascii: \\ud800 stays
    before = rejections(client)
    resp = client.post(SIGN, content=raw, headers={"content-type": "application/json"})
    assert resp.status_code < 500, resp.text[:800]
    assert "Traceback" not in resp.text
    if 200 <= resp.status_code < 300:
        for card in resp.json()["cards"]:
            # A suggestion echoes the draft as the EHR sent it: its empty objects and nulls
            # are the request's, not ours (reported, left to the suggestions' owners).
            problems = [p for p in contract_problems(card) if ".actions[" not in p]
            assert problems == [], card
    else:
        assert_outcome(resp.status_code, resp.text)
        assert rejections(client) == before + 1  # every refusal leaves its row


@EXTREME
@given(path=st.sampled_from(SIGN_PATHS), value=extremes)
def test_extremes_anywhere_in_a_request(
    client: TestClient, path: tuple[Any, ...], value: Any
) -> None:
    check(client, replace_at(TYPICAL["medication-safety-order-sign"], path, value))


@EXTREME
@given(
    field=st.sampled_from(["hookInstance", "fhirServer", "hook", "extension", "prefetch"]),
    value=extremes,
    drop=st.sampled_from(["medications", "conditions", "renal", None]),
)
def test_extremes_in_the_envelope(
    client: TestClient, field: str, value: Any, drop: str | None
) -> None:
    body = copy.deepcopy(TYPICAL["medication-safety-order-sign"])
    if drop:  # so that fhirServer is used for the missing key
        del body["prefetch"][drop]
        body["fhirServer"] = FHIR
    body[field] = value
    check(client, body)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=st.sampled_from(["medications", "conditions", "renal"]),
    answer=st.one_of(
        extremes.map(lambda v: json.dumps(v).encode()),
        st.integers(min_value=1000, max_value=200_000).map(
            lambda n: b'{"resourceType": "Bundle", "entry": ' + b"[" * n + b"]" * n + b"}"
        ),
        st.sampled_from([b"\xff\xfe", b"", b"{", b'{"resourceType": "Bundle", "entry": 1e999}']),
    ),
    next_link=st.sampled_from(
        [None, FHIR + "/..;/admin", FHIR + "/%2e%2e;/x", "http://x\x01y/", FHIR + "/ok?p=2"]
    ),
)
def test_extremes_from_the_fhir_server(
    client: TestClient, key: str, answer: bytes, next_link: str | None
) -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        if next_link and len(calls) == 1:
            page = {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [],
                "link": [{"relation": "next", "url": next_link}],
            }
            return httpx.Response(200, json=page, headers={"content-type": "application/fhir+json"})
        return httpx.Response(
            200, content=answer, headers={"content-type": "application/fhir+json"}
        )

    client.app_state.http = httpx.AsyncClient(transport=httpx.MockTransport(handler))  # type: ignore[attr-defined]
    body = copy.deepcopy(TYPICAL["medication-safety-order-sign"])
    del body["prefetch"][key]
    body["fhirServer"] = FHIR
    check(client, body)
    assert all(c.startswith(FHIR + "/") for c in calls)
    assert not any(".." in c or "%2e" in c.lower() for c in calls)


def test_the_typical_request_is_fine(client: TestClient) -> None:
    """The base every case above mutates gives cards (so the cases test something)."""
    resp = client.post(SIGN, json=typical())
    assert resp.status_code == 200 and resp.json()["cards"]
