"""The console's queries on PostgreSQL: the SQL tricks tuned for SQLite (row-value keyset,
``column || ''`` steering, LEFT JOIN reasons, ``date()``) must mean the same there."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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
            board = store.dashboard(session=s, since=NOW - timedelta(days=10), until=None)
            issued = s.scalar(
                select(func.count()).where(Card.created_at >= NOW - timedelta(days=10))
            )
            assert sum(r.issued for r in board.rules) == issued
            assert sum(n for _, _, n in board.daily) == issued
            assert any(r.reasons for r in board.rules)
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
                f"/review/alerts/{card_id}",
                "/review/rules?period=all",
                "/review/alerts.csv?category=interaction",
            ):
                assert client.get(path).status_code == 200, path
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
