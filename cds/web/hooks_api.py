"""The CDS Hooks endpoints: discovery, service calls and feedback.

Handlers only move data between HTTP and the layers below: the JWT check, the body cap
and JSON decoding happen here; validation in ``hooks.request``; prefetch in
``hooks.prefetch``; the clinical work in ``hooks.pipeline`` (run in a worker thread:
durable_rules and SQLAlchemy are blocking); the audit write in ``store.audit``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import anyio
import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from cds.budget import check_budget, time_budget, timeout_error
from cds.errors import (
    AuthenticationFailed,
    InvalidFhir,
    MalformedRequest,
    PayloadTooLarge,
    RequestError,
    StoreUnavailable,
    UnknownService,
)
from cds.hooks.audit import call_context, issued_cards
from cds.hooks.bounds import MAX_DEPTH, JsonLimitError, check_document, check_raw
from cds.hooks.feedback import parse_feedback
from cds.hooks.fetch import FetchLimits
from cds.hooks.pipeline import Evaluation, evaluate
from cds.hooks.prefetch import resolve_prefetch
from cds.hooks.request import parse_hook_call, require_patient
from cds.hooks.services import ServiceDef, catalog, discovery_document
from cds.hooks.shadow import hand_off
from cds.store.audit import (
    InvocationRecord,
    IssuedCard,
    RejectionLog,
    cards_for_feedback,
    guarded,
    store_feedback,
)
from cds.web.auth import Principal, audience_for
from cds.web.errors import ERROR_RESPONSES, SafeJSONResponse, map_error, outcome_response

log = logging.getLogger("cds.hooks")
router = APIRouter(tags=["CDS Hooks"])
T = TypeVar("T")


class CardsResponse(BaseModel):
    """``{"cards": [...]}``; each card follows the card contract (see api/README.md)."""

    model_config = ConfigDict(extra="allow")
    cards: list[dict[str, Any]]


class DiscoveryResponse(BaseModel):
    model_config = ConfigDict(extra="allow")
    services: list[dict[str, Any]]


class FeedbackResponse(BaseModel):
    model_config = ConfigDict(extra="allow")
    stored: int
    duplicates: int


HOOK_REQUEST_SCHEMA = {
    "type": "object",
    "required": ["hook", "hookInstance", "context"],
    "properties": {
        "hook": {"type": "string"},
        "hookInstance": {"type": "string", "format": "uuid"},
        "context": {"type": "object"},
        "prefetch": {"type": ["object", "null"]},
        "fhirServer": {"type": "string"},
        "fhirAuthorization": {"type": "object"},
        "extension": {"type": "object"},
    },
}
FEEDBACK_SCHEMA = {
    "type": "object",
    "required": ["feedback"],
    "properties": {"feedback": {"type": "array", "items": {"type": "object"}}},
}


def _now(request: Request) -> datetime:
    clock = getattr(request.app.state, "clock", None)
    return clock() if clock else datetime.now(UTC)


async def read_json(request: Request) -> Any:
    """The body as JSON, refusing more than the configured size before reading it all."""
    cap = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise PayloadTooLarge(f"the request body exceeds {cap} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise PayloadTooLarge(f"the request body exceeds {cap} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise MalformedRequest("the request body is empty")
    if len(raw) > 65_536:  # a big body decodes in a worker: the event loop stays free
        return await anyio.to_thread.run_sync(decode_body, raw)
    return decode_body(raw)


def decode_body(raw: bytes) -> Any:
    """Decode a request body and hold it to the JSON limits of ``cds.hooks.bounds``.

    400 for what is not JSON text (syntax, control characters, lone surrogates, depth);
    422 for a number no clinical quantity can have.

    orjson decodes (a typical order-sign in 0.05 ms, the standard library took 0.2); what
    it refuses is decoded again by the standard library, whose verdict and message stand,
    so the answer to a bad body is exactly what it always was (orjson is stricter: a lone
    surrogate, a number past a double, nesting past 1,024).
    """
    try:
        check_raw(raw)
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            value = json.loads(raw, parse_constant=_reject_constant)
        check_document(raw, value)
    except JsonLimitError as exc:
        if exc.kind == "number":
            raise InvalidFhir(exc.message, expression=[exc.path] if exc.path else None) from None
        raise MalformedRequest(
            f"the body is not acceptable JSON: {exc.message}",
            expression=[exc.path] if exc.path else None,
        ) from None
    except RecursionError:
        raise MalformedRequest(
            f"the body is not acceptable JSON: nested deeper than {MAX_DEPTH} levels"
        ) from None
    except ValueError as exc:
        # json's messages quote no input, but keep them short and printable anyway
        msg = str(exc).encode("ascii", "backslashreplace").decode()[:200]
        raise MalformedRequest(f"the body is not valid JSON: {msg}") from None
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def authenticate(request: Request) -> Principal | None:
    """Verify the EHR's JWT (``CDS_AUTH=jwt``); ``None`` in development mode.

    The audience is ``CDS_PUBLIC_BASE_URL`` + the path: configuration only, never the
    Host header (hardening #2; ``check_settings`` refuses to start without it).
    """
    verifier = request.app.state.verifier
    if verifier is None:
        return None
    settings = request.app.state.settings
    audience = audience_for(str(request.url), settings.public_base_url)
    header = request.headers.get("authorization")
    try:
        principal: Principal = await anyio.to_thread.run_sync(verifier.verify, header, audience)
        return principal
    except AuthenticationFailed:
        await _reject(request, 401, "authentication failed", None, aggregate=True)
        raise


Authenticated = Annotated[Principal | None, Depends(authenticate)]


async def _reject(
    request: Request,
    status: int,
    reason: str,
    hook_instance: str | None,
    *,
    aggregate: bool = False,
) -> None:
    """Leave the rejection row every failed call must leave (anonymous 401s aggregated:
    most of them are counted in memory and need neither a thread nor a connection)."""
    rejections: RejectionLog = request.app.state.rejections
    path = request.url.path
    route = request.scope.get("route")
    if aggregate and route is not None:  # /cds-services/{service_id}: a caller choosing
        path = getattr(route, "path", path)  # random paths still shares one row
    if aggregate and rejections.absorb(path=path, status=status, reason=reason):
        return
    received = _now(request)
    await anyio.to_thread.run_sync(
        lambda: rejections.record(
            received_at=received,
            path=path,
            status=status,
            reason=reason,
            hook_instance=hook_instance,
            aggregate=aggregate,
        )
    )


async def _reject_error(request: Request, exc: BaseException, hook_instance: str | None) -> None:
    """The rejection row of a call that failed with ``exc`` (any exception, mapped once)."""
    if isinstance(exc, StoreUnavailable):
        return  # the store is down: there is nothing to write the row to
    status, _code, diagnostics = map_error(exc)
    if status >= 500 and not isinstance(exc, RequestError):
        diagnostics = f"{diagnostics} ({type(exc).__name__})"
    await _reject(request, status, diagnostics[:500], hook_instance)


def _service(request: Request, service_id: str) -> ServiceDef:
    svc = catalog(request.app.state.registry.packs()).get(service_id)
    if svc is None:
        raise UnknownService(f"no CDS service {service_id[:100]!r}; see GET /cds-services")
    return svc


@router.get(
    "/cds-services", response_model=DiscoveryResponse, responses={401: ERROR_RESPONSES[401]}
)
async def discovery(request: Request, principal: Authenticated) -> dict[str, Any]:
    """Discovery: the services, their hooks and prefetch templates."""
    packs = request.app.state.registry.packs()
    return discovery_document(packs)


@router.post(
    "/cds-services/{service_id}",
    response_model=CardsResponse,
    responses={k: v for k, v in ERROR_RESPONSES.items()},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": HOOK_REQUEST_SCHEMA}},
        }
    },
)
async def call_service(
    service_id: str,
    request: Request,
    principal: Authenticated,
) -> JSONResponse:
    """Run a service: validate, complete prefetch, evaluate the rules, store, answer."""
    t_start = time.perf_counter()
    received = _now(request)
    settings = request.app.state.settings
    budget = settings.evaluation_budget_seconds
    deadline = time.monotonic() + budget
    hook_instance: str | None = None
    try:
        svc = _service(request, service_id)
        body = await read_json(request)
        if isinstance(body, dict) and isinstance(body.get("hookInstance"), str):
            hook_instance = body["hookInstance"][:64]
        call = parse_hook_call(body, expected_hook=svc.hook)
        t0 = time.perf_counter()
        resolved = await resolve_prefetch(
            keys=svc.prefetch,
            prefetch=call.prefetch,
            context=call.context,
            fhir_server=call.fhir_server,
            access_token=call.access_token,
            allowlist=settings.allowlist,
            now=received,
            limits=FetchLimits(
                deadline_seconds=settings.fetch_deadline_seconds,
                max_resources=settings.max_prefetch_resources,
            ),
            client=request.app.state.http,
            max_resources=settings.max_prefetch_resources,
        )
        t_prefetch = round((time.perf_counter() - t0) * 1000, 3)
        packs = request.app.state.registry.packs()
        audit = request.app.state.audit

        phase = _Phase()
        invocation_id = str(uuid.uuid4())

        def work() -> tuple[Evaluation, list[IssuedCard], dict[str, float]]:
            """Evaluate and audit in ONE worker-thread hop (both block: C engine, DB)."""
            with time_budget(deadline, budget):
                check_budget("before the evaluation")
                require_patient(resolved.resources, call.patient_id)
                inp = call.pipeline_input(resolved.resources, sorted(resolved.unavailable))
                result = evaluate(inp, packs, now=received)
                timings = {"prefetch": t_prefetch, **result.timings}
                issued = issued_cards(result)
                check_budget("before the audit write")
                if not phase.enter_store():  # the budget is the evaluation's; the write
                    raise timeout_error(budget, "before the audit write")  # has its own
            t0 = time.perf_counter()
            record = InvocationRecord(
                id=invocation_id,
                hook_instance=call.hook_instance,
                service_id=svc.id,
                hook=call.hook,
                patient_ref=f"Patient/{call.patient_id}",
                user_ref=call.user_id,
                encounter_ref=f"Encounter/{call.encounter_id}" if call.encounter_id else None,
                issuer=principal.iss if principal else None,
                tenant=principal.tenant if principal else None,
                received_at=received,
                evaluated_at=received,
                duration_ms=round((t0 - t_start) * 1000, 3),
                timings=timings,
                # every pack that ran ("<pack>+<pack>"); each card names its own
                pack_id="+".join(p.id for p in packs)[:64] or None,
                pack_version="+".join(p.version for p in packs)[:32] or None,
                fetched_keys=sorted(resolved.fetched),
                data_issues=[
                    {"issue": d.issue, "detail": d.detail[:500], "order": d.order_id or None}
                    for d in result.issues[:50]
                ]
                + [{"issue": "prefetch", "detail": p[:500]} for p in resolved.problems[:20]],
                context=call_context(
                    resolved.resources,
                    patient_id=call.patient_id,
                    user_id=call.user_id,
                    encounter_id=call.encounter_id,
                ),
            )
            try:
                audit.save(invocation=record, cards=issued)  # returns once committed
            except StoreUnavailable:
                if not settings.serve_unaudited:
                    raise
                log.error(
                    "audit store down: serving %d unaudited cards (CDS_SERVE_UNAUDITED)"
                    " hookInstance=%s",
                    len(issued),
                    call.hook_instance,
                )
            timings["store"] = round((time.perf_counter() - t0) * 1000, 3)
            return result, issued, timings

        result, issued, timings = await _within_budget(work, deadline, budget, phase)
        # kept request and shadow packs: queued for the sidecar, never waited for
        hand_off(
            getattr(request.app.state, "sidecar", None),
            invocation_id=invocation_id,
            service_id=svc.id,
            call=call,
            resources=resolved.resources,
            unavailable=sorted(resolved.unavailable),
            received=received,
            packs=packs,
            cards=result.cards,
        )
        log.info(
            "hook %s service=%s hookInstance=%s cards=%d rules=%s ms=%.1f",
            call.hook,
            svc.id,
            call.hook_instance,
            len(issued),
            ",".join(sorted({f.rule_id for c in result.cards for f in c.findings})),
            (time.perf_counter() - t_start) * 1000,
        )
        return SafeJSONResponse({"cards": [c.card for c in result.cards]})
    except Exception as exc:
        await _reject_error(request, exc, hook_instance)
        raise


class _Phase:
    """Whether a call's thread got to its audit write before the EHR was told it timed
    out: exactly one of the two happens (a lock, not a race)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._storing = self._abandoned = False

    def enter_store(self) -> bool:
        with self._lock:
            self._storing = not self._abandoned
            return self._storing

    def abandon(self) -> bool:
        with self._lock:
            self._abandoned = not self._storing
            return self._abandoned


async def _within_budget(work: Callable[[], T], deadline: float, budget: float, phase: _Phase) -> T:
    """``work`` on a worker thread, waited for until ``deadline`` at most.

    At the deadline the EHR gets ``EvaluationTimeout``; the thread is not abandoned: it
    keeps its worker slot (so timed-out work cannot pile up beyond the pool) and stops at
    its next ``check_budget``, before any audit write. Its late outcome is discarded. Once
    the evaluation is done (``phase``) the audit write is waited for: it has its own bounds
    (SQLite's busy timeout, 503 when the store is down).
    """
    task = asyncio.ensure_future(anyio.to_thread.run_sync(work))
    remaining = max(0.0, deadline - time.monotonic())
    done, _pending = await asyncio.wait({task}, timeout=remaining)
    if task in done or not phase.abandon():
        return await task
    task.add_done_callback(_discard_late)
    log.warning("evaluation past its %g s budget: answered with a timeout", budget)
    raise timeout_error(budget)


def _discard_late(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a late EvaluationTimeout is expected, not an error


@router.post(
    "/cds-services/{service_id}/feedback",
    response_model=FeedbackResponse,
    responses={k: v for k, v in ERROR_RESPONSES.items() if k in (400, 401, 404, 413, 422, 503)},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": FEEDBACK_SCHEMA}},
        }
    },
)
async def feedback(service_id: str, request: Request, principal: Authenticated) -> JSONResponse:
    """Store what the clinician did; valid items are kept even when others are rejected.

    Feedback is bound to who received the card (hardening #10): only the issuer and
    tenant the card was issued to may report on it (anyone else is told the card is
    unknown); outcome timestamps from the future are refused; the card shows the outcome
    with the latest ``outcomeTimestamp``, whatever the arrival order. Bounded: at most
    ``CDS_MAX_FEEDBACK_ITEMS`` items per request and ``CDS_MAX_FEEDBACK_PER_CARD`` per card.
    """
    received = _now(request)
    settings = request.app.state.settings
    try:
        svc = _service(request, service_id)
        services = catalog(request.app.state.registry.packs())
        body = await read_json(request)
        good, bad = parse_feedback(body, now=received, max_items=settings.max_feedback_items)
        maker = request.app.state.maker
        issuer = principal.iss if principal else None
        tenant = principal.tenant if principal else None
        per_card = settings.max_feedback_per_card

        def work() -> tuple[int, int, list[tuple[int, str | None, str]]]:
            cards = guarded(
                cards_for_feedback, maker=maker, card_ids=[it.card_id for _, it in good]
            )
            keep = []
            rejected = [(r.index, r.card, r.reason) for r in bad]
            counts: dict[str, int] = {}
            for i, it in good:
                card = cards.get(it.card_id)
                if card is None or (card.issuer, card.tenant) != (issuer, tenant):
                    # Another issuer's or tenant's card is, to this caller, no card at all.
                    rejected.append((i, it.card_id, "unknown card uuid"))
                    continue
                # cards issued under an alias (the ids an EHR registered) are this service's
                issued_by = services.get(card.service_id)
                if issued_by is None or issued_by.id != svc.id:
                    rejected.append((i, it.card_id, "card was not issued by this service"))
                    continue
                unknown = [a for a in it.accepted_suggestions if a not in card.suggestion_ids]
                if unknown:
                    rejected.append(
                        (
                            i,
                            it.card_id,
                            "acceptedSuggestions names a suggestion this card did not offer",
                        )
                    )
                    continue
                counts[it.card_id] = counts.get(it.card_id, 0) + 1
                if card.feedback_count + counts[it.card_id] > per_card:
                    rejected.append(
                        (i, it.card_id, f"a card takes at most {per_card} feedback items")
                    )
                    continue
                keep.append(it)
            created = (
                guarded(
                    store_feedback,
                    maker=maker,
                    service_id=svc.id,
                    items=keep,
                    received_at=received,
                    issuer=issuer,
                    tenant=tenant,
                )
                if keep
                else []
            )
            return sum(created), len(created) - sum(created), sorted(rejected)

        stored, dups, rejected = await anyio.to_thread.run_sync(work)
        if rejected:
            issues = [
                {
                    "severity": "error",
                    "code": "invalid",
                    "diagnostics": f"feedback[{i}]" + (f" (card {c})" if c else "") + f": {reason}",
                    "expression": [f"feedback[{i}]"],
                }
                for i, c, reason in rejected
            ]
            await _reject(request, 400, f"{len(rejected)} feedback item(s) rejected", None)
            resp = outcome_response(
                400,
                f"{len(rejected)} feedback item(s) rejected; {stored} stored, "
                f"{dups} already stored",
                extra_issues=issues,
            )
            return resp
        return SafeJSONResponse({"stored": stored, "duplicates": dups})
    except Exception as exc:
        await _reject_error(request, exc, None)
        raise
