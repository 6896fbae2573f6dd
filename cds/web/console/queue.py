"""The alert queue (every card issued, newest first) and its CSV export."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from cds.store import console as store
from cds.web.console.params import PAGE_SIZES, filter_query, page_size, parse_queue
from cds.web.console.routing import ConsoleRoute, CurrentUser, Maker
from cds.web.console.templates import render

router = APIRouter(route_class=ConsoleRoute)

FACET_LABELS = {
    "indicator": "Indicator",
    "category": "Category",
    "rule": "Rule",
    "pack_version": "Pack version",
    "review_status": "Review status",
}


def home(request: Request, user: CurrentUser) -> Response:
    """``/review`` itself: the queue is the console's front page."""
    return RedirectResponse(str(request.url_for("console_queue").path), status_code=303)


@router.get("/alerts", name="console_queue")
def queue(request: Request, user: CurrentUser, maker: Maker) -> Response:
    params = request.query_params
    parsed = parse_queue(params)
    limit = page_size(params.get("per_page"))
    before = store.Cursor.decode(params.get("before"))
    after = None if before else store.Cursor.decode(params.get("after"))
    with maker() as s:
        page = store.queue_page(
            session=s, filter=parsed.filter, limit=limit, before=before, after=after
        )
        facets = store.facet_counts(session=s, filter=parsed.filter)
    query = filter_query(parsed)
    if limit != PAGE_SIZES[1]:
        query["per_page"] = limit
    options = {name: counts for name, counts in facets.counts.items()}
    for name in FACET_LABELS:  # a chosen value with no cards left still shows
        chosen = parsed.filter.facet_value(name)
        if chosen is not None and chosen not in dict(options[name]):
            options[name] = [(chosen, 0), *options[name]]
    return render(
        request,
        "queue.html",
        page=page,
        facets=facets,
        options=options,
        labels=FACET_LABELS,
        parsed=parsed,
        query=query,
        per_page=limit,
        page_sizes=PAGE_SIZES,
        statuses=store.REVIEW_STATUSES,
        first_page=before is None and after is None,
        nav="queue",
    )


# A formula starts with one of these; spreadsheets split cells on any of the separators
# (comma, semicolon in European locales, tab, pipe, newlines), so "x;=cmd|..." opened by
# a spreadsheet that splits on ";" has a cell "=cmd|...". Every piece that could become a
# cell is neutralised, not only the start of the value (hardening #12), and every field
# is quoted.
_FORMULA = re.compile(r"(^|[,;\t|\r\n])(\s*)(?=[=+\-@\t\r])")


def _csv_cell(value: object) -> object:
    """Text a spreadsheet will not run as a formula (CSV injection)."""
    if isinstance(value, str):
        return _FORMULA.sub(lambda m: f"{m.group(1)}{m.group(2)}'", value)
    return value


def _csv_lines(maker: Maker, f: store.QueueFilter) -> Iterator[str]:
    """CSV text, one chunk per batch of cards (``writerows`` keeps the loop in C)."""
    buf = io.StringIO()
    writer = csv.writer(buf, quoting=csv.QUOTE_ALL)
    writer.writerow(store.EXPORT_COLUMNS)
    for rows in store.iter_export(maker=maker, filter=f):
        writer.writerows(
            [
                _csv_cell(v)
                for v in (
                    r.id,
                    r.created_at.isoformat(),
                    r.indicator,
                    r.category,
                    r.rule,
                    r.pack_id,
                    r.pack_version,
                    r.review_status,
                    r.feedback_outcome,
                    r.patient_ref,
                    r.order_id,
                    r.hook,
                    r.summary,
                )
            ]
            for r in rows
        )
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
    yield buf.getvalue()


@router.get("/alerts.csv", name="console_export")
def export(request: Request, user: CurrentUser, maker: Maker) -> Response:
    """The filtered queue as CSV, streamed in batches (constant memory at any size)."""
    parsed = parse_queue(request.query_params)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        _csv_lines(maker, parsed.filter),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="cds-alerts-{stamp}.csv"'},
    )
