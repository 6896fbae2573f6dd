"""Reading the console's query strings leniently.

Why not FastAPI ``Query`` validation: a bookmarked URL with a stale rule name or a typo'd
date should still show the queue (with a note saying what was ignored), not an error
page. Everything is parsed here into typed values plus a list of notices.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from cds.store.audit import REF_MAX
from cds.store.console import (
    FEEDBACK_FILTERS,
    INDICATORS,
    REVIEW_STATUSES,
    SOURCES,
    Escalation,
    QueueFilter,
)

PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
_MAX_TEXT = 128
FILTER_KEYS = (
    "indicator",
    "category",
    "rule",
    "pack",
    "pack_version",
    "review_status",
    "source",
    "feedback",
    "since",
    "until",
    "patient",
    "run",
    "hide_dq",
    "escalated",
)
VIEWS = ("patients", "cards")  # grouped by patient, order and problem; or every card


@dataclass
class Parsed:
    filter: QueueFilter
    since_day: date | None
    until_day: date | None
    notices: list[str] = field(default_factory=list)
    escalated_to_me: bool = False


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


def day_start(d: date, tz: tzinfo = UTC) -> datetime:
    """The instant a site-local day begins, in UTC (what the store compares)."""
    return datetime.combine(d, time.min, tzinfo=tz).astimezone(UTC)


def _text(params: Mapping[str, str], key: str, limit: int = _MAX_TEXT) -> str | None:
    """A filter value; one with control characters (a NUL ended a PostgreSQL query in a
    500 and cut the CSV export short) or longer than ``limit`` matches nothing we store,
    so it is dropped."""
    value = (params.get(key) or "").strip()
    if _CONTROL.search(value) or len(value) > limit:
        return None
    return value or None


def _choice(
    params: Mapping[str, str], key: str, allowed: tuple[str, ...], what: str, notices: list[str]
) -> str | None:
    value = _text(params, key)
    if value is not None and value not in allowed:
        notices.append(f"Ignored unknown {what} {value!r}.")
        return None
    return value


def parse_queue(
    params: Mapping[str, str], tz: tzinfo = UTC, me: Escalation | None = None
) -> Parsed:
    """The queue filter from a query string; unknown values are dropped with a notice.

    Days are the site's (``CDS_SITE_TIMEZONE``); ``me`` is who "escalated to me" means.
    """
    notices: list[str] = []
    for key in FILTER_KEYS:
        value = params.get(key) or ""
        if _CONTROL.search(value):
            notices.append(f"Ignored the {key} filter: it holds control characters.")
    indicator = _choice(params, "indicator", INDICATORS, "indicator", notices)
    status = _choice(params, "review_status", REVIEW_STATUSES, "review status", notices)
    source = _choice(params, "source", SOURCES, "source", notices)
    feedback = _choice(params, "feedback", tuple(FEEDBACK_FILTERS), "feedback filter", notices)
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
    to_me = _text(params, "escalated") == "me" and me is not None
    f = QueueFilter(
        indicator=indicator,
        category=_text(params, "category"),
        rule=_text(params, "rule"),
        pack=_text(params, "pack"),
        pack_version=_text(params, "pack_version"),
        review_status=status,
        source=source,
        feedback=feedback,
        since=day_start(since, tz) if since else None,
        # 'to' is inclusive: up to the start of the next site-local day
        until=day_start(until + timedelta(days=1), tz) if until else None,
        patient=_text(params, "patient", limit=REF_MAX),
        run_id=_text(params, "run", limit=36),
        hide_data_quality=True if _text(params, "hide_dq") in ("1", "on", "true") else None,
        escalated_to=me if to_me else None,
    )
    return Parsed(
        filter=f, since_day=since, until_day=until, notices=notices, escalated_to_me=to_me
    )


def filter_query(parsed: Parsed) -> dict[str, Any]:
    """The filter as query parameters (for pagination, export and facet links)."""
    f = parsed.filter
    return {
        "indicator": f.indicator,
        "category": f.category,
        "rule": f.rule,
        "pack": f.pack,
        "pack_version": f.pack_version,
        "review_status": f.review_status,
        "source": f.source,
        "feedback": f.feedback,
        "since": parsed.since_day.isoformat() if parsed.since_day else None,
        "until": parsed.until_day.isoformat() if parsed.until_day else None,
        "patient": f.patient,
        "run": f.run_id,
        "hide_dq": "1" if f.hide_data_quality else None,
        "escalated": "me" if parsed.escalated_to_me else None,
    }


def view_of(params: Mapping[str, str]) -> str:
    value = params.get("view") or ""
    return value if value in VIEWS else VIEWS[0]


def parse_int(text: str | None, default: int, lo: int, hi: int) -> int:
    try:
        value = int((text or "").strip())
    except ValueError:
        return default
    return min(hi, max(lo, value))


def page_size(text: str | None) -> int:
    value = parse_int(text, DEFAULT_PAGE_SIZE, 1, max(PAGE_SIZES))
    return value if value in PAGE_SIZES else DEFAULT_PAGE_SIZE
