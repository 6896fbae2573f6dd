"""Crash safety: feedback posted under load while the server is SIGKILLed and restarted.

A real ``cds serve`` on 127.0.0.1 (SQLite file and PostgreSQL). Hook calls first give cards
to give feedback on; then several threads post feedback items, each unique, while the
server process is killed with SIGKILL and started again on the same port. Every item that
got a 2xx answer must be in the database afterwards: a 2xx means committed.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bench.common import Server, free_port, start_cds
from cds.store.db import make_engine, make_sessionmaker, upgrade
from cds.store.models import Feedback
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
