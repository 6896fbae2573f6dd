"""The FHIR fallback client: fetch the prefetch keys an EHR did not send.

A CDS Hooks call may arrive without some prefetch keys; the service then reads them itself
from the request's ``fhirServer`` with the request's bearer token. That server is someone
else's, so everything here assumes it may be slow, down, wrong or hostile:

* one deadline for the whole hook call (keys run in parallel under a shared ``timeout_at``),
  plus httpx connect/read timeouts, so a stalled server cannot hold a request past its budget;
* bodies are streamed and abandoned past ``max_bytes``; pages and resources are capped;
* redirects are never followed and next-page links must stay under the same base, so the
  access token is only ever sent to the server the EHR named (and the caller allowlisted);
* failures come back as short fixed strings per key (no URL, no body, no token: the URL holds
  patient ids and exception texts can hold anything), and logs carry key, host, status and
  elapsed time only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from cds.hooks.bounds import MAX_DEPTH, JsonLimitError, check_document, check_raw

__all__ = [
    "FetchLimits",
    "FetchResult",
    "bundle_problem",
    "fetch_all",
    "is_allowlisted",
    "resources_of",
]

log = logging.getLogger("cds.fetch")

_FHIR_MEDIA_TYPES = frozenset(
    {"application/fhir+json", "application/json", "application/json+fhir"}
)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_READ = re.compile(r"^[A-Z][A-Za-z]*/[^/?#]+$")  # "Patient/123": a read, whose 404 means no data


@dataclass(frozen=True)
class FetchLimits:
    """Budgets for one hook call's fallback fetch (defaults from the CDS Hooks brief).

    ``page_cap`` counts every page read for a key, the first one included.
    """

    deadline_seconds: float = 2.0
    connect_timeout: float = 1.0
    page_cap: int = 5
    max_bytes: int = 5_000_000
    max_resources: int = 5_000


@dataclass(frozen=True)
class FetchResult:
    """What one key's fetch gave: ``resources`` (possibly empty = no data) or an ``error``.

    ``notes`` flag data that was obtained but may be incomplete (page cap reached, a next link
    that left the base); they are safe to show (no PHI, no token).
    """

    resources: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None


class _Failure(Exception):
    """A key's fetch failed; the message is already safe to show (fixed text, no URL/token)."""


@dataclass(frozen=True)
class _Base:
    scheme: str
    host: str
    port: int
    path: str  # no trailing slash; "" for the root
    segments: tuple[str, ...] = ()  # the path as a server resolves it (see _segments)


# Whitespace, control characters and backslashes have no place in a URL we call (httpx
# refuses them with InvalidURL; some servers read a backslash as a slash).
_UNSAFE_URL = re.compile(r"[\x00-\x20\x7f-\x9f\\]")


def _segments(path: str) -> tuple[str, ...] | None:
    """The path's segments as a server resolves them, or None if it could walk upwards.

    Percent-decoded once; path parameters dropped (Tomcat and other servlet containers
    read ``/..;x/`` as ``/../``); empty segments collapsed. Refused: ``.`` and ``..``
    (raw, encoded or with parameters) and anything still percent-encoded after one
    decoding (``%252e%252e`` is ``..`` to a server that decodes twice).
    """
    decoded = unquote(path)
    if "%" in decoded or "\\" in decoded:
        return None
    out: list[str] = []
    for raw in decoded.split("/"):
        segment = raw.split(";", 1)[0]
        if segment in (".", ".."):
            return None
        if segment:
            out.append(segment)
    return tuple(out)


