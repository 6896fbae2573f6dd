"""fetch_all and is_allowlisted: where the token may go, and how much a server may cost us."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import pytest

from cds.hooks.fetch import FetchLimits, FetchResult, fetch_all, is_allowlisted

BASE = "https://ehr.example.org/fhir"
TOKEN = "secret-access-token-456"


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://ehr.example.org/fhir", True),
        ("https://ehr.example.org/fhir/", True),
        ("HTTPS://EHR.Example.ORG/fhir", True),
        ("https://ehr.example.org:443/fhir", True),
        ("https://ehr.example.org/fhir/r4", True),  # under the base, on a path boundary
        ("https://ehr.example.org/fhirx", False),  # a prefix, but not a path boundary
        ("https://ehr.example.org/", False),  # above the base
        ("https://ehr.example.org/fhir/../admin", False),
        ("https://ehr.example.org/fhir/%2e%2e/admin", False),
        ("http://ehr.example.org/fhir", False),  # scheme differs
        ("https://ehr.example.org:8443/fhir", False),  # port differs
        ("https://ehr.example.org.evil.test/fhir", False),
        ("https://user:pw@ehr.example.org/fhir", False),
        ("https://ehr.example.org/fhir?x=1", False),
        ("https://ehr.example.org/fhir#frag", False),
        ("ftp://ehr.example.org/fhir", False),
        ("not a url", False),
        ("https://[::1/fhir", False),
        ("http://127.0.0.1:8090/fhir", True),  # second allowlist entry, default port explicit
        ("http://127.0.0.1:8090/fhir/", True),
        ("http://127.0.0.1/fhir", False),
    ],
)
def test_is_allowlisted(url: str, allowed: bool) -> None:
    allowlist = ["https://ehr.example.org/fhir/", "http://127.0.0.1:8090/fhir"]
    assert is_allowlisted(url, allowlist) is allowed


def test_allowlist_root_base_allows_everything_on_that_origin() -> None:
    assert is_allowlisted("https://ehr.example.org/any/fhir", ["https://ehr.example.org"])
    assert is_allowlisted("http://h:80/fhir", ["http://H/"])
    assert not is_allowlisted("https://ehr.example.org/fhir", [])


Handler = (
    Callable[[httpx.Request], httpx.Response]
    | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
)


def fetch(
    queries: dict[str, str],
    handler: Handler,
    *,
    limits: FetchLimits | None = None,
    token: str | None = TOKEN,
) -> dict[str, FetchResult]:
    async def go() -> dict[str, FetchResult]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await fetch_all(
                base=BASE,
                queries=queries,
                access_token=token,
                limits=limits or FetchLimits(),
                client=client,
            )

    return asyncio.run(go())


def fhir(body: Any, status: int = 200, ctype: str = "application/fhir+json") -> httpx.Response:
    return httpx.Response(status, content=json.dumps(body), headers={"Content-Type": ctype})


def page(n: int, next_url: str | None) -> httpx.Response:
    body: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": {"resourceType": "Observation", "id": f"o{n}"}}],
    }
    if next_url:
        body["link"] = [{"relation": "self", "url": "x"}, {"relation": "next", "url": next_url}]
    return fhir(body)


def test_relative_templates_join_the_base() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return fhir({"resourceType": "Patient", "id": "p"})

    fetch({"a": "Patient/p", "b": "/Patient/p"}, handler)
    assert seen == [f"{BASE}/Patient/p"] * 2


def test_no_authorization_header_without_a_token() -> None:
    headers: list[httpx.Headers] = []

    def handler(request: httpx.Request) -> httpx.Response:
        headers.append(request.headers)
        return fhir({"resourceType": "Patient", "id": "p"})

    fetch({"a": "Patient/p"}, handler, token=None)
    assert "Authorization" not in headers[0]
    assert "fhir+json" in headers[0]["Accept"]


def test_pages_are_followed_relative_links_resolved() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        n = int(request.url.params.get("page", "1"))
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        if n == 1:
            return page(1, f"{BASE}/Observation?page=2")
        if n == 2:
            return page(2, "Observation?page=3")  # relative: resolved against the current URL
        return page(3, None)

    result = fetch({"obs": "Observation?code=x"}, handler)["obs"]
    assert [r["id"] for r in result.resources] == ["o1", "o2", "o3"]
    assert result.notes == ()


def test_page_cap_counts_the_first_page() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        n = int(request.url.params.get("page", "1"))
        return page(n, f"{BASE}/Observation?page={n + 1}")  # endless

    result = fetch({"obs": "Observation"}, handler, limits=FetchLimits(page_cap=3))["obs"]
    assert len(calls) == 3
    assert [r["id"] for r in result.resources] == ["o1", "o2", "o3"]
    assert result.ok
    assert result.notes == ("more pages than the cap of 3; later pages not read",)


def test_next_link_to_another_base_stops_paging_and_keeps_the_token_home() -> None:
    hosts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        return page(1, "https://evil.example.net/fhir/Observation?page=2")

    result = fetch({"obs": "Observation"}, handler)["obs"]
    assert hosts == ["ehr.example.org"]
    assert [r["id"] for r in result.resources] == ["o1"]
    assert result.notes == ("next page link leaves the FHIR server base; paging stopped",)


def test_next_link_above_the_base_path_stops_paging() -> None:
    result = fetch(
        {"obs": "Observation"}, lambda r: page(1, "https://ehr.example.org/admin/Observation")
    )["obs"]
    assert result.notes == ("next page link leaves the FHIR server base; paging stopped",)


def test_next_link_loop_stops() -> None:
    result = fetch({"obs": "Observation"}, lambda r: page(1, f"{BASE}/Observation"))["obs"]
    assert [r["id"] for r in result.resources] == ["o1"]
    assert result.notes == ("next page link repeats an earlier page; paging stopped",)


def test_too_many_resources_fails_the_key() -> None:
    result = fetch(
        {"obs": "Observation"},
        lambda r: page(1, f"{BASE}/Observation?page=2" if "page" not in r.url.params else None),
        limits=FetchLimits(max_resources=1),
    )["obs"]
    assert result.error == "more than 1 resources"


@pytest.mark.parametrize("ctype", ["application/fhir+json", "application/json; charset=utf-8"])
def test_json_content_types_accepted(ctype: str) -> None:
    result = fetch({"p": "Patient/p"}, lambda r: fhir({"resourceType": "Patient"}, ctype=ctype))
    assert result["p"].resources == [{"resourceType": "Patient"}]


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (httpx.Response(200, text="{}", headers={"Content-Type": "text/plain"}), "text/plain"),
        (httpx.Response(200, content=b'{"resourceType":"Patient"}'), "no content type"),
        (fhir(["a list"]), "not a FHIR resource"),
        (fhir({"resourceType": "OperationOutcome"}), "returned an OperationOutcome"),
        (httpx.Response(403), "refused the access token (HTTP 403)"),
        (httpx.Response(307, headers={"Location": "https://evil.example.net/"}), "redirected"),
        (fhir({"resourceType": "Patient"}, status=201), "HTTP 201"),
    ],
)
def test_bad_answers_are_errors(response: httpx.Response, error: str) -> None:
    result = fetch({"p": "Patient/p"}, lambda r: response)["p"]
    assert result.error is not None and error in result.error
    assert result.resources == []


def test_declared_oversize_is_refused_before_reading() -> None:
    response = httpx.Response(
        200,
        content=b"{}",
        headers={"Content-Type": "application/fhir+json", "Content-Length": "999999999"},
    )
    result = fetch({"p": "Patient/p"}, lambda r: response, limits=FetchLimits(max_bytes=1000))
    assert result["p"].error == "response larger than 1000 bytes"


def test_transport_errors_carry_no_url() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError(f"peer closed on {request.url}", request=request)

    result = fetch({"p": "Patient/secret-id"}, handler)["p"]
    assert result.error == "FHIR request failed (RemoteProtocolError)"


def test_one_deadline_for_all_keys_finished_keys_kept() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/Slow"):
            await asyncio.sleep(5)
        return fhir({"resourceType": "Patient", "id": "p"})

    limits = FetchLimits(deadline_seconds=0.3)
    started = time.monotonic()
    results = fetch({"fast": "Patient/p", "slow1": "Slow", "slow2": "Slow"}, handler, limits=limits)
    elapsed = time.monotonic() - started
    assert results["fast"].resources == [{"resourceType": "Patient", "id": "p"}]
    assert results["slow1"].error == results["slow2"].error == "FHIR server timed out"
    assert elapsed < 0.3 + 0.5  # one deadline shared, not one per key


def test_no_queries_no_client() -> None:
    assert (
        asyncio.run(fetch_all(base=BASE, queries={}, access_token=None, limits=FetchLimits())) == {}
    )


def test_query_cannot_climb_out_of_the_base() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return fhir({"resourceType": "Patient"})

    result = fetch({"p": "../admin/Patient/p", "q": "Patient/%2e%2e"}, handler)
    assert calls == []
    assert result["p"].error == result["q"].error == "prefetch query leaves the FHIR server base"
