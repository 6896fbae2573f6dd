"""FHIR R4B validation of the orders the rules judge (and only those).

Why only those: ``fhir.resources`` validation costs 100-200 us per resource, so validating a
whole prefetch would eat the latency budget; the raw readers already survive bad data.
The orders that become facts are different: a card's suggestion edits and returns them, so a
structural problem there (an object where an array belongs, an R5 field in an R4 request)
is worth a DataIssue and a ``fhir_valid=False`` fact. The issue names only field paths from
the validator, never values (no PHI).

R4B is used, not the package default (R5): R5 rejects R4 MedicationRequests.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import ValidationError

from cds.clinical.fhirdata import JSON

_MAX_FIELDS = 5


def _model() -> Any:
    # Imported on first use: the R4B model tree is slow to import and only needed here.
    from fhir.resources.R4B.medicationrequest import MedicationRequest

    return MedicationRequest


# Per-evaluation memo (resource identity -> result): the suggestion re-check extracts the
# same request again, and its unchanged orders need not be validated twice. Scoped to one
# evaluation on purpose, so repeated identical requests (a benchmark) pay full price.
_MEMO: contextvars.ContextVar[dict[int, list[str]] | None] = contextvars.ContextVar(
    "cds_validation_memo", default=None
)


@contextmanager
def validation_memo() -> Iterator[None]:
    """Within this block, each resource object is validated at most once."""
    token = _MEMO.set({})
    try:
        yield
    finally:
        _MEMO.reset(token)


def judge_as(resource: JSON, original: JSON) -> None:
    """Within the current memo, judge ``resource`` (a suggestion's edit of ``original``)
    as ``original`` is judged, without validating it again.

    Why this holds: the suggestion builders change only the medication, the dosage and the
    status of an order, with elements the property kit checks are valid R4B ("valid cards"
    validates every suggested resource); an order invalid elsewhere stays invalid there.
    The re-check of a suggestion was validating every corrected draft in full (~0.2 ms)."""
    memo = _MEMO.get()
    if memo is None or resource.get("resourceType") != "MedicationRequest":
        return
    memo[id(resource)] = invalid_fields(original)


def invalid_fields(resource: JSON) -> list[str]:
    """Dotted paths of the fields that fail R4B validation (empty when valid)."""
    if resource.get("resourceType") != "MedicationRequest":
        return []
    memo = _MEMO.get()
    if memo is not None:
        key = id(resource)
        if key not in memo:
            memo[key] = _invalid_fields(resource)
        return memo[key]
    return _invalid_fields(resource)


def _invalid_fields(resource: JSON) -> list[str]:
    try:
        _model().model_validate(resource)
    except ValidationError as exc:
        paths = []
        for err in exc.errors():
            path = ".".join(str(p) for p in err.get("loc", ()) if not str(p).startswith("fn-"))
            if path and path not in paths:
                paths.append(path)
        return paths[:_MAX_FIELDS] or ["(resource)"]
    except (TypeError, ValueError, RecursionError):
        return ["(resource)"]
    return []
