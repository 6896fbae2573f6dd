"""``AuditWriter``: group commit of hook calls' audit records, on SQLite and PostgreSQL.

What must hold (issue 14): a call's ``save`` returns only once the transaction holding its
rows has committed (read back through another connection the moment it returns); calls
that wait while a commit is under way share the next one; a value the database refuses
fails only the call that holds it; an outage fails every waiting call with 503.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from cds.errors import StoreUnavailable, UnstorableValue
from cds.store.audit import AuditWriter, InvocationRecord, IssuedCard
from cds.store.db import make_engine, make_sessionmaker, upgrade
from cds.store.models import Card, CardRule, Invocation
from tests.conftest import FIXED_NOW


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def maker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'audit.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    upgrade(url)
    engine = make_engine(url)
    yield make_sessionmaker(engine)
    engine.dispose()


def record(inv_id: str | None = None) -> InvocationRecord:
    return InvocationRecord(
        id=inv_id or str(uuid.uuid4()),
        hook_instance=str(uuid.uuid4()),
        service_id="medication-safety-order-sign",
        hook="order-sign",
        patient_ref="Patient/p1",
        user_ref="Practitioner/u1",
        encounter_ref=None,
        issuer=None,
        tenant=None,
        received_at=FIXED_NOW,
        evaluated_at=FIXED_NOW,
        duration_ms=1.0,
        timings={"facts": 1.0},
        pack_id="baclofen",
        pack_version="1.0.0",
    )


def card(uid: str | None = None) -> IssuedCard:
    uid = uid or str(uuid.uuid4())
    return IssuedCard(
        card={"uuid": uid, "summary": "Baclofen 60 mg/day", "indicator": "warning"},
        order_id="draft-1",
        category="dose-ceiling",
        primary_rule="ceiling-oral",
        rules=[("ceiling-oral", "warning"), ("renal-above", "info")],
        pack_id="baclofen",
        pack_version="1.0.0",
        facts={"daily_mg": 60.0, "text": "é \u2265"},
    )


def count(maker: sessionmaker[Session], model: type) -> int:
    with maker() as s:
        return int(s.execute(select(func.count()).select_from(model)).scalar_one())


def test_a_save_returns_only_once_its_rows_are_committed(maker: sessionmaker[Session]) -> None:
    writer = AuditWriter(maker)
    other = make_sessionmaker(make_engine(str(maker.kw["bind"].url)))  # another connection
    errors: list[BaseException] = []

    def call() -> None:
        inv, c = record(), card()
        try:
            writer.save(invocation=inv, cards=[c])
            with other() as s:  # visible to anyone the moment save returns
                assert s.get(Invocation, inv.id) is not None
                assert s.get(Card, c.card["uuid"]) is not None
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert count(maker, Invocation) == 12 and count(maker, Card) == 12
    assert count(maker, CardRule) == 24
    with maker() as s:
        row = s.execute(select(Card.facts, Card.card_json)).first()
    assert row is not None and row[0]["text"] == "é \u2265" and row[1]["indicator"] == "warning"


def test_calls_waiting_during_a_commit_share_the_next_one(maker: sessionmaker[Session]) -> None:
    writer = AuditWriter(maker)
    writer.save(invocation=record(), cards=[])  # one call alone: its own commit, at once
    assert writer.batches == 1
    done: list[str] = []
    with writer._write:  # a commit under way: the next calls queue up behind it
        threads = [
            threading.Thread(
                target=lambda: (writer.save(invocation=record(), cards=[card()]), done.append("x"))
            )
            for _ in range(8)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(writer._queue) < 8:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not done  # nobody returned before its commit
    for t in threads:
        t.join(30)
    assert len(done) == 8
    assert writer.batches == 2  # all eight in one transaction
    assert count(maker, Invocation) == 9 and count(maker, Card) == 8


def test_a_refused_value_fails_only_its_own_call(maker: sessionmaker[Session]) -> None:
    writer = AuditWriter(maker)
    taken = card()
    writer.save(invocation=record(), cards=[taken])
    results: dict[str, BaseException | None] = {}

    def call(name: str, c: IssuedCard) -> None:
        try:
            writer.save(invocation=record(), cards=[c])
            results[name] = None
        except BaseException as exc:  # noqa: BLE001 - checked below
            results[name] = exc

    with writer._write:  # the three land in one batch
        threads = [
            threading.Thread(target=call, args=("a", card())),
            threading.Thread(target=call, args=("dup", card(taken.card["uuid"]))),
            threading.Thread(target=call, args=("b", card())),
        ]
        for t in threads:
            t.start()
        while len(writer._queue) < 3:
            time.sleep(0.01)
    for t in threads:
        t.join(30)
    assert results["a"] is None and results["b"] is None
    assert isinstance(results["dup"], UnstorableValue)
    assert count(maker, Invocation) == 3 and count(maker, Card) == 3


def test_an_outage_fails_every_waiting_call_with_503(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gone' / 'audit.db'}"  # a folder that does not exist
    writer = AuditWriter(make_sessionmaker(make_engine(url)))
    errors: list[BaseException] = []

    def call() -> None:
        try:
            writer.save(invocation=record(), cards=[card()])
        except BaseException as exc:  # noqa: BLE001 - checked below
            errors.append(exc)

    with writer._write:
        threads = [threading.Thread(target=call) for _ in range(3)]
        for t in threads:
            t.start()
        while len(writer._queue) < 3:
            time.sleep(0.01)
    for t in threads:
        t.join(30)
    assert len(errors) == 3 and all(isinstance(e, StoreUnavailable) for e in errors)
    assert len({id(e) for e in errors}) == 3  # each call raises its own exception


def test_repeats_of_a_problem_share_its_first_card(maker: sessionmaker[Session]) -> None:
    """The same (patient, order, rule) again is a repeat of the problem its first card
    opened, in another call and within one batch."""
    writer = AuditWriter(maker)
    first = card()
    writer.save(invocation=record(), cards=[first])
    for _ in range(3):
        writer.save(invocation=record(), cards=[card()])
    with maker() as s:
        rows = s.execute(select(Card.id, Card.problem_id, Card.is_repeat)).all()
    assert {problem for _, problem, _ in rows} == {first.card["uuid"]}
    assert sorted(repeat for _, _, repeat in rows) == [0, 1, 1, 1]


def test_finding_a_problem_reads_one_index_entry_per_pair(tmp_path: Path) -> None:
    """The audit write's problem lookup is an index seek, not a read of the patient's
    history: SQLite's plan for it searches ``ix_cards_patient_order_rule`` and never
    scans ``cards`` (it read every earlier card of the order: linear in the history)."""
    from cds.store import audit

    url = f"sqlite:///{tmp_path / 'plan.db'}"
    upgrade(url)
    engine = make_engine(url)
    seen: list[str] = []
    with engine.connect() as conn:
        real = conn.execute

        def explain(stmt, *a, **kw):  # the statement _problems runs, explained
            compiled = stmt.compile(conn, compile_kwargs={"literal_binds": True})
            seen.extend(str(r[-1]) for r in real(text("EXPLAIN QUERY PLAN " + str(compiled))).all())
            return real(stmt, *a, **kw)

        conn.execute = explain  # type: ignore[method-assign]
        audit._problems(conn, "Patient/p1", [card(), card()])
    engine.dispose()
    assert seen and all("ix_cards_patient_order_rule" in d for d in seen if "cards" in d), seen
    assert not any(d.startswith("SCAN") and "cards" in d for d in seen), seen
