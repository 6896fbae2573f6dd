"""The rule-changes page: what a changed pack would do, before it is served.

Two sources, for the rules committee: **replay reports** (``cds rules replay``: a working
copy of a pack over the stored hook calls or a Bulk export, per rule, the cards that would
appear, disappear or change severity) and **shadow packs** (``CDS_SHADOW_PACKS``: a pack
version evaluated on every live call and never answered; per rule, its would-be cards and
what prescribers did with the live cards of the same calls).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request, Response

from cds.store import replays, shadow
from cds.web.console.params import day_start, parse_day
from cds.web.console.routing import ConsoleRoute, CurrentUser, Maker
from cds.web.console.templates import render

router = APIRouter(route_class=ConsoleRoute)

DEFAULT_DAYS = 30
REPORTS_SHOWN = 20


@router.get("/rule-changes", name="console_rule_changes")
def rule_changes(request: Request, user: CurrentUser, maker: Maker) -> Response:
    params = request.query_params
    today = datetime.now(UTC).date()
    until_day = parse_day(params.get("until")) or today
    since_day = parse_day(params.get("since")) or until_day - timedelta(days=DEFAULT_DAYS - 1)
    if since_day > until_day:
        since_day, until_day = until_day, since_day
    wanted = (params.get("report") or "")[:36]
    notices = []
    with maker() as s:
        reports = replays.recent_reports(session=s, limit=REPORTS_SHOWN)
        selected = None
        if wanted:
            selected = replays.get_report(session=s, report_id=wanted)
            if selected is None:
                notices.append("That replay report does not exist; the newest is shown.")
        if selected is None and reports:
            selected = reports[0]
        shadows = shadow.shadow_summary(
            session=s,
            since=day_start(since_day),
            until=day_start(until_day + timedelta(days=1)),
        )
    return render(
        request,
        "rule_changes.html",
        reports=reports,
        selected=selected,
        shadows=shadows,
        since_day=since_day,
        until_day=until_day,
        notices=notices,
        nav="rule_changes",
    )
