"""Prefetch: render the service's templates and complete what the EHR did not send.

CDS Hooks lets the EHR prefetch data for the service (``request.prefetch``), but every key
may arrive in one of four states, and they mean different things (see shared cds-hooks.md):

=====================  ===========================================================
value                  meaning
=====================  ===========================================================
resource / Bundle      use it (Bundle ``link`` next pages are *not* followed: the
                       EHR chose what to send, and its paging URLs were never vetted)
``null``               the EHR fetched it and found nothing: no data, never refetch
OperationOutcome,      the EHR's own fetch failed: as if absent
anything not FHIR
absent                 fetch it from ``fhirServer`` with the request's token, if that
                       server is allowlisted
=====================  ===========================================================

A key the rules cannot do without (``PrefetchKey.required``) that is still unobtainable
raises ``PrefetchUnavailable`` (412); an optional one is recorded as no data plus a note, so
the rules that need it can say so in a data-quality card instead of failing the call.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard
from urllib.parse import quote, urlsplit

import httpx

from cds.errors import PayloadTooLarge, PrefetchUnavailable
from cds.hooks.fetch import FetchLimits, bundle_problem, fetch_all, is_allowlisted, resources_of

__all__ = ["PrefetchKey", "ResolvedData", "render_template", "resolve_prefetch"]

log = logging.getLogger("cds.prefetch")

_TOKEN = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_CONTEXT_FIELD = re.compile(r"context\.([A-Za-z_][A-Za-z0-9_]*)")
_TODAY = re.compile(r"today\(\)(?:\s*([+-])\s*(\d{1,5})\s*days?)?")
# userXId tokens: the id part of context.userId when it names a resource of that type.
_USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}


class _Missing(Exception):
    """A token's value is not in the context: the template cannot be rendered."""


def _user_id_of(user_id: Any, resource_type: str) -> str | None:
    """The id in ``userId`` ("Practitioner/123", or an absolute URL ending so) for one type."""
    if not isinstance(user_id, str) or not user_id:
        return None
    parts = urlsplit(user_id).path.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == resource_type and parts[-1]:
        return parts[-1]
    return None


def _context_value(context: Mapping[str, Any], name: str) -> str:
    value = context.get(name)
    if value is None or value == "":
        raise _Missing(f"context.{name}")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    # A Bundle or list (draftOrders, selections) has no URL form: the template is wrong.
    raise ValueError(f"prefetch template uses context.{name}, which is not a simple value")


def _render(
    template: str,
    context: Mapping[str, Any],
    *,
    now: datetime,
    user_practitioner_id: str | None = None,
) -> str:
    """``render_template``, raising ``_Missing(name)`` so callers can say what was lacking."""

    def replace(match: re.Match[str]) -> str:
        token = match.group(1)
        if field_match := _CONTEXT_FIELD.fullmatch(token):
            return quote(_context_value(context, field_match.group(1)), safe="")
        if token.startswith("context."):
            raise ValueError(f"prefetch token {{{{{token}}}}}: only first-level context fields")
        if token in _USER_TOKENS:
            value = (
                user_practitioner_id
                if token == "userPractitionerId" and user_practitioner_id
                else _user_id_of(context.get("userId"), _USER_TOKENS[token])
            )
            if not value:
                raise _Missing(token)
            return quote(value, safe="")
        if today := _TODAY.fullmatch(token):
            moment = now if now.tzinfo else now.replace(tzinfo=UTC)
            day = moment.astimezone(UTC).date()
            if today.group(1):
                offset = timedelta(days=int(today.group(2)))
                day = day + offset if today.group(1) == "+" else day - offset
            return day.isoformat()
        raise ValueError(f"unknown prefetch token {{{{{token}}}}}")

    return _TOKEN.sub(replace, template)


