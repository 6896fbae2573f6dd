"""Requests shaped exactly as the official CDS Hooks sandbox sends them, over real HTTP.

The sandbox is a browser client on another origin: it sends a CORS preflight, then hook
calls signed with ES384, with drafts written as ``1 {pill}`` of "Baclofen 20 MG Oral
Tablet", ``category`` and ``reasonCode`` as single objects, no route and no
``priorPrescription``. These are replayed against a real ``cds serve`` with JWT on and
the sandbox's origin allowed; a refused preflight must be loud in the log (a browser
client that is refused shows "no recommendations", as if all were well).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from cds.cards import card_extension
from cds.testing.issuer import TestIssuer
from tests.conftest import REPO
from tests.server import ServeProcess, free_port

SANDBOX = "https://sandbox.cds-hooks.org"
REQUESTS = REPO / "rules" / "baclofen" / "vignettes" / "requests"
WRITTEN_AT = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)  # the instant the requests describe
_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})(T[0-9:.]+(?:Z|[+-]\d{2}:\d{2}))?$")


def shifted(value: Any, delta: timedelta) -> Any:
    """The request with every FHIR date moved by ``delta`` (the server's clock is real)."""
    if isinstance(value, dict):
        return {k: shifted(v, delta) for k, v in value.items()}
    if isinstance(value, list):
        return [shifted(v, delta) for v in value]
    if isinstance(value, str) and (m := _DATE.match(value)):
        if m.group(2):
            t = datetime.fromisoformat(value.replace("Z", "+00:00")) + delta
            return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return (datetime.fromisoformat(m.group(1)) + delta).date().isoformat()
    return value


def _request(name: str) -> dict[str, Any]:
    body = json.loads((REQUESTS / name).read_text())
    return shifted(body, datetime.now(UTC) - WRITTEN_AT)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("sandbox")
    issuer = TestIssuer(tmp / "ehr", alg="ES384")
    port = free_port()
    env = {
        "CDS_DATABASE_URL": f"sqlite:///{tmp / 'served.db'}",
        "CDS_AUTH": "jwt",
        "CDS_TRUSTED_ISSUERS": str(issuer.issuers_path),
        "CDS_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "CDS_CORS_ORIGINS": SANDBOX,
        "TMPDIR": str(tmp),
    }
    with ServeProcess(env, cwd=tmp, port=port) as srv:
        yield srv, issuer


def _call(server: ServeProcess, issuer: TestIssuer, service: str, body: dict) -> httpx.Response:
    url = f"{server.base}/cds-services/{service}"
    pre = httpx.options(
        url,
        headers={
            "Origin": SANDBOX,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert pre.status_code == 200, pre.text
    assert pre.headers["access-control-allow-origin"] == SANDBOX
    assert "authorization" in pre.headers["access-control-allow-headers"].lower()
    headers = {**issuer.header(url), "Origin": SANDBOX}
    r = httpx.post(url, json=body, headers=headers, timeout=20)
    assert r.headers.get("access-control-allow-origin") == SANDBOX
    return r


def _cards(r: httpx.Response) -> list[tuple[str, str, str | None]]:
    assert r.status_code == 200, r.text
    return sorted(
        (c["source"]["topic"]["code"], c["indicator"], card_extension(c).get("orderId"))
        for c in r.json()["cards"]
    )


def test_sandbox_pill_order_beside_an_active_one(server) -> None:
    srv, issuer = server
    r = _call(
        srv,
        issuer,
        "medication-safety-order-sign",
        _request("sandbox-pill-new-order-beside-active.json"),
    )
    assert _cards(r) == [
        ("dose-ceiling", "critical", "request-123"),
        ("titration-rate", "warning", "request-123"),
    ]
    ceiling = next(c for c in r.json()["cards"] if c["source"]["topic"]["code"] == "dose-ceiling")
    assert "140" in ceiling["summary"]  # the true total: 80 (4 x 1 pill) + the active 60
    # evidence in links the EHR opens in a new window, never as Markdown links in detail
    assert ceiling["links"] and all(link["type"] == "absolute" for link in ceiling["links"])
    assert "](" not in ceiling["detail"]
    # removing the duplicate draft is offered; accepting it leaves the active order alone
    removal = [s for s in ceiling["suggestions"] if s["actions"][0]["type"] == "delete"]
    assert removal and removal[0]["actions"][0]["resourceId"] == "MedicationRequest/request-123"


@pytest.mark.parametrize(
    ("name", "hook"),
    [
        ("sandbox-pill-new-start.json", "order-sign"),
        ("sandbox-pill-new-start-order-select.json", "order-select"),
    ],
)
def test_sandbox_pill_new_start(server, name: str, hook: str) -> None:
    srv, issuer = server
    r = _call(srv, issuer, _service_id(hook), _request(name))
    assert _cards(r) == [("titration-rate", "warning", "request-123")]
    fix = r.json()["cards"][0]["suggestions"][0]["actions"][0]["resource"]
    dose = fix["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]
    assert dose["value"] == 0.5 and dose["code"] == "{pill}"  # half a 10 mg tablet
    assert fix["medicationCodeableConcept"]["coding"][0]["code"] == "197391"


def _service_id(hook: str) -> str:
    return {
        "order-sign": "medication-safety-order-sign",
        "order-select": "medication-safety-order-select",
    }[hook]


def test_a_refused_preflight_is_logged(server) -> None:
    srv, _ = server
    url = f"{srv.base}/cds-services/medication-safety-order-sign"
    r = httpx.options(
        url,
        headers={"Origin": "https://other-ehr.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in r.headers
    assert "CORS preflight refused" in srv.output()
    assert "other-ehr.example" in srv.output()
