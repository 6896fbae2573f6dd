"""One NDJSON line: which patient it belongs to, or why it cannot be used.

This is the specification both engines follow. The DuckDB engine expresses the structural
part in SQL (``cds.batch.duck``) for speed; the Spark engine calls :func:`classify` on
every line; ``tests/batch/test_lines.py`` feeds the same corpus of awkward lines to both
and requires the same answer. Every refusal names a :data:`REASONS` entry and is
reported with its file and line number: a bad line is never fatal and never silently
dropped.

Order of the checks (the first that fails is the reason):

1. blank (only whitespace): skipped, not an error (NDJSON writers end files with one);
2. ``invalid-json``: not one JSON value (``NaN``/``Infinity`` are not JSON either: the
   hook route refuses them too);
3. ``not-an-object``: a JSON value that is not an object;
4. ``no-resource-type``: ``resourceType`` missing or not a non-empty string;
5. types the sweep does not read (``Claim``, ``AllergyIntolerance``...): skipped and
   counted, not an error;
6. ``patient-without-id``: a Patient whose ``id`` is not a non-empty string;
   ``medication-without-id``: the same for a Medication (nothing could reference it);
7. ``no-patient-reference``: any other resource whose ``subject`` (else ``patient``)
   ``.reference`` does not name ``Patient/<id>`` (relative or absolute URL, a
   ``/_history/n`` suffix allowed);
8. at evaluation: ``not-utf8`` (bytes that are not UTF-8, or the replacement character
   a reader substituted for them).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

#: Resource types a patient-view call can carry (``cds.clinical.extract`` reads these).
PATIENT_TYPES = frozenset(
    {
        "Patient",
        "MedicationRequest",
        "MedicationStatement",
        "Observation",
        "Condition",
        "Encounter",
        "Procedure",
        "ServiceRequest",
    }
)
READ_TYPES = PATIENT_TYPES | {"Medication"}

REASONS: dict[str, str] = {
    "invalid-json": "not valid JSON",
    "not-an-object": "not a JSON object",
    "no-resource-type": "no resourceType",
    "patient-without-id": "a Patient without id",
    "medication-without-id": "a Medication without id",
    "no-patient-reference": "no Patient reference in subject or patient",
    "not-utf8": "not valid UTF-8",
    "no-patient-resource": "no Patient line for the patient these resources reference",
    "invalid-patient": "the Patient is not valid FHIR R4",
    "evaluation-error": "the evaluation failed (a defect: see the log)",
}

# The same patterns appear in the DuckDB SQL (cds/batch/duck.py); keep them together.
PATIENT_REF = r"(?:^|/)Patient/([A-Za-z0-9\-\.]{1,64})(?:/_history/[^/]*)?$"
MEDICATION_REF = r"(?:^|/)Medication/([A-Za-z0-9\-\.]{1,64})(?:/_history/[^/]*)?$"
_PATIENT_REF = re.compile(PATIENT_REF)
_MEDICATION_REF = re.compile(MEDICATION_REF)


@dataclass(frozen=True)
class Line:
    """A classified line. ``kind``: ``patient`` (belongs to ``key``), ``medication``
    (a Medication with id ``key``), ``skip`` (blank or a type not read) or ``bad``."""

    kind: str
    key: str | None = None
    resource_type: str | None = None
    reason: str | None = None
    medication_ref: str | None = None  # the Medication a medication record references


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(text: str) -> Any:
    """JSON as the hook route decodes it (``NaN``/``Infinity`` refused)."""
    return json.loads(text, parse_constant=_reject_constant)


def _reference(res: dict[str, Any], field: str) -> str | None:
    value = res.get(field)
    if isinstance(value, dict):
        ref = value.get("reference")
        return ref if isinstance(ref, str) else None
    return None


def patient_key(res: dict[str, Any]) -> str | None:
    """The id of the Patient a resource belongs to (``subject``, else ``patient``)."""
    ref = _reference(res, "subject")
    if ref is None:
        ref = _reference(res, "patient")
    if ref is None:
        return None
    m = _PATIENT_REF.search(ref)
    return m.group(1) if m else None


def medication_ref(res: dict[str, Any]) -> str | None:
    """The Medication id a MedicationRequest/Statement references (R4, or R5 ``medication``)."""
    ref = _reference(res, "medicationReference")
    if ref is None:
        med = res.get("medication")
        if isinstance(med, dict):
            ref = _reference(med, "reference")
    if ref is None:
        return None
    m = _MEDICATION_REF.search(ref)
    return m.group(1) if m else None


def classify_resource(res: Any) -> Line:
    """Steps 3-7 on a decoded JSON value."""
    if not isinstance(res, dict):
        return Line("bad", reason="not-an-object")
    rtype = res.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        return Line("bad", reason="no-resource-type")
    if rtype not in READ_TYPES:
        return Line("skip", resource_type=rtype)
    if rtype in ("Patient", "Medication"):
        rid = res.get("id")
        if not isinstance(rid, str) or not rid:
            return Line("bad", resource_type=rtype, reason=f"{rtype.lower()}-without-id")
        kind = "patient" if rtype == "Patient" else "medication"
        return Line(kind, key=rid, resource_type=rtype)
    key = patient_key(res)
    if key is None:
        return Line("bad", resource_type=rtype, reason="no-patient-reference")
    med = medication_ref(res) if rtype in ("MedicationRequest", "MedicationStatement") else None
    return Line("patient", key=key, resource_type=rtype, medication_ref=med)


def classify(text: str | None) -> Line:
    """Steps 1-7 on the text of one line."""
    if text is None or not text.strip():
        return Line("skip")
    try:
        value = loads(text.lstrip("\ufeff"))
    except (ValueError, RecursionError):
        return Line("bad", reason="invalid-json")
    return classify_resource(value)


def decode(raw: str, *, latin1: bool) -> tuple[dict[str, Any] | None, str | None]:
    """(resource, None) or (None, reason) for a line already classified as usable.

    ``latin1``: the text is the line's bytes read as Latin-1 (the DuckDB reader does so
    to number every line, whatever its encoding), so it is re-decoded as UTF-8 here.
    """
    text = raw.lstrip("\ufeff")
    bad_bytes = False
    if latin1:
        data = text.encode("latin-1")
        if data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("utf-8", errors="replace")
            bad_bytes = True
    try:
        value = loads(text)
    except (ValueError, RecursionError):
        return None, "invalid-json"
    if not isinstance(value, dict):
        return None, "not-an-object"
    if bad_bytes or "\ufffd" in text:
        return None, "not-utf8"
    return value, None
