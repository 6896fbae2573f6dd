"""The alert queue, as a pharmacist works it (patient -> order -> problems, repeats
collapsed, group actions), or every card as issued (the audit view); and its CSV export."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime, tzinfo
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from cds.store import console as store
from cds.store import reviews
from cds.store import users as store_users
from cds.web.console.params import (
    PAGE_SIZES,
    filter_query,
    page_size,
    parse_int,
    parse_queue,
    view_of,
)
from cds.web.console.present import fmt_dt
from cds.web.console.routing import ConsoleError, ConsoleRoute, CurrentUser, Maker
from cds.web.console.templates import render, site_zone

router = APIRouter(route_class=ConsoleRoute)

FACET_LABELS = {
    "indicator": "Severity",
    "category": "Category",
    "rule": "Rule",
    "pack": "Pack",
    "pack_version": "Pack version",
    "review_status": "Review status",
    "source": "Source",
    "feedback": "Prescriber's answer",
}
#: How a facet value reads in the filter bar.
VALUE_LABELS = {
    "feedback": {
        "overridden": "overridden (at least once)",
        "accepted": "accepted (at least once)",
        "both": "accepted and overridden",
        "none": "no answer yet",
    },
    "source": {"hook": "hook call (EHR)", "sweep": "population sweep"},
}
PATIENTS_PER_PAGE = (10, 20, 50)
GROUP_ACTIONS = {"acknowledge": "Acknowledged", "resolve": "Resolved", "escalate": "Escalated"}


def me(user: store_users.SessionUser) -> store.Escalation:
    """Who "escalated to me" means: this user, or their role without a named user."""
    return store.Escalation(user_id=user.user_id, role=user.role)


def home(request: Request, user: CurrentUser) -> Response:
    """``/review`` itself: the queue is the console's front page."""
    return RedirectResponse(str(request.url_for("console_queue").path), status_code=303)


@router.get("/alerts", name="console_queue")
def queue(request: Request, user: CurrentUser, maker: Maker) -> Response:
    params = request.query_params
    tz = site_zone(request)
    parsed = parse_queue(params, tz, me(user))
    view = view_of(params)
    query = filter_query(parsed)
    page = grouped = None
    before = after = start = None
    if view == "cards":
        limit = page_size(params.get("per_page"))
        before = store.Cursor.decode(params.get("before"))
        after = None if before else store.Cursor.decode(params.get("after"))
    else:
        limit = parse_int(params.get("patients"), 20, 1, max(PATIENTS_PER_PAGE))
        limit = limit if limit in PATIENTS_PER_PAGE else 20
        start = store.Cursor.decode(params.get("start"))
    with maker() as s:
        if view == "cards":
            page = store.queue_page(
                session=s, filter=parsed.filter, limit=limit, before=before, after=after
            )
        else:
            grouped = store.grouped_page(
                session=s, filter=parsed.filter, patients=limit, start=start
            )
        facets = store.facet_counts(session=s, filter=parsed.filter)
        escalated = store.escalated_count(session=s, to=me(user))
    if view == "cards":
        query["view"] = "cards"
        if limit != PAGE_SIZES[1]:
            query["per_page"] = limit
    elif limit != 20:
        query["patients"] = limit
    options = {name: counts for name, counts in facets.counts.items()}
    for name in FACET_LABELS:  # a chosen value with no cards left still shows
        chosen = parsed.filter.facet_value(name)
        if chosen is not None and chosen not in dict(options[name]):
            options[name] = [(chosen, 0), *options[name]]
    done = params.get("done")
    return render(
        request,
        "queue.html",
        view=view,
        page=page,
        grouped=grouped,
        facets=facets,
        options=options,
        labels=FACET_LABELS,
        value_labels=VALUE_LABELS,
        parsed=parsed,
        query=query,
        form_query=urlencode({k: v for k, v in query.items() if v not in (None, "")}),
        per_page=limit,
        page_sizes=PAGE_SIZES,
        patient_sizes=PATIENTS_PER_PAGE,
        statuses=store.REVIEW_STATUSES,
        first_page=before is None and after is None and start is None,
        escalated=escalated,
        drawn_at=datetime.now(UTC).isoformat(),
        done=GROUP_ACTIONS.get(done or ""),
        done_n=parse_int(params.get("n"), 0, 0, store.MAX_GROUP_ACTION),
        nav="queue",
    )


def _upto(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text)
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    except (ValueError, OverflowError):  # OverflowError: year 1 at +14:00 moved to UTC
        return None


