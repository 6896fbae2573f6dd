"""One error tree for the whole service.

Every failure the service knows about is a ``CDSError``; ``cds.web.errors`` maps each
class once to an HTTP status and a FHIR OperationOutcome, so no handler decides a status
code on its own and nothing unmapped can leak out as a 500::

    CDSError
    ├── ConfigError          start-up: the settings cannot work (the CLI prints it, exit 2)
    ├── PackError            load/compile time: a rule pack is invalid (names file, rule, field)
    ├── EngineError          run time: the rules engine failed for one evaluation
    └── RequestError         a hook call cannot be served as asked (has .status)
        ├── MalformedRequest      400: not JSON, or not a CDS Hooks request
        ├── AuthenticationFailed  401: any JWT failure (detail goes to the log only)
        ├── UnknownService        404
        ├── PrefetchUnavailable   412: required data could not be had
        ├── PayloadTooLarge       413
        ├── InvalidFhir           422: FHIR that cannot be understood
        ├── UnstorableValue       422: a value the audit store cannot keep (never a 503)
        ├── EvaluationTimeout     503: the evaluation ran past CDS_EVALUATION_BUDGET_SECONDS
        └── StoreUnavailable      503: the audit store is down (fail closed)

``cds.web.errors.ERROR_MAP`` gives every class its HTTP status and OperationOutcome
issue code; ``tests/web/test_error_boundary.py`` fails if a class is added without one.
"""

from __future__ import annotations


class CDSError(Exception):
    """Root of every error the service raises on purpose."""


class ConfigError(CDSError):
    """The settings cannot work (e.g. ``CDS_AUTH=jwt`` without ``CDS_PUBLIC_BASE_URL``).

    Raised by ``check_settings`` and ``create_app``; the message says what to set. The CLI
    prints it and exits with status 2 (no traceback).
    """


class PackError(CDSError):
    """A rule pack failed validation or compilation; the message names where."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        rule: str | None = None,
        field: str | None = None,
    ) -> None:
        where = ", ".join(
            f"{k} {v}" for k, v in (("file", file), ("rule", rule), ("field", field)) if v
        )
        super().__init__(f"{where}: {message}" if where else message)
        self.message, self.file, self.rule, self.field = message, file, rule, field


class EngineError(CDSError):
    """The rules engine failed for one evaluation (never crashes the process)."""


class RequestError(CDSError):
    """A request that cannot be served as asked; ``status`` is the HTTP status."""

    status: int = 400
    code: str = "invalid"  # OperationOutcome.issue.code

    def __init__(self, diagnostics: str, *, expression: list[str] | None = None) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.expression = expression or []


class MalformedRequest(RequestError):
    status, code = 400, "structure"


class AuthenticationFailed(RequestError):
    """Any authentication failure. ``reason`` is for the log; callers see only 'failed'."""

    status, code = 401, "login"

    def __init__(self, reason: str) -> None:
        super().__init__("authentication failed")
        self.reason = reason


class UnknownService(RequestError):
    status, code = 404, "not-found"


class PrefetchUnavailable(RequestError):
    status, code = 412, "incomplete"


class PayloadTooLarge(RequestError):
    status, code = 413, "too-long"


class InvalidFhir(RequestError):
    status, code = 422, "invalid"


class UnstorableValue(RequestError):
    """The database refused a value (length, encoding): a data error, not an outage."""

    status, code = 422, "invalid"


class EvaluationTimeout(RequestError):
    """The evaluation did not finish within its time budget (the EHR gets an answer)."""

    status, code = 503, "timeout"


class StoreUnavailable(RequestError):
    status, code = 503, "transient"
