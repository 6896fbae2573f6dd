"""The alert queue and its CSV export, through the routes and through the store."""

from __future__ import annotations

import base64
import csv
import io
import re
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cds.store import console as store
from cds.store.models import Card
from tests.console.seed import add_card, seed_cards

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
ROW = re.compile(r'<tr class="sev-(\w+) status-(\w+)">')
LINK = re.compile(r'href="/review/alerts/([0-9a-f-]{36})"')


@pytest.fixture
def seeded(maker: sessionmaker[Session]) -> sessionmaker[Session]:
    seed_cards(maker, 400, end=NOW, days=30, seed=3)
    return maker


def ids_in(html: str) -> list[str]:
    return LINK.findall(html)


def test_queue_lists_newest_first_and_pages_by_keyset(
    signed_in: TestClient, seeded: sessionmaker[Session]
) -> None:
    with seeded() as s:
        expected = [
            i
            for (i,) in s.execute(select(Card.id).order_by(Card.created_at.desc(), Card.id.desc()))
        ]
    seen: list[str] = []
    url = "/review/alerts?view=cards&per_page=100"
    pages = 0
    while url:
        html = signed_in.get(url).text
        seen += ids_in(html)
        pages += 1
        match = re.search(r'href="([^"]*before=[^"]+)" rel="next"', html)
        url = match.group(1).replace("&amp;", "&") if match else ""
    assert pages == 4
    assert seen == expected  # every card exactly once, in order


def test_newer_link_walks_back(signed_in: TestClient, seeded: sessionmaker[Session]) -> None:
    first = signed_in.get("/review/alerts?view=cards&per_page=25").text
    second_url = re.search(r'href="([^"]*before=[^"]+)" rel="next"', first)
    assert second_url
    second = signed_in.get(second_url.group(1).replace("&amp;", "&")).text
    newer = re.search(r'href="([^"]*after=[^"]+)">‹ Newer', second)
    assert newer
    back = signed_in.get(newer.group(1).replace("&amp;", "&")).text
    assert ids_in(back) == ids_in(first)


@pytest.mark.parametrize(
    ("param", "value", "column"),
    [
        ("indicator", "critical", Card.indicator),
        ("category", "renal-adjustment", Card.category),
        ("rule", "baclofen-interaction-opioid", Card.primary_rule),
        ("pack_version", "1.0.0", Card.pack_version),
        ("review_status", "resolved", Card.review_status),
    ],
)
def test_each_filter(
    signed_in: TestClient, seeded: sessionmaker[Session], param: str, value: str, column: object
) -> None:
    html = signed_in.get(f"/review/alerts?view=cards&{param}={value}&per_page=200").text
    with seeded() as s:
        expected = s.scalar(select(func.count()).where(column == value))  # type: ignore[arg-type]
        got = ids_in(html)
        assert got and len(got) == min(200, expected or 0)
        assert {v for (v,) in s.execute(select(column).where(Card.id.in_(got)))} == {value}  # type: ignore[call-overload]
    assert f"<strong>{expected:,}</strong> matching" in html


def test_date_range_is_inclusive_of_both_days(
    signed_in: TestClient, maker: sessionmaker[Session]
) -> None:
    inside = [
        add_card(maker, when=datetime(2026, 11, d, h, tzinfo=UTC)) for d, h in ((10, 0), (12, 23))
    ]
    outside = [
        add_card(maker, when=datetime(2026, 11, d, h, tzinfo=UTC)) for d, h in ((9, 23), (13, 0))
    ]
    html = signed_in.get("/review/alerts?view=cards&since=2026-11-10&until=2026-11-12").text
    assert set(ids_in(html)) == set(inside)
    assert not set(outside) & set(ids_in(html))


def test_patient_filter_accepts_bare_ids(
    signed_in: TestClient, maker: sessionmaker[Session]
) -> None:
    mine = add_card(maker, patient="Patient/abc-1")
    add_card(maker, patient="Patient/abc-2")
    assert ids_in(signed_in.get("/review/alerts?view=cards&patient=abc-1").text) == [mine]
    assert ids_in(signed_in.get("/review/alerts?view=cards&patient=Patient/abc-1").text) == [mine]


