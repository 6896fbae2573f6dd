"""Defensive readers for raw FHIR JSON (dicts straight from the request).

Why raw dicts: validating every resource with ``fhir.resources`` costs 100-200 us each, and
a hook request carries dozens of resources of which a handful matter. The clinical layer
therefore filters and reads the raw JSON itself, through these helpers, which never raise on
bad data: a value of the wrong type reads as missing, and callers that need the value record
a problem naming the field. Only resources that become order facts are validated in full
(see ``validation.py``).

The helpers accept the spelling differences between STU3, R4 and R5 where the callers ask for
them; they know nothing clinical.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Any

JSON = dict[str, Any]


def as_list(value: Any) -> list[Any]:
    """A list field: a list as is, a lone object (a common EHR slip) as a one-item list."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [value]
    return []


def as_dicts(value: Any) -> list[JSON]:
    """The dict items of a list field (junk items dropped)."""
    return [v for v in as_list(value) if isinstance(v, dict)]


def as_dict(value: Any) -> JSON | None:
    return value if isinstance(value, dict) else None


def as_str(value: Any) -> str | None:
    """A non-empty string, else None."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return None


def as_num(value: Any) -> float | None:
    """A finite JSON number (bool is not a number), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        f = float(value)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def as_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def codings(concept: Any) -> list[tuple[str, str, str]]:
    """(system, code, display) of a CodeableConcept (or a lone Coding); junk dropped.

    A missing system reads as "" so that system-less codes can still be matched where the
    caller allows it (timing abbreviations).
    """
    cc = as_dict(concept)
    if cc is None:
        return []
    items = as_dicts(cc.get("coding"))
    if not items and "code" in cc:  # a bare Coding where a CodeableConcept belongs
        items = [cc]
    out = []
    for c in items:
        code = c.get("code")
        if type(code) is not str or not code.strip():
            continue
        system = c.get("system")
        display = c.get("display")
        out.append(
            (
                system.strip() if type(system) is str else "",
                code.strip(),
                display.strip() if type(display) is str else "",
            )
        )
    return out


def concept_texts(concept: Any) -> list[str]:
    """Human-readable words of a CodeableConcept: its text and its codings' displays."""
    cc = as_dict(concept)
    if cc is None:
        return []
    out = [t for t in (as_str(cc.get("text")),) if t]
    out.extend(d for _, _, d in codings(cc) if d)
    return out


def concept_name(concept: Any) -> str | None:
    """The best single display name of a CodeableConcept (text, else first display)."""
    texts = concept_texts(concept)
    return texts[0] if texts else None


def ref_id(reference: Any, resource_type: str | None = None) -> str | None:
    """The id a Reference points at ("Type/id", a full URL, or "#id" for contained).

    Returns "#id" for contained references so callers can tell them apart; None when the
    reference names another resource type or cannot be read.
    """
    ref = as_dict(reference)
    if ref is None:
        return None
    text = as_str(ref.get("reference"))
    if text is None:
        return None
    if text.startswith("#"):
        return text if len(text) > 1 else None
    parts = text.rstrip("/").split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) < 2:
        return None
    if resource_type is not None and parts[-2] != resource_type:
        return None
    return parts[-1] or None


_DATE_RE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")


@lru_cache(maxsize=8192)
def _parse_datetime(text: str, tz: tzinfo) -> datetime | None:
    m = _DATE_RE.match(text)
    try:
        if m:
            year, month, day = int(m[1]), int(m[2] or 1), int(m[3] or 1)
            return datetime(year, month, day, tzinfo=tz)
        if "T" not in text:
            return None
        value = datetime.fromisoformat(text.replace("z", "Z"))
    except (ValueError, OverflowError):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value


def parse_datetime(value: Any, tz: tzinfo) -> datetime | None:
    """A FHIR date/dateTime/instant as an aware datetime (partial dates: their first instant).

    Dates and date-times without an offset are read in ``tz`` (the evaluation instant's zone)
    so that calendar-day arithmetic is done in one zone.
    """
    text = as_str(value)
    if text is None or len(text) > 40:
        return None
    return _parse_datetime(text, tz)


def parse_date_latest(value: Any) -> date | None:
    """A FHIR date read as the *last* day it can mean ("1971" -> 1971-12-31).

    Used for birth dates: a partial birth date then gives the youngest possible age, which
    keeps the stricter paediatric limits in play rather than assuming an adult.
    """
    text = as_str(value)
    if text is None:
        return None
    m = _DATE_RE.match(text[:10])
    if not m:
        return None
    try:
        year = int(m[1])
        if m[3]:
            return date(year, int(m[2]), int(m[3]))
        if m[2]:
            month = int(m[2])
            nxt = date(year + (month == 12), month % 12 + 1, 1)
            return nxt - timedelta(days=1)
        return date(year, 12, 31)
    except ValueError:
        return None


def period_bounds(period: Any, tz: tzinfo) -> tuple[datetime | None, datetime | None]:
    p = as_dict(period)
    if p is None:
        return None, None
    return parse_datetime(p.get("start"), tz), parse_datetime(p.get("end"), tz)


def resource_ref(resource: JSON) -> str:
    """ "Type/id" for messages (never any other content: no PHI in issues)."""
    rtype = as_str(resource.get("resourceType")) or "Resource"
    rid = as_str(resource.get("id")) or "?"
    return f"{rtype}/{rid}"
