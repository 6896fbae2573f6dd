"""Crash safety: feedback and hook calls under load while the server is SIGKILLed.

A real ``cds serve`` on 127.0.0.1 (SQLite file and PostgreSQL). Hook calls first give cards
to give feedback on; then several threads post feedback items, each unique, while the
server process is killed with SIGKILL and started again on the same port. Every item that
got a 2xx answer must be in the database afterwards: a 2xx means committed.

The same for hook calls themselves (issue 14: their audit records are group-committed):
more callers than the server has threads, so commits are shared, and every call answered
200 must have its invocation and every card it returned in the store after the kill.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bench.common import Server, free_port, start_cds
from cds.store.db import make_engine, make_sessionmaker, upgrade
from cds.store.models import Card, Feedback, Invocation
from tests.reliability.conftest import typical

SIGN = "/cds-services/medication-safety-order-sign"
POSTERS = 4
BASE_TS = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def serve(url: str, port: int, log: Path) -> Server:
    env = {"CDS_DATABASE_URL": url, "CDS_AUTH": "off"}
    return start_cds(port=port, workers=1, env=env, log=log)


def kill(server: Server) -> None:
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait(10)


def cards_from(base: str, n: int) -> list[str]:
    ids: list[str] = []
    with httpx.Client(base_url=base, timeout=30) as c:
        for _ in range(n):
            r = c.post(SIGN, json=typical(datetime.now(UTC)))
            assert r.status_code == 200, r.text[:300]
            ids += [card["uuid"] for card in r.json()["cards"]]
    assert ids
    return ids


class Poster(threading.Thread):
    """Posts one unique feedback item per request; remembers the acknowledged ones."""

    def __init__(self, base: str, cards: list[str], index: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.base, self.cards, self.index, self.stop = base, cards, index, stop
        self.acked: set[tuple[str, str]] = set()
        self.failed = 0
        self.statuses: dict[int, int] = {}

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            card = self.cards[n % len(self.cards)]
            ts = BASE_TS + timedelta(microseconds=n * POSTERS + self.index)
            stamp = ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            body = {
                "feedback": [{"card": card, "outcome": "overridden", "outcomeTimestamp": stamp}]
            }
            try:
                r = httpx.post(self.base + SIGN + "/feedback", json=body, timeout=10)
            except httpx.HTTPError:
                self.failed += 1
                time.sleep(0.05)
                continue
            self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
            if 200 <= r.status_code < 300:
                assert r.json()["stored"] + r.json()["duplicates"] == 1
                self.acked.add((card, ts.isoformat()))


def stored_items(url: str) -> set[tuple[str, str]]:
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as s:
            rows = s.execute(select(Feedback.card_id, Feedback.outcome_timestamp)).all()
    finally:
        engine.dispose()
    out = set()
    for card, ts in rows:
        ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
        out.add((card, ts.astimezone(UTC).isoformat()))
    return out


def run_crash(url: str, tmp_path: Path) -> dict[str, Any]:
    upgrade(url)
    port = free_port()
    server = serve(url, port, tmp_path / "serve-1.log")
    try:
        cards = cards_from(server.base, 4)
        stop = threading.Event()
        posters = [Poster(server.base, cards, i, stop) for i in range(POSTERS)]
        for p in posters:
            p.start()
        time.sleep(1.5)
        kill(server)  # mid-flight: requests in progress are cut
        server = serve(url, port, tmp_path / "serve-2.log")
        time.sleep(1.0)
        stop.set()
        for p in posters:
            p.join(15)
    finally:
        server.stop()
    acked = set().union(*(p.acked for p in posters))
    stored = stored_items(url)
    return {"acked": acked, "stored": stored, "failed": sum(p.failed for p in posters)}


def test_sqlite_feedback_survives_sigkill(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cds.db'}"
    r = run_crash(url, tmp_path)
    assert len(r["acked"]) > 20, "the posters got answers before and after the kill"
    missing = r["acked"] - r["stored"]
    assert not missing, f"{len(missing)} acknowledged feedback items lost"


@pytest.mark.postgres
def test_postgres_feedback_survives_sigkill(pg_url: str, tmp_path: Path) -> None:
    r = run_crash(pg_url, tmp_path)
    assert len(r["acked"]) > 20
    missing = r["acked"] - r["stored"]
    assert not missing, f"{len(missing)} acknowledged feedback items lost"


CALLERS = 8  # twice the server's worker threads: calls wait for commits and share them


class Caller(threading.Thread):
    """Hook calls, each with its own hookInstance; remembers what was answered 200."""

    def __init__(self, base: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.base, self.stop = base, stop
        self.acked: dict[str, list[str]] = {}  # hookInstance -> card uuids answered
        self.failed = 0

    def run(self) -> None:
        body = typical(datetime.now(UTC))
        with httpx.Client(base_url=self.base, timeout=10) as client:
            while not self.stop.is_set():
                instance = str(uuid.uuid4())
                try:
                    r = client.post(SIGN, json={**body, "hookInstance": instance})
                except httpx.HTTPError:
                    self.failed += 1
                    time.sleep(0.05)
                    continue
                if r.status_code == 200:
                    self.acked[instance] = [c["uuid"] for c in r.json()["cards"]]


def run_hook_crash(url: str, tmp_path: Path) -> tuple[dict[str, list[str]], int]:
    upgrade(url)
    port = free_port()
    server = serve(url, port, tmp_path / "hooks-1.log")
    stop = threading.Event()
    callers = [Caller(server.base, stop) for _ in range(CALLERS)]
    try:
        for c in callers:
            c.start()
        time.sleep(2.0)
        kill(server)  # mid-flight: calls waiting for their commit are cut
        server = serve(url, port, tmp_path / "hooks-2.log")
        time.sleep(1.5)
        stop.set()
        for c in callers:
            c.join(15)
    finally:
        server.stop()
    acked: dict[str, list[str]] = {}
    for c in callers:
        acked.update(c.acked)
    return acked, sum(c.failed for c in callers)


def check_hook_calls_stored(url: str, acked: dict[str, list[str]]) -> None:
    assert len(acked) > 40, "the callers got answers before and after the kill"
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as s:
            invocations = dict(s.execute(select(Invocation.hook_instance, Invocation.id)).all())
            cards = set(s.execute(select(Card.id)).scalars())
    finally:
        engine.dispose()
    lost = [i for i in acked if i not in invocations]
    assert not lost, f"{len(lost)} of {len(acked)} answered hook calls have no audit record"
    answered = {u for uuids in acked.values() for u in uuids}
    assert answered, "the calls returned cards"
    assert not answered - cards, f"{len(answered - cards)} returned cards are not stored"
    print(
        f"{len(acked)} hook calls answered 200 around the kill, {len(answered)} cards: all stored"
    )


def test_sqlite_hook_calls_survive_sigkill(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cds.db'}"
    acked, _failed = run_hook_crash(url, tmp_path)
    check_hook_calls_stored(url, acked)


@pytest.mark.postgres
def test_postgres_hook_calls_survive_sigkill(pg_url: str, tmp_path: Path) -> None:
    acked, _failed = run_hook_crash(pg_url, tmp_path)
    check_hook_calls_stored(pg_url, acked)