def test_bad_parameters_are_ignored_with_a_notice(
    signed_in: TestClient, seeded: sessionmaker[Session]
) -> None:
    response = signed_in.get(
        "/review/alerts?view=cards&indicator=urgent&since=yesterday&before=garbage&per_page=7"
    )
    assert response.status_code == 200
    assert "Ignored unknown indicator" in response.text
    assert "Ignored since date" in response.text
    assert len(ids_in(response.text)) == 50


def test_counts_per_filter_exclude_their_own_choice(seeded: sessionmaker[Session]) -> None:
    """The indicator menu shows what each indicator would give under the other filters."""
    f = store.QueueFilter(indicator="critical", category="renal-adjustment")
    with seeded() as s:
        facets = store.facet_counts(session=s, filter=f)

        def count(**where: str) -> int:
            cols = {"indicator": Card.indicator, "category": Card.category}
            conds = [cols[k] == v for k, v in where.items()]
            return int(s.scalar(select(func.count()).select_from(Card).where(*conds)) or 0)

        assert facets.total == count(indicator="critical", category="renal-adjustment")
        assert dict(facets.counts["indicator"]) == {
            i: count(indicator=i, category="renal-adjustment")
            for i in ("critical", "warning", "info")
            if count(indicator=i, category="renal-adjustment")
        }
        assert sum(n for _, n in facets.counts["category"]) == count(indicator="critical")
        assert sum(n for _, n in facets.counts["review_status"]) == facets.total


def test_critical_unreviewed_stand_out(signed_in: TestClient, maker: sessionmaker[Session]) -> None:
    add_card(maker, indicator="critical", when=NOW)
    add_card(
        maker,
        indicator="warning",
        category="dose-ceiling",
        rule_id="baclofen-oral-ceiling-adult",
        when=NOW - timedelta(hours=1),
    )
    html = signed_in.get("/review/alerts?view=cards").text
    assert ROW.findall(html) == [("critical", "unreviewed"), ("warning", "unreviewed")]
    assert "1</strong> critical unreviewed" in html


def test_export_streams_the_filtered_queue_as_csv(
    signed_in: TestClient, seeded: sessionmaker[Session]
) -> None:
    response = signed_in.get("/review/alerts.csv?indicator=critical")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    with seeded() as s:
        expected = s.scalar(select(func.count()).where(Card.indicator == "critical"))
    assert len(rows) == expected
    assert {r["indicator"] for r in rows} == {"critical"}
    assert list(rows[0]) == list(store.EXPORT_COLUMNS)
    times = [r["created_at"] for r in rows]
    assert times == sorted(times, reverse=True)


def test_export_covers_more_than_one_batch(maker: sessionmaker[Session]) -> None:
    seed_cards(maker, 4500, end=NOW, days=10, seed=11)
    batches = list(store.iter_export(maker=maker, filter=store.QueueFilter(), batch=1000))
    got = [r for b in batches for r in b.rows]
    assert [len(b.rows) for b in batches] == [1000] * 4 + [500]
    assert len(got) == len({r.id for r in got}) == 4500


def test_export_neutralises_spreadsheet_formulas(
    signed_in: TestClient, maker: sessionmaker[Session]
) -> None:
    add_card(maker, summary='=HYPERLINK("http://evil","x")')
    text = signed_in.get("/review/alerts.csv").text
    row = list(csv.DictReader(io.StringIO(text)))[0]
    assert row["summary"].startswith("'=")


def test_cursor_round_trip_and_tampering() -> None:
    c = store.Cursor(NOW, "abc")
    assert store.Cursor.decode(c.encode()) == c
    junk = base64.urlsafe_b64encode(b"not-a-date|x").decode()
    for bad in ("", "!!!", "bm9waXBl", junk):  # bm9waXBl: "nopipe"
        assert store.Cursor.decode(bad) is None