@router.post("/alerts/group", name="console_group_review")
def group_review(request: Request, user: CurrentUser, maker: Maker) -> Response:
    """One action on a group of the queue (a patient, an order, a problem's repeats):
    each card gets its own review row, all sharing a batch id. Only the cards the page
    showed: the same filter, issued no later than when the page was drawn."""
    form = request.state.console_form
    chosen: dict[str, str] = {}
    if form.get("do"):  # the queue's buttons: one form per patient, the group in the button
        try:
            chosen = dict(parse_qsl(str(form.get("do"))[:2000], max_num_fields=3))
        except ValueError:
            chosen = {}
    action = str(chosen.get("action") or form.get("action") or "")
    if action not in GROUP_ACTIONS:
        raise ConsoleError(400, "Request not understood", "Unknown group action.")
    patient = str(form.get("patient") or "")
    if not patient or len(patient) > 512 or not patient.isprintable():
        raise ConsoleError(400, "Request not understood", "The group names no patient.")
    order = str(chosen.get("order") or form.get("order") or "") or None
    rule = str(chosen.get("rule") or form.get("rule") or "") or None
    if any(v is not None and (len(v) > 512 or not v.isprintable()) for v in (order, rule)):
        raise ConsoleError(400, "Request not understood", "The group is not one we showed.")
    q = str(form.get("q") or "")[:4000]
    try:
        params = dict(parse_qsl(q, keep_blank_values=False, max_num_fields=40))
    except ValueError:
        params = {}
    parsed = parse_queue(params, site_zone(request), me(user))
    upto = _upto(str(form.get("upto") or "")[:64]) if form.get("upto") else None
    if form.get("upto") and upto is None:
        raise ConsoleError(400, "Request not understood", "The page's time is not a time.")
    try:
        with maker.begin() as s:
            target = (
                reviews.parse_escalation(session=s, value=str(form.get("escalate_to") or ""))
                if action == "escalate" and form.get("escalate_to")
                else None
            )
            n = reviews.group_review(
                session=s,
                group=reviews.Group(patient, order, rule),
                filter=parsed.filter,
                upto=upto,
                action=action,
                note=str(form.get("note") or ""),
                reviewer_id=user.user_id,
                now=datetime.now(UTC),
                escalate_to=target,
            )
    except reviews.ReviewError as exc:
        raise ConsoleError(400, "Not recorded", f"{exc}. Go back and try again.") from exc
    back = {**params, "done": action, "n": str(n)}
    for key in ("start", "view", "patients", "per_page"):
        if form.get(key):
            back[key] = str(form.get(key))
    url = str(request.url_for("console_queue").path)
    return RedirectResponse(f"{url}?{urlencode(back)}", status_code=303)


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


def _escalated_to(r: store.QueueRow, users: dict[int, str]) -> str | None:
    if r.escalated_to_user_id is not None:
        return users.get(r.escalated_to_user_id, f"user {r.escalated_to_user_id}")
    return f"role: {r.escalated_to_role}" if r.escalated_to_role else None


def _export_row(r: store.QueueRow, batch: store.ExportBatch, tz: tzinfo) -> list[Any]:
    review = batch.reviews.get(r.id)
    return [
        r.id,
        r.created_at.isoformat(),
        fmt_dt(r.created_at, tz),
        r.indicator,
        r.category,
        r.rule,
        r.pack_id,
        r.pack_version,
        r.source,
        r.run_id,
        r.patient_ref,
        r.patient_name,
        r.patient_mrn,
        r.location,
        r.order_id,
        r.order_text,
        r.prescriber_name,
        r.prescriber_ref,
        r.hook,
        r.summary,
        r.problem_id if r.is_repeat else None,
        r.feedback_outcome,
        r.accepted_n,
        r.overridden_n,
        r.override_reason,
        r.review_status,
        _escalated_to(r, batch.users),
        review.reviewer if review else None,
        review.at.isoformat() if review else None,
        review.note if review else None,
    ]


def _csv_lines(maker: Maker, f: store.QueueFilter, tz: tzinfo) -> Iterator[str]:
    """CSV text, one chunk per batch of cards (``writerows`` keeps the loop in C)."""
    buf = io.StringIO()
    writer = csv.writer(buf, quoting=csv.QUOTE_ALL)
    writer.writerow(store.EXPORT_COLUMNS)
    for batch in store.iter_export(maker=maker, filter=f):
        writer.writerows([_csv_cell(v) for v in _export_row(r, batch, tz)] for r in batch.rows)
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
    yield buf.getvalue()


@router.get("/alerts.csv", name="console_export")
def export(request: Request, user: CurrentUser, maker: Maker) -> Response:
    """The filtered queue as CSV, one line per card, streamed in batches (constant memory
    at any size). Times: ``created_at`` in UTC, ``created_at_local`` in the site's zone."""
    tz = site_zone(request)
    parsed = parse_queue(request.query_params, tz, me(user))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        _csv_lines(maker, parsed.filter, tz),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="cds-alerts-{stamp}.csv"'},
    )
