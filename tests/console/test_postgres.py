"""The console's queries on PostgreSQL: the SQL tricks tuned for SQLite (row-value keyset,
``column || ''`` steering, LEFT JOIN reasons, ``date()``) must mean the same there."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from cds.settings import Settings
from cds.store import console as store
from cds.store.db import make_engine, make_sessionmaker, upgrade
from cds.store.models import Card
from tests.console.conftest import SECRET, build_app, login, make_user, page_token
from tests.console.seed import add_card, seed_cards

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def test_console_on_postgres(pg_url: str) -> None:
    upgrade(pg_url)
    engine = make_engine(pg_url)
    maker = make_sessionmaker(engine)
    try:
        seed_cards(maker, 1200, end=NOW, days=20, seed=5)
        card_id = add_card(maker, when=NOW + timedelta(minutes=1))
        f = store.QueueFilter(indicator="info", review_status="unreviewed", pack_version="1.0.0")
        with maker() as s:
            expected = [
                i
                for (i,) in s.execute(
                    select(Card.id)
                    .where(
                        Card.indicator == "info",
                        Card.review_status == "unreviewed",
                        Card.pack_version == "1.0.0",
                    )
                    .order_by(Card.created_at.desc(), Card.id.desc())
                )
            ]
            seen: list[str] = []
            cursor = None
            while True:
                page = store.queue_page(session=s, filter=f, limit=40, before=cursor)
                seen += [r.id for r in page.rows]
                if page.older is None:
                    break
                cursor = page.older
            assert seen == expected
            facets = store.facet_counts(session=s, filter=f)
            assert facets.total == len(expected)
            board = store.dashboard(
                session=s, since=NOW - timedelta(days=10), until=None, tz=ZoneInfo("Asia/Kolkata")
            )
            issued = s.scalar(
                select(func.count()).where(Card.created_at >= NOW - timedelta(days=10))
            )
            assert sum(r.issued for r in board.rules) == issued
            assert sum(n for _, _, n in board.daily) == issued
            assert any(r.reasons for r in board.rules)
            accepted = s.scalar(
                select(func.sum(Card.accepted_n)).where(Card.created_at >= NOW - timedelta(days=10))
            )
            assert board.total.accepted == accepted
            assert board.total.repeats > 0 and board.total.reviewed > 0
            # grouped by patient: every matching patient once, in pages
            f = store.QueueFilter(indicator="warning")
            seen: list[str | None] = []
            start = None
            while True:
                grouped = store.grouped_page(session=s, filter=f, patients=15, start=start)
                seen += [p.patient_ref for p in grouped.patients]
                if grouped.older is None:
                    break
                start = grouped.older
            patients = {
                r for (r,) in s.execute(select(Card.patient_ref).where(Card.indicator == "warning"))
            }
            assert sorted(seen) == sorted(patients) and len(seen) == len(patients)
            name = s.scalar(select(Card.patient_name).where(Card.patient_name.is_not(None)))
            assert name is not None
            given = name.split(", ")[1]
            found = store.patient_refs(session=s, text=given.upper())  # any case, accents
            names = set(s.scalars(select(Card.patient_name).where(Card.patient_ref.in_(found))))
            assert name in names and all(n.endswith(f", {given}") for n in names)
        account = make_user(maker, "pg.pharm")
        app = build_app(
            Settings(
                database_url=pg_url,
                secure_cookies=False,
                session_secret=SECRET,
                auth="off",
                packs="",
            ),
            maker,
        )
        with TestClient(app, follow_redirects=False) as client:
            assert login(client, account).status_code == 303  # type: ignore[attr-defined]
            for path in (
                "/review/alerts?indicator=critical&review_status=unreviewed",
                "/review/alerts?feedback=overridden&hide_dq=1&patient=ada",
                "/review/alerts?view=cards&source=hook&pack=baclofen",
                f"/review/alerts/{card_id}",
                "/review/rules?period=all",
                "/review/rules?rule=baclofen-interaction-opioid",
                "/review/alerts.csv?category=interaction",
            ):
                assert client.get(path).status_code == 200, path
            group = client.post(
                "/review/alerts/group",
                data={
                    "action": "acknowledge",
                    "patient": "Patient/critical-1",
                    "q": "",
                    "upto": (NOW + timedelta(hours=1)).isoformat(),
                    "csrf_token": page_token(client),
                },
            )
            assert group.status_code == 303 and "n=1" in group.headers["location"]
            response = client.post(
                f"/review/alerts/{card_id}/review",
                data={
                    "action": "escalate",
                    "note": "pg",
                    "escalate_to": "role:admin",
                    "csrf_token": page_token(client),
                },
            )
            assert response.status_code == 303
    finally:
        engine.dispose()