def render_template(
    template: str,
    context: Mapping[str, Any],
    *,
    now: datetime,
    user_practitioner_id: str | None = None,
) -> str | None:
    """Fill a prefetch template's ``{{...}}`` tokens; None if a referenced field is missing.

    Supported: ``{{context.X}}`` (first-level fields only), ``{{userPractitionerId}}``,
    ``{{userPractitionerRoleId}}``, ``{{userPatientId}}``, ``{{userRelatedPersonId}}`` (from
    ``context.userId``; ``user_practitioner_id`` overrides the first), and the CDS Hooks 3.0
    ``{{today()}}`` / ``{{today() - 90 days}}`` / ``{{today() + N days}}`` (the UTC date of
    ``now``; naive datetimes are taken as UTC). Values are percent-encoded, so an id cannot
    add path segments or query parameters. An unknown token is a bug in the service's own
    template and raises ``ValueError`` rather than quietly fetching the wrong thing.
    """
    try:
        return _render(template, context, now=now, user_practitioner_id=user_practitioner_id)
    except _Missing:
        return None


@dataclass(frozen=True)
class PrefetchKey:
    """One prefetch template the service declares in discovery.

    ``required``: the rules cannot run without it (the Patient; the medications for order
    hooks), so failing to obtain it fails the call with 412 instead of degrading.
    """

    template: str
    required: bool = False


@dataclass
class ResolvedData:
    """Everything prefetch and the fallback fetch produced for one hook call.

    ``resources`` is flat and deduplicated by (resourceType, id), first seen wins; resources
    without an id are kept as they are. ``by_key`` keeps each key's own resources. A key may
    be in both ``fetched`` and ``no_data`` (fetched, and the server had nothing). ``problems``
    are short notes safe to log or show (no PHI, no tokens).
    """

    resources: list[dict[str, Any]] = field(default_factory=list)
    no_data: set[str] = field(default_factory=set)
    fetched: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    by_key: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # optional keys neither prefetched nor fetchable, and why: the clinical layer reports
    # them as data issues (a rule can say so), never as "no result on record"
    unavailable: dict[str, str] = field(default_factory=dict)


def _usable(value: Any) -> TypeGuard[Mapping[str, Any]]:
    """A prefetch value we can use: a FHIR resource that is not an OperationOutcome (and,
    for a Bundle, whose ``entry`` and ``link`` are arrays when present)."""
    return (
        isinstance(value, Mapping)
        and isinstance(value.get("resourceType"), str)
        and bool(value["resourceType"])
        and value["resourceType"] != "OperationOutcome"
        and bundle_problem(value) is None
    )


def _has_next_page(value: Mapping[str, Any]) -> bool:
    return value.get("resourceType") == "Bundle" and any(
        isinstance(link, Mapping) and link.get("relation") == "next"
        for link in value.get("link") or []
    )


def _why_missing(given: Mapping[str, Any], key: str) -> str:
    """How a key came to need fetching, for the 412 or the problem note."""
    if key not in given:
        return "not prefetched"
    value = given[key]
    if isinstance(value, Mapping) and value.get("resourceType") == "OperationOutcome":
        return "the EHR's prefetch failed"
    if isinstance(value, Mapping) and (problem := bundle_problem(value)):
        return f"the prefetched Bundle is malformed ({problem})"
    return "prefetch value is not a FHIR resource"