def _parse_base(url: str) -> _Base | None:
    """Normalise an http(s) URL for comparison, or None if it is not one we would call.

    Credentials, fragments, whitespace and control characters are refused, and so are
    paths that could leave a base (see ``_segments``).
    """
    url = url.strip()
    if _UNSAFE_URL.search(url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    if parts.username is not None or parts.password is not None or parts.fragment:
        return None
    segments = _segments(parts.path)
    if segments is None:
        return None
    return _Base(
        scheme=scheme,
        host=parts.hostname.lower(),
        port=port if port is not None else _DEFAULT_PORTS[scheme],
        path=parts.path.rstrip("/"),
        segments=segments,
    )


def _within(url: _Base, base: _Base) -> bool:
    """Same origin, and ``url``'s segments start with all of the base's, compared one by
    one as the server will resolve them (``/fhir`` allows ``/fhir/r4``, not ``/fhirx``)."""
    if (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port):
        return False
    return url.segments[: len(base.segments)] == base.segments


def is_allowlisted(url: str, allowlist: Sequence[str]) -> bool:
    """True if ``url`` (a fhirServer) lies under one of the allowlisted bases.

    Scheme and host compare case-insensitively, default ports are implied, trailing slashes
    ignored, and the path must match on a segment boundary (``/fhir`` allows ``/fhir/r4`` but
    not ``/fhirx``). The fhirServer itself must have no query string.
    """
    target = _parse_base(url)
    if target is None or urlsplit(url.strip()).query:
        return False
    for entry in allowlist:
        base = _parse_base(entry)
        if base is not None and _within(target, base):
            return True
    return False


def bundle_problem(body: Mapping[str, Any]) -> str | None:
    """Why a Bundle cannot be read (``entry`` or ``link`` not an array), or None."""
    if body.get("resourceType") != "Bundle":
        return None
    for name in ("entry", "link"):
        value = body.get(name)
        if value is not None and not isinstance(value, list):
            return f"{name} is not an array"
    return None


def resources_of(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The resources a FHIR body carries: a Bundle's entries, or the resource itself.

    Bundle entries of every search mode but ``outcome`` count (``include`` ones too: a search
    may ``_include`` the Medication its MedicationRequests point at); entries that are not FHIR
    resources are skipped rather than failing the whole key.
    """
    if body.get("resourceType") != "Bundle":
        return [dict(body)]
    found: list[dict[str, Any]] = []
    entries = body.get("entry")
    for entry in entries if isinstance(entries, list) else ():
        if type(entry) is not dict and not isinstance(entry, Mapping):  # dict: the fast test
            continue
        search = entry.get("search")
        if isinstance(search, Mapping) and search.get("mode") == "outcome":
            continue
        resource = entry.get("resource")
        if _is_resource(resource):
            found.append(dict(resource))
    return found


def _is_resource(value: Any) -> TypeGuard[Mapping[str, Any]]:
    """A JSON object with a non-empty string ``resourceType``: what FHIR JSON always has."""
    if type(value) is dict:  # decoded JSON: skip the ABC check (2,000 resources per call)
        rtype = value.get("resourceType")
        return type(rtype) is str and bool(rtype)
    return (
        isinstance(value, Mapping)
        and isinstance(value.get("resourceType"), str)
        and bool(value["resourceType"])
    )


def _next_link(bundle: Mapping[str, Any]) -> str | None:
    links = bundle.get("link")
    for link in links if isinstance(links, list) else ():
        if isinstance(link, Mapping) and link.get("relation") == "next":
            url = link.get("url")
            if isinstance(url, str) and url:
                return url
    return None


def _media_type(response: httpx.Response) -> str:
    content_type: str = response.headers.get("content-type", "")
    return content_type.split(";")[0].strip().lower()


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    """Read the body, giving up as soon as it passes ``max_bytes`` (declared or actual)."""
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise _Failure(f"response larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise _Failure(f"response larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _get_page(
    client: httpx.AsyncClient,
    url: str,
    *,
    key: str,
    headers: Mapping[str, str],
    timeout: httpx.Timeout,
    limits: FetchLimits,
    is_read: bool,
) -> dict[str, Any] | None:
    """GET one page and return its FHIR body; None means "read found nothing" (404/410)."""
    host = urlsplit(url).hostname or "?"
    started = time.monotonic()
    status: int | str = "-"
    try:
        async with client.stream(
            "GET", url, headers=headers, timeout=timeout, follow_redirects=False
        ) as response:
            status = response.status_code
            if is_read and status in (404, 410):
                return None
            if 300 <= status < 400:
                raise _Failure(
                    f"FHIR server redirected (HTTP {status}); redirects are not followed"
                )
            if status in (401, 403):
                raise _Failure(f"FHIR server refused the access token (HTTP {status})")
            if status != 200:
                raise _Failure(f"FHIR server answered HTTP {status}")
            media = _media_type(response)
            if media not in _FHIR_MEDIA_TYPES:
                raise _Failure(f"FHIR server sent {media or 'no content type'}, not FHIR JSON")
            raw = await _read_capped(response, limits.max_bytes)
    except httpx.ConnectTimeout:
        raise _Failure("FHIR server connection timed out") from None
    except httpx.TimeoutException:
        raise _Failure("FHIR server timed out") from None
    except httpx.ConnectError:
        raise _Failure("FHIR server unreachable") from None
    except httpx.HTTPError as exc:  # protocol errors, broken connections: the class name is safe
        raise _Failure(f"FHIR request failed ({type(exc).__name__})") from None
    except httpx.InvalidURL:  # not an HTTPError; _parse_base refuses these, this is a backstop
        raise _Failure("FHIR server URL is not a valid URL") from None
    finally:
        log.info(
            "fhir fetch key=%s host=%s status=%s elapsed_ms=%d",
            key,
            host,
            status,
            (time.monotonic() - started) * 1000,
        )
    try:
        check_raw(raw)
        body = json.loads(raw)
        check_document(raw, body)
    except JsonLimitError as exc:
        raise _Failure(f"FHIR server sent unusable JSON: {exc.message}") from None
    except RecursionError:
        raise _Failure(f"FHIR server sent JSON nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError):
        raise _Failure("FHIR server sent a body that is not JSON") from None
    if not _is_resource(body):
        raise _Failure("FHIR server sent JSON that is not a FHIR resource")
    if problem := bundle_problem(body):
        raise _Failure(f"FHIR server sent a malformed Bundle ({problem})")
    if body["resourceType"] == "OperationOutcome":
        codes = sorted(
            {
                str(issue.get("code"))
                for issue in body.get("issue") or []
                if isinstance(issue, Mapping) and isinstance(issue.get("code"), str)
            }
        )
        raise _Failure(
            "FHIR server returned an OperationOutcome" + (f" ({', '.join(codes)})" if codes else "")
        )
    return dict(body)


async def _fetch_key(
    client: httpx.AsyncClient,
    *,
    key: str,
    base: str,
    query: str,
    headers: Mapping[str, str],
    timeout: httpx.Timeout,
    limits: FetchLimits,
) -> FetchResult:
    """Fetch one key: the first page, then next links while under the base and the caps."""
    base_url = base.rstrip("/")
    base_parsed = _parse_base(base_url)
    url = base_url + "/" + query.lstrip("/")
    target = _parse_base(url)
    if base_parsed is None or target is None or not _within(target, base_parsed):
        return FetchResult(error="prefetch query leaves the FHIR server base")
    is_read = bool(_READ.match(query.lstrip("/")))
    resources: list[dict[str, Any]] = []
    notes: list[str] = []
    seen_urls = {url}
    pages = 0
    while True:
        body = await _get_page(
            client, url, key=key, headers=headers, timeout=timeout, limits=limits, is_read=is_read
        )
        pages += 1
        if body is None:
            break
        resources.extend(resources_of(body))
        if len(resources) > limits.max_resources:
            raise _Failure(f"more than {limits.max_resources} resources")
        next_url = _next_link(body) if body["resourceType"] == "Bundle" else None
        if next_url is None:
            break
        next_url = urljoin(url, next_url)
        next_parsed = _parse_base(next_url)
        if next_parsed is None or not _within(next_parsed, base_parsed):
            notes.append("next page link leaves the FHIR server base; paging stopped")
            break
        if next_url in seen_urls:
            notes.append("next page link repeats an earlier page; paging stopped")
            break
        if pages >= limits.page_cap:
            notes.append(f"more pages than the cap of {limits.page_cap}; later pages not read")
            break
        seen_urls.add(next_url)
        url = next_url
    return FetchResult(resources=resources, notes=tuple(notes))


async def _fetch_key_by(
    deadline: float, client: httpx.AsyncClient, *, key: str, **kwargs: Any
) -> FetchResult:
    """Run one key's fetch under the hook call's shared absolute deadline."""
    try:
        async with asyncio.timeout_at(deadline):
            return await _fetch_key(client, key=key, **kwargs)
    except TimeoutError:
        log.warning("fhir fetch key=%s stopped at the deadline", key)
        return FetchResult(error="FHIR server timed out")
    except _Failure as exc:
        log.warning("fhir fetch key=%s failed: %s", key, exc)
        return FetchResult(error=str(exc))


async def fetch_all(
    *,
    base: str,
    queries: Mapping[str, str],
    access_token: str | None,
    limits: FetchLimits,
    client: httpx.AsyncClient | None = None,
) -> dict[str, FetchResult]:
    """Fetch every key's relative query from ``base`` in parallel, within one deadline.

    ``base`` must already be allowlisted by the caller (see ``is_allowlisted``). Keys finished
    before the deadline keep their results; the others get a "timed out" error. ``client`` is
    for tests (``httpx.MockTransport``); by default a short-lived client is made per call.
    """
    if not queries:
        return {}
    headers = {"Accept": "application/fhir+json, application/json;q=0.9"}
    if access_token:
        headers["Authorization"] = f"Bearer {access_token}"
    timeout = httpx.Timeout(
        limits.deadline_seconds,
        connect=min(limits.connect_timeout, limits.deadline_seconds),
    )
    deadline = asyncio.get_running_loop().time() + limits.deadline_seconds
    own_client = client is None
    http = client or httpx.AsyncClient(follow_redirects=False, timeout=timeout)
    try:
        results = await asyncio.gather(
            *(
                _fetch_key_by(
                    deadline,
                    http,
                    key=key,
                    base=base,
                    query=query,
                    headers=headers,
                    timeout=timeout,
                    limits=limits,
                )
                for key, query in queries.items()
            )
        )
    finally:
        if own_client:
            await http.aclose()
    return dict(zip(queries, results, strict=True))
