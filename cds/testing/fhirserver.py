"""A FHIR server that serves a request's own prefetch, for "prefetch = fetched".

The same data sent as prefetch or read from the EHR's FHIR server must give the same
cards. :class:`PrefetchServer` is an ``httpx.MockTransport`` answering each prefetch
query of the request's service with exactly what the request prefetched for that key;
:func:`with_server` turns a request into one that names that server (and drops the
prefetch keys to fetch instead). The real fallback against a real FHIR server is tested
in ``tests/hooks``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from cds.hooks.prefetch import render_template
from cds.testing import strategies as strat
from cds.testing.evaluation import Packs, service_for
from cds.testing.rewrites import bundle_resources

JSON = dict[str, Any]

__all__ = ["FHIR_SERVER", "PrefetchServer", "with_server"]

FHIR_SERVER = "https://ehr.example.org/fhir"


def _key_query(url: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    parts = urlsplit(url)
    return parts.path.rstrip("/"), tuple(sorted(parse_qsl(parts.query)))


class PrefetchServer:
    """An ``httpx.MockTransport`` FHIR server answering each prefetch query of the
    request's service with exactly what the request prefetched for that key (a read:
    the resource or 404; a search: a searchset Bundle, empty when the key was null, an
    OperationOutcome or absent). It records which keys were fetched."""

    def __init__(self, request: JSON, now: datetime, packs: Packs, base: str = FHIR_SERVER) -> None:
        svc = service_for(request, packs)
        prefetch = request.get("prefetch") or {}
        context = request.get("context") or {}
        self.base = base.rstrip("/")
        self.routes: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[str, httpx.Response]] = {}
        self.fetched: list[str] = []
        for key, spec in svc.prefetch.items():
            query = render_template(spec.template, context, now=now)
            if query is None:
                continue
            value = prefetch.get(key)
            is_read = "?" not in query
            usable = isinstance(value, dict) and value.get("resourceType") not in (
                None,
                "OperationOutcome",
            )
            if is_read:
                resp = (
                    httpx.Response(200, json=value, headers=_FHIR_JSON)
                    if usable
                    else httpx.Response(
                        404,
                        json={"resourceType": "OperationOutcome", "issue": []},
                        headers=_FHIR_JSON,
                    )
                )
            else:
                resources = bundle_resources(value) if usable else []
                resp = httpx.Response(200, json=strat.bundle(resources), headers=_FHIR_JSON)
            self.routes[_key_query(f"{self.base}/{query}")] = (key, resp)

    def handle(self, request: httpx.Request) -> httpx.Response:
        hit = self.routes.get(_key_query(str(request.url)))
        if hit is None:
            return httpx.Response(
                404, json={"resourceType": "OperationOutcome", "issue": []}, headers=_FHIR_JSON
            )
        key, resp = hit
        self.fetched.append(key)
        return httpx.Response(resp.status_code, content=resp.content, headers=resp.headers)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))


_FHIR_JSON = {"content-type": "application/fhir+json"}


def with_server(request: JSON, drop: Iterable[str] = ()) -> JSON:
    """The request naming :data:`FHIR_SERVER` (with a bearer token), without the prefetch
    keys in ``drop`` (the service must fetch them)."""
    out = copy.deepcopy(request)
    out["fhirServer"] = FHIR_SERVER
    out["fhirAuthorization"] = {
        "access_token": "property-test-token",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "cds-service",
    }
    for key in drop:
        (out.get("prefetch") or {}).pop(key, None)
    return out