async def resolve_prefetch(
    *,
    keys: Mapping[str, PrefetchKey],
    prefetch: Mapping[str, Any] | None,
    context: Mapping[str, Any],
    fhir_server: str | None,
    access_token: str | None,
    allowlist: Sequence[str],
    now: datetime,
    limits: FetchLimits | None = None,
    client: httpx.AsyncClient | None = None,
    max_resources: int | None = None,
) -> ResolvedData:
    """Turn the request's prefetch into data for every service key, fetching what is missing.

    Keys the request did not answer usefully are fetched in parallel from ``fhir_server``
    (only if it is allowlisted) under one deadline. Raises ``PrefetchUnavailable`` naming the
    first required key that could not be obtained; optional failures become ``no_data`` and a
    ``problems`` note. A prefetched key with more than ``max_resources`` resources raises
    ``PayloadTooLarge`` (413) naming it, as a fetched one fails past
    ``limits.max_resources``: rules run on part of a medication list could miss the very
    drug they are about, so a clear refusal beats a partial answer. A ``null`` value is no
    data even for a required key (the EHR looked
    and found nothing: whether the rules can run without it is theirs to say). Keys in
    ``prefetch`` that the service did not declare are used as given (a site may prefetch
    under its own key names; the clinical layer still drops other patients' data), never
    fetched. A template with an unknown
    token raises ``ValueError``: that is a bug in the service, not in the request.
    """
    limits = limits or FetchLimits()
    given = prefetch or {}
    data = ResolvedData()
    per_key: dict[str, list[dict[str, Any]]] = {}
    unobtainable: dict[str, str] = {}
    missing_context: set[str] = set()
    to_fetch: dict[str, str] = {}

    for key, spec in keys.items():
        if key in given and given[key] is None:
            data.no_data.add(key)
            continue
        value = given.get(key)
        if _usable(value):
            per_key[key] = resources_of(value)
            if max_resources is not None and len(per_key[key]) > max_resources:
                raise PayloadTooLarge(
                    f"prefetch '{key}' holds {len(per_key[key])} resources; at most "
                    f"{max_resources} per key are accepted (CDS_MAX_PREFETCH_RESOURCES)",
                    expression=[f"prefetch.{key}"],
                )
            if _has_next_page(value):
                data.problems.append(f"{key}: prefetched Bundle has more pages (not followed)")
            continue
        why_missing = _why_missing(given, key)
        try:
            query = _render(spec.template, context, now=now)
        except _Missing as missing:
            unobtainable[key] = f"{why_missing} and the call has no {missing}"
            missing_context.add(key)
            continue
        if not fhir_server:
            unobtainable[key] = f"{why_missing} and the request has no fhirServer"
        elif not is_allowlisted(fhir_server, allowlist):
            unobtainable[key] = f"{why_missing} and fhirServer is not on the allowlist"
        else:
            to_fetch[key] = query

    if to_fetch and fhir_server:
        results = await fetch_all(
            base=fhir_server,
            queries=to_fetch,
            access_token=access_token,
            limits=limits,
            client=client,
        )
        for key, result in results.items():
            if result.error is not None:
                unobtainable[key] = result.error
                continue
            data.fetched.add(key)
            per_key[key] = result.resources
            data.problems.extend(f"{key}: {note}" for note in result.notes)

    required_failures = [k for k in keys if k in unobtainable and keys[k].required]
    if required_failures:
        first = required_failures[0]
        log.warning("required prefetch unavailable keys=%s", ",".join(required_failures))
        raise PrefetchUnavailable(
            f"required prefetch '{first}' could not be obtained: {unobtainable[first]}",
            expression=[f"prefetch.{k}" for k in required_failures],
        )

    for key, value in given.items():
        if key not in keys and isinstance(key, str) and _usable(value):
            per_key[key] = resources_of(value)
    seen: set[tuple[str, str]] = set()
    for key in [*keys, *(k for k in per_key if k not in keys)]:
        if key in unobtainable:
            data.no_data.add(key)
            data.problems.append(f"{key}: {unobtainable[key]}")
            if key not in missing_context:  # no encounter in the call is no data problem
                data.unavailable[key] = unobtainable[key]
            continue
        if key not in per_key:
            continue
        data.by_key[key] = per_key[key]
        if not per_key[key]:
            data.no_data.add(key)
        for resource in per_key[key]:
            rid = resource.get("id")
            if isinstance(rid, str) and rid:
                identity = (resource["resourceType"], rid)
                if identity in seen:
                    continue
                seen.add(identity)
            data.resources.append(resource)
    return data
