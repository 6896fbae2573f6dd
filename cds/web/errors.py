"""Every non-2xx answer of the CDS Hooks API is a FHIR OperationOutcome.

Errors are mapped here, once (``map_error``): ``RequestError`` subclasses carry their
status; the other ``CDSError`` classes are in ``ERROR_MAP``; FastAPI's own validation and
routing errors are rewritten; anything unexpected becomes a 500 OperationOutcome that says
only "internal error" (the traceback goes to the log, never to the caller). A test walks
the whole ``CDSError`` tree and fails on a class without a mapping. The console
(``/review``) keeps HTML errors.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from cds.errors import (
    AuthenticationFailed,
    CDSError,
    ConfigError,
    EngineError,
    PackError,
    RequestError,
)

log = logging.getLogger("cds.web")

FHIR_JSON = "application/fhir+json"
HTTP_CODES = {
    400: "structure",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    412: "incomplete",
    413: "too-long",
    415: "not-supported",
    422: "invalid",
    429: "throttled",
    431: "too-long",
    500: "exception",
    503: "transient",
}


class Issue(BaseModel):
    model_config = ConfigDict(extra="allow")
    severity: str
    code: str
    diagnostics: str | None = None
    expression: list[str] | None = None


class OperationOutcome(BaseModel):
    """FHIR R4 OperationOutcome (the body of every error)."""

    model_config = ConfigDict(extra="allow")
    resourceType: str = "OperationOutcome"
    issue: list[Issue]


def outcome(
    status: int,
    diagnostics: str,
    *,
    code: str | None = None,
    expression: list[str] | None = None,
    extra_issues: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    issue: dict[str, Any] = {
        "severity": "error" if status < 500 else "fatal",
        "code": code or HTTP_CODES.get(status, "processing"),
        "diagnostics": diagnostics,
    }
    if expression:
        issue["expression"] = expression
    return {"resourceType": "OperationOutcome", "issue": [issue, *(extra_issues or [])]}


class SafeJSONResponse(JSONResponse):
    """JSON that can always be sent: text that is not Unicode (a lone surrogate quoted
    from a request) is replaced rather than failing the response with a 500.

    orjson writes it (compact, UTF-8, keys in order: the bytes the standard library wrote,
    but for the exponent of a float below 1e-4); what orjson refuses (a lone surrogate, an
    integer past 64 bits) goes the standard library's way, as before.
    """

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except (TypeError, orjson.JSONEncodeError):
            pass
        return json.dumps(
            content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
        ).encode("utf-8", "replace")


def outcome_response(
    status: int,
    diagnostics: str,
    *,
    code: str | None = None,
    expression: list[str] | None = None,
    headers: dict[str, str] | None = None,
    extra_issues: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    return SafeJSONResponse(
        outcome(status, diagnostics, code=code, expression=expression, extra_issues=extra_issues),
        status_code=status,
        headers=headers,
        media_type=FHIR_JSON,
    )


#: Status, OperationOutcome code and the (fixed) diagnostics of every ``CDSError`` that is
#: not a ``RequestError``. Their own messages may name files and rules: logged, not sent.
ERROR_MAP: dict[type[CDSError], tuple[int, str, str]] = {
    EngineError: (500, "exception", "the rules engine failed for this call"),
    PackError: (500, "exception", "a rule pack could not be used"),
    ConfigError: (500, "exception", "the service is misconfigured"),
    CDSError: (500, "exception", "internal error"),
}


def map_error(exc: BaseException) -> tuple[int, str, str]:
    """(status, issue code, diagnostics) for any exception: the one error boundary."""
    if isinstance(exc, AuthenticationFailed):
        return 401, "login", "authentication failed"
    if isinstance(exc, RequestError):
        return exc.status, exc.code, exc.diagnostics
    for cls in type(exc).__mro__:
        if cls in ERROR_MAP:
            return ERROR_MAP[cls]
    return 500, "exception", "internal error"


def error_response(exc: CDSError) -> JSONResponse:
    status, code, diagnostics = map_error(exc)
    if isinstance(exc, AuthenticationFailed):
        return outcome_response(401, diagnostics, code=code, headers={"WWW-Authenticate": "Bearer"})
    expression = exc.expression or None if isinstance(exc, RequestError) else None
    return outcome_response(status, diagnostics, code=code, expression=expression)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "model": OperationOutcome,
        "description": text,
        "content": {FHIR_JSON: {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}},
    }
    for status, text in (
        (400, "Malformed JSON or not a valid CDS Hooks request"),
        (401, "Authentication failed (JWT)"),
        (404, "Unknown service"),
        (412, "Required prefetch data could not be obtained"),
        (413, "Request body too large"),
        (422, "Semantically invalid FHIR, a number out of range, or a value that cannot be stored"),
        (500, "Internal error (the rules engine or a rule pack failed)"),
        (503, "The audit store is unavailable, or the evaluation ran past its time budget"),
    )
}


def _is_console(request: Request) -> bool:
    return request.url.path.startswith("/review")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CDSError)
    async def _cds_error(request: Request, exc: CDSError) -> JSONResponse:
        if not isinstance(exc, RequestError):
            log.error("%s on %s %s: %s", type(exc).__name__, request.method, request.url.path, exc)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Any:
        if _is_console(request):
            return JSONResponse({"detail": "invalid form"}, status_code=400)
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return outcome_response(
            400,
            f"invalid request: {first.get('msg', 'invalid')}",
            expression=[loc] if loc else None,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Any:
        if _is_console(request):
            from fastapi.exception_handlers import http_exception_handler

            return await http_exception_handler(request, exc)
        detail = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.url.path}"
        return outcome_response(exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return outcome_response(500, "internal error", code="exception")
