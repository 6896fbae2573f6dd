"""Hypothesis fuzzing of hook and feedback bodies beyond the OpenAPI schema.

Random JSON, wrong types in a valid envelope, huge strings and arrays, deep nesting, and
invalid FHIR inside a valid CDS Hooks request: the answer is always a 2xx or a 4xx with an
OperationOutcome, never a 5xx, never a traceback.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds.settings import Settings
from cds.store.db import upgrade
from cds.web.app import create_app
from tests.conftest import FIXED_NOW
from tests.reliability.conftest import assert_outcome, typical

SERVICES = (
    "medication-safety-order-sign",
    "medication-safety-order-select",
    "medication-safety-patient-view",
)
FUZZ = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=40,
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    folder: Path = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{folder / 'cds.db'}"
    upgrade(url)
    app = create_app(Settings(auth="off", database_url=url), clock=lambda: FIXED_NOW)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def check(resp: Any) -> None:
    assert resp.status_code != 500 and resp.status_code < 500, resp.text[:800]
    assert "Traceback" not in resp.text
    if not 200 <= resp.status_code < 300:
        assert_outcome(resp.status_code, resp.text)


def post(client: TestClient, path: str, body: Any) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    check(client.post(path, content=raw, headers={"content-type": "application/json"}))


def paths_in(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a value inside ``obj`` (dict keys and list indexes)."""
    if prefix:
        yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths_in(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from paths_in(v, (*prefix, i))


def replace_at(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    out = copy.deepcopy(obj)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


TYPICAL = {
    s: typical(kind=k)
    for s, k in zip(SERVICES, ("order-sign-typical", "order-select", "patient-view"), strict=True)
}
SIGN_PATHS = [
    p for p in paths_in(TYPICAL["medication-safety-order-sign"]) if p[0] in ("context", "prefetch")
]


@FUZZ
@given(service=st.sampled_from(SERVICES), body=json_values)
def test_random_json(client: TestClient, service: str, body: Any) -> None:
    post(client, f"/cds-services/{service}", body)
    post(client, f"/cds-services/{service}/feedback", body)


@FUZZ
@given(
    service=st.sampled_from(SERVICES),
    field=st.sampled_from(
        [
            "hook",
            "hookInstance",
            "context",
            "prefetch",
            "fhirServer",
            "fhirAuthorization",
            "extension",
        ]
    ),
    value=json_values,
)
def test_wrong_types_in_the_envelope(
    client: TestClient, service: str, field: str, value: Any
) -> None:
    body = copy.deepcopy(TYPICAL[service])
    body[field] = value
    post(client, f"/cds-services/{service}", body)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(SIGN_PATHS), value=json_values)
def test_invalid_fhir_inside_a_valid_envelope(
    client: TestClient, path: tuple[Any, ...], value: Any
) -> None:
    post(
        client,
        "/cds-services/medication-safety-order-sign",
        replace_at(TYPICAL["medication-safety-order-sign"], path, value),
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.sampled_from(SIGN_PATHS),
    big=st.sampled_from(["string", "array", "object"]),
    size=st.sampled_from([10_000, 200_000]),
)
def test_huge_values(client: TestClient, path: tuple[Any, ...], big: str, size: int) -> None:
    value: Any = {
        "string": "x" * size,
        "array": list(range(size // 10)),
        "object": {f"k{i}": i for i in range(size // 20)},
    }[big]
    post(
        client,
        "/cds-services/medication-safety-order-sign",
        replace_at(TYPICAL["medication-safety-order-sign"], path, value),
    )


@pytest.mark.parametrize("depth", [100, 1_000, 100_000])
@pytest.mark.parametrize("where", ["top", "prefetch", "resource"])
def test_deeply_nested(client: TestClient, depth: int, where: str) -> None:
    nest = "[" * depth + "]" * depth
    if where == "top":
        raw = nest.encode()
    else:
        body = copy.deepcopy(TYPICAL["medication-safety-order-sign"])
        if where == "prefetch":
            body["prefetch"]["conditions"] = "__NEST__"
        else:
            body["prefetch"]["patient"]["extension"] = "__NEST__"
        raw = json.dumps(body).replace('"__NEST__"', nest).encode()
    post(client, "/cds-services/medication-safety-order-sign", raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"\xff\xfe\x00",
        b"NaN",
        b'{"a": Infinity}',
        b"[]",
        b"null",
        b'"text"',
        b"1e999999",
        b'{"hook": "order-sign", "hookInstance": "\\ud800"}',
    ],
)
def test_malformed_bytes(client: TestClient, raw: bytes) -> None:
    for service in SERVICES:
        post(client, f"/cds-services/{service}", raw)
        post(client, f"/cds-services/{service}/feedback", raw)


def test_oversized_body_is_413(client: TestClient) -> None:
    big = json.dumps({"hook": "order-sign", "pad": "x" * 5_100_000}).encode()
    resp = client.post(
        "/cds-services/medication-safety-order-sign",
        content=big,
        headers={"content-type": "application/json"},
    )
    assert_outcome(resp.status_code, resp.text, 413)
