"""The rules dashboard: which rules fire, what prescribers do with them, which need work.

Every feedback event counts (a card accepted twice is two acceptances). Rates are of the
prescribers' answers: acceptance rate = acceptances / answers, override rate = overrides /
answers; repeat firings = cards that repeat an earlier card's problem (same rule, same
order) / cards; time to review = median minutes from issue to the first pharmacist action.

A rule is a candidate for revision when its override rate is above ``threshold`` (default
50%) over at least ``min_cards`` answers (default 10): a rate over three answers is
noise, not evidence. Its override reasons are listed with it. Days are the site's
(``CDS_SITE_TIMEZONE``).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from fastapi import APIRouter, Request, Response

from cds.store import console as store
from cds.web.console.charts import daily_severity_svg, override_rate_svg, rates_svg
from cds.web.console.params import day_start, parse_day, parse_int
from cds.web.console.routing import ConsoleRoute, CurrentUser, Maker
from cds.web.console.templates import render, site_zone

router = APIRouter(route_class=ConsoleRoute)

DEFAULT_DAYS = 30
PRESETS = (7, 30, 90)
_MAX_KEY = 128


def _key(value: str | None) -> str | None:
    value = (value or "").strip()
    return value if value and len(value) <= _MAX_KEY and value.isprintable() else None


@router.get("/rules", name="console_rules")
def rules(request: Request, user: CurrentUser, maker: Maker) -> Response:
    params = request.query_params
    tz = site_zone(request)
    threshold_pct = parse_int(params.get("threshold"), 50, 1, 100)
    min_cards = parse_int(params.get("min_cards"), 10, 1, 1_000_000)
    rule, pack = _key(params.get("rule")), _key(params.get("pack"))
    today = datetime.now(tz).date()
    all_time = params.get("period") == "all"
    until_day = parse_day(params.get("until")) or today
    since_day = parse_day(params.get("since"))
    if not all_time and since_day is None:
        since_day = until_day - timedelta(days=DEFAULT_DAYS - 1)
    if since_day and since_day > until_day:
        since_day, until_day = until_day, since_day
    chart_start = until_day
    with maker() as s:
        if all_time:
            since_day = None
            bounds = store.period_bounds(session=s)
            chart_start = bounds[0].astimezone(tz).date() if bounds else chart_start
        # A period running to today is left open-ended: a one-sided date range lets the
        # database stream the counts from ix_cards_stats instead of sorting the range.
        board = store.dashboard(
            session=s,
            since=day_start(since_day, tz) if since_day else None,
            until=None if until_day >= today else day_start(until_day + timedelta(days=1), tz),
            tz=tz,
            rule=rule,
            pack=pack,
        )
    # pack choices: the packs loaded now and those with cards in the period (no extra read)
    registry = getattr(request.app.state, "registry", None)
    loaded = {p.id for p in registry.packs()} if registry is not None else set()
    packs = sorted(loaded | {s.category for s in board.packs} | ({pack} if pack else set()))
    start: date = since_day or chart_start
    threshold = threshold_pct / 100
    flagged = [
        r
        for r in board.rules
        if r.override_rate is not None and r.override_rate > threshold and r.events >= min_cards
    ]
    base = {
        "since": since_day.isoformat() if since_day else None,
        "until": until_day.isoformat(),
        "period": "all" if all_time else None,
        "threshold": threshold_pct,
        "min_cards": min_cards,
    }
    return render(
        request,
        "rules.html",
        board=board,
        flagged={r.key for r in flagged},
        flagged_rules=flagged,
        threshold_pct=threshold_pct,
        threshold=threshold,
        min_cards=min_cards,
        since_day=since_day,
        until_day=until_day,
        all_time=all_time,
        rule=rule,
        pack=pack,
        packs=packs,
        base=base,
        presets=[(d, (today - timedelta(days=d - 1)).isoformat()) for d in PRESETS],
        daily_chart=daily_severity_svg(board.daily, start, until_day),
        rates_chart=rates_svg(board.days, start, until_day),
        rate_chart=override_rate_svg(board.rules, threshold, min_cards),
        issued=board.total.issued,
        nav="rules",
    )
