"""Reading the console's query strings leniently.

Why not FastAPI ``Query`` validation: a bookmarked URL with a stale rule name or a typo'd
date should still show the queue (with a note saying what was ignored), not an error
page. Everything is parsed here into typed values plus a list of notices.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from cds.store.audit import REF_MAX
from cds.store.console import INDICATORS, REVIEW_STATUSES, QueueFilter

PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
_MAX_TEXT = 128
FILTER_KEYS = (
    "indicator",
    "category",
    "rule",
    "pack_version",
    "review_status",
    "since",
    "until",
    "patient",
)


@dataclass
class Parsed:
    filter: QueueFilter
    since_day: date | None
    until_day: date | None
    notices: list[str] = field(default_factory=list)


#: Days outside these years are typos or probes: ``until=9999-12-31`` overflowed the
#: "to is inclusive" arithmetic into a 500 (hardening #11).
FIRST_YEAR, LAST_YEAR = 1900, 9000
_CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def parse_day(text: str | None) -> date | None:
    if not text:
        return None
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        return None
    return day if FIRST_YEAR <= day.year <= LAST_YEAR else None


def day_start(d: date) -> datetime:
    return datetime.combine(d, time.min, tzinfo=UTC)


def _text(params: Mapping[str, str], key: str, limit: int = _MAX_TEXT) -> str | None:
    """A filter value; one with control characters (a NUL ended a PostgreSQL query in a
    500 and cut the CSV export short) or longer than ``limit`` matches nothing we store,
    so it is dropped."""
    value = (params.get(key) or "").strip()
    if _CONTROL.search(value) or len(value) > limit:
        return None
    return value or None


def parse_queue(params: Mapping[str, str]) -> Parsed:
    """The queue filter from a query string; unknown values are dropped with a notice."""
    notices: list[str] = []
    for key in FILTER_KEYS:
        value = params.get(key) or ""
        if _CONTROL.search(value):
            notices.append(f"Ignored the {key} filter: it holds control characters.")
    indicator = _text(params, "indicator")
    if indicator is not None and indicator not in INDICATORS:
        notices.append(f"Ignored unknown indicator {indicator!r}.")
        indicator = None
    status = _text(params, "review_status")
    if status is not None and status not in REVIEW_STATUSES:
        notices.append(f"Ignored unknown review status {status!r}.")
        status = None
    days: dict[str, date | None] = {}
    for key in ("since", "until"):
        raw = _text(params, key)
        days[key] = parse_day(raw)
        if raw and days[key] is None:
            notices.append(f"Ignored {key} date {raw!r} (use YYYY-MM-DD).")
    since, until = days["since"], days["until"]
    if since and until and since > until:
        notices.append("The 'from' date is after the 'to' date; swapped them.")
        since, until = until, since
    f = QueueFilter(
        indicator=indicator,
        category=_text(params, "category"),
        rule=_text(params, "rule"),
        pack_version=_text(params, "pack_version"),
        review_status=status,
        since=day_start(since) if since else None,
        until=day_start(until + timedelta(days=1)) if until else None,  # 'to' is inclusive
        patient=_text(params, "patient", limit=REF_MAX),
    )
    return Parsed(filter=f, since_day=since, until_day=until, notices=notices)


def filter_query(parsed: Parsed) -> dict[str, Any]:
    """The filter as query parameters (for pagination, export and facet links)."""
    f = parsed.filter
    return {
        "indicator": f.indicator,
        "category": f.category,
        "rule": f.rule,
        "pack_version": f.pack_version,
        "review_status": f.review_status,
        "since": parsed.since_day.isoformat() if parsed.since_day else None,
        "until": parsed.until_day.isoformat() if parsed.until_day else None,
        "patient": f.patient,
    }


def parse_int(text: str | None, default: int, lo: int, hi: int) -> int:
    try:
        value = int((text or "").strip())
    except ValueError:
        return default
    return min(hi, max(lo, value))


def page_size(text: str | None) -> int:
    value = parse_int(text, DEFAULT_PAGE_SIZE, 1, max(PAGE_SIZES))
    return value if value in PAGE_SIZES else DEFAULT_PAGE_SIZE
