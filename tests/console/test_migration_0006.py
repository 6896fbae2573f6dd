"""Migration 0006 backfills what can be backfilled from stored data, on SQLite and on a
real PostgreSQL: problems, every feedback event, the override reason in the card's words,
minutes to the first review, the prescriber, the hour of issue, open escalations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import MetaData, Table, insert, select

from cds.store.db import downgrade, make_engine, upgrade

T0 = datetime(2026, 11, 20, 9, 15, tzinfo=UTC)
OFFERED = [
    {"code": "cds-not-applicable", "system": "x", "display": "Not applicable to this patient"}
]


def _tables(engine: Any) -> dict[str, Table]:
    meta = MetaData()
    return {
        name: Table(name, meta, autoload_with=engine)
        for name in ("users", "invocations", "cards", "feedback", "reviews")
    }


def _card(
    card_id: str, inv: str, when: datetime, order: str, rule: str, status: str
) -> dict[str, Any]:
    return {
        "id": card_id,
        "invocation_id": inv,
        "created_at": when,
        "service_id": "baclofen-order-select",
        "hook": "order-select",
        "patient_ref": "Patient/m-1",
        "order_id": order,
        "category": "renal-adjustment",
        "indicator": "critical",
        "severity_rank": 3,
        "summary": "s",
        "primary_rule": rule,
        "pack_id": "baclofen",
        "pack_version": "1.0.0",
        "facts": {},
        "card_json": {"uuid": card_id, "overrideReasons": OFFERED},
        "review_status": status,
        "feedback_outcome": None,
        "source": "hook",
        "run_id": None,
    }


def _feedback(key: str, card: str, outcome: str, minute: int, **kw: Any) -> dict[str, Any]:
    return {
        "dedupe_key": key,
        "card_id": card,
        "service_id": "baclofen-order-select",
        "outcome": outcome,
        "accepted_suggestions": [],
        "override_code": kw.get("code"),
        "override_system": None,
        "override_display": kw.get("display"),
        "override_comment": None,
        "outcome_timestamp": T0 + timedelta(minutes=minute),
        "received_at": T0 + timedelta(minutes=minute),
        "issuer": None,
        "tenant": None,
    }


def _check(url: str) -> None:
    upgrade(url, "0005_data_issues")
    engine = make_engine(url)
    t = _tables(engine)
    with engine.begin() as c:
        c.execute(
            insert(t["users"]),
            [
                {
                    "id": 1,
                    "username": "p",
                    "username_key": "p",
                    "password_hash": "x",
                    "role": "pharmacist",
                    "disabled": False,
                    "failed_attempts": 0,
                    "locked_until": None,
                    "created_at": T0,
                }
            ],
        )
        c.execute(
            insert(t["invocations"]),
            [
                {
                    "id": f"inv-{i}",
                    "hook_instance": f"h{i}",
                    "service_id": "baclofen-order-select",
                    "hook": "order-select",
                    "patient_ref": "Patient/m-1",
                    "user_ref": "Practitioner/dr-1",
                    "encounter_ref": None,
                    "issuer": None,
                    "tenant": None,
                    "received_at": T0,
                    "evaluated_at": T0,
                    "duration_ms": 1.0,
                    "timings": {},
                    "status": "ok",
                    "pack_id": "baclofen",
                    "pack_version": "1.0.0",
                    "card_count": 1,
                    "fetched_keys": [],
                    "data_issues": None,
                    "source": "hook",
                    "run_id": None,
                }
                for i in range(4)
            ],
        )
        c.execute(
            insert(t["cards"]),
            [
                _card("c1", "inv-0", T0, "mr-1", "rule-a", "resolved"),
                _card("c2", "inv-1", T0 + timedelta(minutes=1), "mr-1", "rule-a", "unreviewed"),
                _card("c3", "inv-2", T0 + timedelta(minutes=2), "mr-1", "rule-a", "escalated"),
                _card("c4", "inv-3", T0 + timedelta(minutes=3), "mr-2", "rule-a", "unreviewed"),
            ],
        )
        c.execute(
            insert(t["feedback"]),
            [
                _feedback("k1", "c1", "accepted", 1),
                _feedback("k2", "c1", "accepted", 2),
                _feedback("k3", "c1", "overridden", 3, code="cds-not-applicable"),
                _feedback("k4", "c2", "overridden", 4, code="zz", display="Patient refused"),
            ],
        )
        c.execute(
            insert(t["reviews"]),
            [
                {
                    "card_id": "c1",
                    "action": "acknowledge",
                    "note": None,
                    "reviewer_id": 1,
                    "created_at": T0 + timedelta(minutes=30),
                },
                {
                    "card_id": "c1",
                    "action": "resolve",
                    "note": "done",
                    "reviewer_id": 1,
                    "created_at": T0 + timedelta(minutes=90),
                },
                {
                    "card_id": "c3",
                    "action": "escalate",
                    "note": "n",
                    "reviewer_id": 1,
                    "created_at": T0 + timedelta(minutes=62),
                },
            ],
        )
    engine.dispose()

    upgrade(url)
    engine = make_engine(url)
    cards = _tables(engine)["cards"]
    with engine.connect() as c:
        rows = {r.id: r for r in c.execute(select(cards))}
    engine.dispose()
    assert [rows[i].problem_id for i in ("c1", "c2", "c3", "c4")] == ["c1", "c1", "c1", "c4"]
    assert [rows[i].is_repeat for i in ("c1", "c2", "c3", "c4")] == [0, 1, 1, 0]
    assert (rows["c1"].accepted_n, rows["c1"].overridden_n, rows["c1"].feedback_state) == (
        2,
        1,
        "both",
    )
    assert rows["c1"].override_reason == "Not applicable to this patient"  # the card's words
    assert rows["c2"].override_reason == "Patient refused"  # the EHR's, the code unknown
    assert (rows["c2"].feedback_state, rows["c4"].feedback_state) == ("overridden", "none")
    assert rows["c4"].accepted_n == 0 and rows["c4"].override_reason is None
    assert (rows["c1"].review_minutes, rows["c3"].review_minutes) == (30, 60)
    assert rows["c2"].review_minutes is None
    assert {r.prescriber_ref for r in rows.values()} == {"Practitioner/dr-1"}
    assert rows["c1"].created_hour == int(T0.timestamp() // 3600)
    assert rows["c3"].escalated_to_role == "pharmacist" and rows["c2"].escalated_to_role is None
    assert rows["c1"].patient_name is None  # never fetched afterwards
    # And back down and up again, data kept.
    downgrade(url, "0005_data_issues")
    upgrade(url)


def test_backfill_on_sqlite(sqlite_url: str) -> None:
    _check(sqlite_url)


@pytest.mark.postgres
def test_backfill_on_postgres(pg_url: str) -> None:
    _check(pg_url)
