"""Faults end to end over the app: a bad FHIR server, the database going away, a broken pack.

- FHIR server down, slow, garbage, 401 or 404 (a local server on 127.0.0.1, allowlisted)
  for the required prefetch: 412 with an OperationOutcome, inside the fetch deadline plus a
  margin.
- The audit store disappears mid-run (PostgreSQL: the database dropped with its
  connections terminated; SQLite: the file locked for writing by another process): 503
  with an OperationOutcome for hook calls and feedback; with ``serve_unaudited`` the cards
  are still returned. Terminated connections alone are survived (the pool reconnects).
- A pack that fails validation at reload: the previous version keeps serving and the
  error is reported (``ReloadResult``, ``registry.last_errors``, the log).
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds.engine.registry import PackRegistry
from cds.settings import Settings
from cds.store.db import upgrade
from cds.web.app import create_app
from tests.conftest import FIXED_NOW, PACK_VERSION, REPO
from tests.reliability.conftest import assert_outcome, typical

SIGN = "/cds-services/medication-safety-order-sign"
DEADLINE = 1.0
MARGIN = 1.5


# ------------------------------------------------------------------ a misbehaving FHIR server


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        fault = self.path.split("/")[1]
        try:
            if fault == "slow":
                time.sleep(DEADLINE * 4)
                self._send(200, b'{"resourceType": "Patient", "id": "bench-pat-1"}')
            elif fault == "garbage":
                self._send(200, b"<html>\x00\xff not FHIR")
            elif fault == "unauthorized":
                self._send(401, b'{"resourceType": "OperationOutcome"}')
            else:
                self._send(404, b'{"resourceType": "OperationOutcome"}')
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def fhir_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("fault", ["down", "slow", "garbage", "unauthorized", "notfound"])
def test_fhir_server_faults_give_412_within_the_deadline(
    migrated_sqlite: str, fhir_server: int, fault: str
) -> None:
    port = _closed_port() if fault == "down" else fhir_server
    base = f"http://127.0.0.1:{port}/{fault}"
    settings = Settings(
        auth="off",
        database_url=migrated_sqlite,
        fhir_allowlist=base,
        fetch_deadline_seconds=DEADLINE,
    )
    body = typical()
    for key in ("patient", "medications"):  # the required keys: must be fetched
        body["prefetch"].pop(key)
    body["fhirServer"] = base
    body["fhirAuthorization"] = {
        "access_token": "secret-token-xyz",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "cds-service",
    }
    app = create_app(settings, clock=lambda: FIXED_NOW)
    with TestClient(app, raise_server_exceptions=False) as client:
        t0 = time.monotonic()
        resp = client.post(SIGN, json=body)
        elapsed = time.monotonic() - t0
    outcome = assert_outcome(resp.status_code, resp.text, 412)
    assert elapsed < DEADLINE + MARGIN, f"{fault}: 412 after {elapsed:.2f} s"
    assert "secret-token-xyz" not in resp.text
    assert outcome["issue"][0]["diagnostics"]


# ------------------------------------------------------------------ the database goes away


def _cards(resp: Any) -> list[dict[str, Any]]:
    assert resp.status_code == 200, resp.text[:500]
    cards: list[dict[str, Any]] = resp.json()["cards"]
    assert cards, "the typical request gives cards"
    return cards


def _feedback(card: dict[str, Any]) -> dict[str, Any]:
    return {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "outcomeTimestamp": "2026-11-20T12:01:00Z",
            }
        ]
    }


@pytest.mark.postgres
def test_postgres_dropped_mid_run_gives_503_and_unaudited_opt_in_still_serves(
    pg_url: str, pg_admin: Any
) -> None:
    upgrade(pg_url)
    strict = create_app(Settings(auth="off", database_url=pg_url), clock=lambda: FIXED_NOW)
    lenient = create_app(
        Settings(auth="off", database_url=pg_url, serve_unaudited=True), clock=lambda: FIXED_NOW
    )
    name = pg_url.rsplit("/", 1)[1]
    with (
        TestClient(strict, raise_server_exceptions=False) as a,
        TestClient(lenient, raise_server_exceptions=False) as b,
    ):
        card = _cards(a.post(SIGN, json=typical()))[0]
        _cards(b.post(SIGN, json=typical()))
        # connections killed under the pool: the next call reconnects
        pg_admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        _cards(a.post(SIGN, json=typical()))
        # the database itself goes away
        pg_admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        assert_outcome(*_status_text(a.post(SIGN, json=typical())), 503)
        assert_outcome(*_status_text(a.post(f"{SIGN}/feedback", json=_feedback(card))), 503)
        cards = _cards(b.post(SIGN, json=typical()))
        assert all(c["uuid"] for c in cards)


def _status_text(resp: Any) -> tuple[int, str]:
    return resp.status_code, resp.text


@contextmanager
def write_locked(path: Path) -> Iterator[None]:
    """Another process's exclusive write transaction on the SQLite file."""
    con = sqlite3.connect(str(path), timeout=1, isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        con.execute("ROLLBACK")
        con.close()


def test_sqlite_unwritable_gives_503_and_unaudited_opt_in_still_serves(
    migrated_sqlite: str,
) -> None:
    path = Path(migrated_sqlite.removeprefix("sqlite:///"))
    strict = create_app(Settings(auth="off", database_url=migrated_sqlite), clock=lambda: FIXED_NOW)
    lenient = create_app(
        Settings(auth="off", database_url=migrated_sqlite, serve_unaudited=True),
        clock=lambda: FIXED_NOW,
    )
    with (
        TestClient(strict, raise_server_exceptions=False) as a,
        TestClient(lenient, raise_server_exceptions=False) as b,
    ):
        card = _cards(a.post(SIGN, json=typical()))[0]
        with write_locked(path):  # the app's writes wait busy_timeout (5 s), then fail
            assert_outcome(*_status_text(a.post(SIGN, json=typical())), 503)
            assert_outcome(*_status_text(a.post(f"{SIGN}/feedback", json=_feedback(card))), 503)
            _cards(b.post(SIGN, json=typical()))
        _cards(a.post(SIGN, json=typical()))  # writable again: served and audited


# ------------------------------------------------------------------ a broken pack at reload


@pytest.fixture
def rules_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "rules"
    shutil.copytree(REPO / "rules", dst)
    return dst


def set_version(rules: Path, version: str, *, break_it: bool = False) -> None:
    pack = rules / "baclofen" / "pack.yaml"
    text = pack.read_text()
    lines = [
        f"version: {version}" if ln.startswith("version:") else ln
        for ln in text.splitlines()
        if not ln.startswith("not_a_pack_field:")
    ]
    if break_it:  # a field the pack schema does not know
        lines.append("not_a_pack_field: [this, fails, validation]")
    pack.write_text("\n".join(lines) + "\n")


def discovery_version(client: TestClient) -> str:
    services = client.get("/cds-services").json()["services"]
    return str(services[0]["version"])


def test_broken_pack_at_reload_keeps_the_previous_version(
    migrated_sqlite: str, rules_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        auth="off", database_url=migrated_sqlite, rules_dir=rules_copy, packs="baclofen"
    )
    app = create_app(settings, clock=lambda: FIXED_NOW)
    registry: PackRegistry = app.state.registry
    with TestClient(app, raise_server_exceptions=False) as client:
        assert discovery_version(client) == f"baclofen-{PACK_VERSION}"
        set_version(rules_copy, "9.0.1", break_it=True)
        from cds.web.reload import reload_packs

        [result] = reload_packs(registry, "test")
        assert not result.ok and result.error and result.version == PACK_VERSION
        assert "baclofen" in registry.last_errors
        assert any("FAILED" in r.getMessage() for r in caplog.records)
        assert discovery_version(client) == f"baclofen-{PACK_VERSION}"
        cards = _cards(client.post(SIGN, json=typical()))
        assert all(c["source"]["label"].find(PACK_VERSION) >= 0 for c in cards)
        set_version(rules_copy, "9.0.2")
        [result] = reload_packs(registry, "test")
        assert result.ok and result.changed and result.version == "9.0.2"
        assert "baclofen" not in registry.last_errors
        assert discovery_version(client) == "baclofen-9.0.2"
        cards = _cards(client.post(SIGN, json=typical()))
        assert all(c["extension"] for c in cards)


def test_reload_of_a_pack_that_raises_unexpectedly_never_escapes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from cds.web.reload import reload_packs

    class Exploding:
        def reload(self) -> list[Any]:
            raise RuntimeError("boom")

    assert reload_packs(Exploding(), "test") == []
    assert any("still serving" in r.getMessage() for r in caplog.records)
