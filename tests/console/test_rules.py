"""The rules dashboard: counts per rule and category, flags, charts."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from cds.store import console as store
from cds.store.audit import FeedbackItem, store_feedback
from cds.web.console.charts import daily_severity_svg, override_rate_svg
from tests.console.seed import add_card

TODAY = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
NOISY = "baclofen-interaction-gabapentinoid"
GOOD = "baclofen-oral-ceiling-extreme"


def feedback(
    maker: sessionmaker[Session], card_id: str, outcome: str, reason: str | None = None
) -> None:
    store_feedback(
        maker=maker,
        service_id="svc",
        received_at=datetime.now(UTC),
        items=[
            FeedbackItem(
                card_id=card_id,
                outcome=outcome,
                accepted_suggestions=[],
                override_code=reason and reason.lower().replace(" ", "-"),
                override_system=reason and "x",
                override_display=reason,
                override_comment=None,
                outcome_timestamp=datetime.now(UTC),
            )
        ],
    )


def build(maker: sessionmaker[Session]) -> None:
    """NOISY: 12 cards, 9 overridden, 2 accepted, 1 silent. GOOD: 10 cards, 1 overridden."""
    for i in range(12):
        cid = add_card(
            maker,
            rule_id=NOISY,
            category="interaction",
            indicator="info",
            when=TODAY - timedelta(days=i % 3),
        )
        if i < 9:
            feedback(maker, cid, "overridden", "Will monitor closely" if i < 6 else "Other")
        elif i < 11:
            feedback(maker, cid, "accepted")
    for i in range(10):
        cid = add_card(
            maker,
            rule_id=GOOD,
            category="dose-ceiling",
            indicator="critical",
            when=TODAY - timedelta(days=1),
        )
        feedback(maker, cid, "overridden" if i == 0 else "accepted", "Specialist advice")
    add_card(maker, rule_id=GOOD, category="dose-ceiling", when=TODAY - timedelta(days=60))


def test_per_rule_and_category_counts(maker: sessionmaker[Session]) -> None:
    build(maker)
    with maker() as s:
        board = store.dashboard(session=s, since=TODAY - timedelta(days=29), until=None)
    rules = {r.key: r for r in board.rules}
    noisy, good = rules[NOISY], rules[GOOD]
    assert (noisy.issued, noisy.accepted, noisy.overridden, noisy.no_feedback) == (12, 2, 9, 1)
    assert noisy.override_rate == 9 / 11
    assert noisy.reasons == [("Will monitor closely", 6), ("Other", 3)]
    assert (good.issued, good.accepted, good.overridden) == (10, 9, 1)  # the 60-day-old one is out
    cats = {c.key: c for c in board.categories}
    assert cats["interaction"].issued == 12 and cats["dose-ceiling"].overridden == 1
    assert sum(n for _, _, n in board.daily) == 22


def test_dashboard_flags_noisy_rules(signed_in: TestClient, maker: sessionmaker[Session]) -> None:
    build(maker)
    html = signed_in.get("/review/rules").text
    assert "Candidates for revision" in html
    flagged = html[html.index("Candidates for revision") : html.index("Cards by severity")]
    assert NOISY in flagged and GOOD not in flagged
    assert "Reasons given: “Will monitor closely” (6), “Other” (3)" in flagged
    # A higher threshold, or a larger minimum sample, clears the flag.
    assert "Candidates for revision" not in signed_in.get("/review/rules?threshold=90").text
    assert "Candidates for revision" not in signed_in.get("/review/rules?min_cards=12").text
    assert "Candidates for revision" in signed_in.get("/review/rules?threshold=80").text


def test_dashboard_charts_are_inline_svg(
    signed_in: TestClient, maker: sessionmaker[Session]
) -> None:
    build(maker)
    html = signed_in.get("/review/rules?period=all").text
    svgs = re.findall(r"<svg.*?</svg>", html, flags=re.S)
    assert len(svgs) == 3  # rates over time, cards by severity, override rate per rule
    for svg in svgs:
        ET.fromstring(svg)  # well-formed
    assert "<script" not in html


def test_period_parameters_are_lenient(signed_in: TestClient) -> None:
    for query in (
        "since=2026-13-01",
        "threshold=abc&min_cards=-4",
        "since=2026-11-20&until=2026-11-01",
        "period=all",
    ):
        assert signed_in.get(f"/review/rules?{query}").status_code == 200


def test_daily_chart_escapes_and_buckets() -> None:
    svg = str(
        daily_severity_svg(
            [
                ("2026-11-01", "critical", 3),
                ("2026-11-01", "info", 2),
                ("2026-11-03", "warning", 5),
            ],
            date(2026, 11, 1),
            date(2026, 11, 3),
        )
    )
    root = ET.fromstring(svg)
    bars = [
        e
        for e in root.iter("{http://www.w3.org/2000/svg}rect")
        if e.find("{http://www.w3.org/2000/svg}title") is not None
    ]
    assert len(bars) == 3
    long = str(daily_severity_svg([], date(2026, 1, 1), date(2026, 12, 31)))
    assert "per week" in long
    ET.fromstring(long)


def test_rate_chart_escapes_rule_names() -> None:
    stat = store.RuleStat(key='<rule&"x">', category="c", issued=20, accepted=5, overridden=15)
    svg = str(override_rate_svg([stat], 0.5, 10))
    assert "<rule&" not in svg
    ET.fromstring(svg)
    assert "75% of 20 ⚑" in svg
