"""``cds sweep`` end to end on the default engine (DuckDB + a process pool).

The central claim: a sweep gives each patient exactly the cards a ``patient-view`` hook
call for that patient gives, because it runs the same pipeline; and it stores them as
console alerts once, whatever is interrupted, resumed or rerun.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cds.batch.run import SweepError, SweepInterrupted, run_sweep
from cds.settings import Settings
from cds.store import sweeps
from cds.store.models import Card, Invocation, SweepItem, SweepRun, User
from cds.testing.population import SCENARIOS, SyntheticPatient
from cds.web.app import create_app
from tests.batch.conftest import broken_export, make_maker, options, patient_view_request
from tests.conftest import FIXED_NOW


def _hook_client(maker: sessionmaker[Session], url: str) -> TestClient:
    settings = Settings(database_url=url, auth="off", secure_cookies=False)
    return TestClient(create_app(settings, clock=lambda: FIXED_NOW, maker=maker))


def _url(maker: sessionmaker[Session]) -> str:
    return str(maker.kw["bind"].url)


def _card_key(card: dict[str, Any]) -> tuple[Any, ...]:
    ext = next(iter(card.get("extension", {}).values()), {})
    return (
        card["source"]["topic"]["code"],
        card["indicator"],
        card["summary"],
        tuple(sorted(ext.get("ruleIds", []))) if isinstance(ext, dict) else (),
    )


def _sweep_cards(maker: sessionmaker[Session], run_id: str) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {}
    with maker() as s:
        for patient_ref, card_json in s.execute(
            select(Card.patient_ref, Card.card_json).where(Card.run_id == run_id)
        ):
            out.setdefault(patient_ref.split("/")[-1], []).append(_card_key(card_json))
    return {k: sorted(v) for k, v in out.items()}


def test_sweep_gives_each_patient_the_cards_of_a_patient_view_call(
    export_dir: Path, population: list[SyntheticPatient], maker, tmp_path: Path
) -> None:
    report = run_sweep(options(export_dir, tmp_path, workers=2), maker=maker)
    assert report.status == "completed"
    assert report.patients == report.patients_total == len(population)
    assert report.bad == []
    swept = _sweep_cards(maker, report.run_id)

    hook_db = f"sqlite:///{tmp_path / 'hook.db'}"
    with _hook_client(make_maker(hook_db), hook_db) as client:
        for p in population:
            resp = client.post("/cds-services/baclofen-patient-view", json=patient_view_request(p))
            assert resp.status_code == 200, resp.text
            hook = sorted(_card_key(c) for c in resp.json()["cards"])
            assert swept.get(p.id, []) == hook, f"{p.id} ({p.scenario})"

    # every kind of patient-view rule fired, on the patients whose scenario says so
    fired = Counter()
    for p in population:
        expected = p.expected
        got = {(c[0], c[1]) for c in swept.get(p.id, [])}
        if expected is None:
            assert not got, f"{p.id} ({p.scenario}) should have no card: {got}"
        else:
            assert expected in got, f"{p.id} ({p.scenario}): {got}"
            fired[p.scenario] += 1
    assert set(fired) == {s for s, (_, exp) in SCENARIOS.items() if exp is not None}


def test_run_record_and_console_alerts(export_dir: Path, maker, tmp_path: Path) -> None:
    report = run_sweep(options(export_dir, tmp_path), maker=maker)
    with maker() as s:
        run = s.get(SweepRun, report.run_id)
        assert run is not None and run.status == "completed"
        assert run.patients == report.patients_total
        assert run.alerts_new == report.alerts_new > 0 and run.alerts_duplicate == 0
        assert run.resources == report.resources > run.patients
        assert run.packs[0]["id"] == "baclofen" and run.packs[0]["version"]
        assert {f["path"].rsplit("/", 1)[-1] for f in run.input_files} >= {
            "Patient.000.ndjson",
            "Observation.001.ndjson",
        }
        assert all(len(f["sha256"]) == 64 for f in run.input_files)
        assert run.duration_s > 0 and run.finished_at is not None
        # alerts are stored like hook calls: an invocation (source sweep, the run id)
        invocations = s.scalars(select(Invocation).where(Invocation.run_id == run.id)).all()
        assert invocations and {i.source for i in invocations} == {"sweep"}
        assert {i.hook for i in invocations} == {"patient-view"}
        cards = s.scalars(select(Card).where(Card.run_id == run.id)).all()
        assert len(cards) == run.alerts_new
        assert {c.source for c in cards} == {"sweep"}
        assert all(c.review_status == "unreviewed" and c.facts for c in cards)
        hook_cards = s.scalar(select(func.count()).select_from(Card).where(Card.source == "hook"))
        assert hook_cards == 0


def test_console_queue_lists_sweep_alerts_with_their_source(
    export_dir: Path, maker, tmp_path: Path
) -> None:
    from tests.console.conftest import login, make_user

    report = run_sweep(options(export_dir, tmp_path), maker=maker)
    with maker() as s:
        card = s.scalars(
            select(Card).where(Card.run_id == report.run_id).order_by(Card.severity_rank.desc())
        ).first()
        assert card is not None
        summary, card_id = card.summary, card.id
    account = make_user(maker, "sweep.pharm")
    settings = Settings(
        database_url=_url(maker), auth="off", secure_cookies=False, session_secret="s" * 32
    )
    with TestClient(create_app(settings, maker=maker), follow_redirects=False) as client:
        assert login(client, account).status_code == 303  # type: ignore[attr-defined]
        queue = client.get("/review/alerts?per_page=100")
        assert queue.status_code == 200
        assert str(escape(summary[:40])) in queue.text
        page = client.get(f"/review/alerts/{card_id}")
        assert page.status_code == 200
        assert "sweep" in page.text and report.run_id in page.text  # service and run id


def test_rerun_adds_no_duplicate_alerts(export_dir: Path, maker, tmp_path: Path) -> None:
    first = run_sweep(options(export_dir, tmp_path), maker=maker)
    second = run_sweep(options(export_dir, tmp_path), maker=maker)
    assert second.run_id != first.run_id
    assert second.alerts_new == 0
    assert second.alerts_duplicate == first.alerts_new
    with maker() as s:
        assert s.scalar(select(func.count()).select_from(Card)) == first.alerts_new
        dup_items = s.scalars(select(SweepItem).where(SweepItem.run_id == second.run_id)).all()
        first_cards = {c for (c,) in s.execute(select(Card.id).where(Card.run_id == first.run_id))}
        assert {i.status for i in dup_items} == {"duplicate"}
        assert {i.card_id for i in dup_items} == first_cards  # they point at the open alerts


def test_resume_after_an_interruption_skips_done_patients_without_duplicates(
    export_dir: Path, maker, tmp_path: Path
) -> None:
    with pytest.raises(SweepInterrupted) as stopped:
        run_sweep(options(export_dir, tmp_path, stop_after_batches=2, workers=2), maker=maker)
    run_id = stopped.value.run_id
    with maker() as s:
        run = s.get(SweepRun, run_id)
        assert run is not None and run.status == "interrupted"
        done_before = len(sweeps.done_patients(session=s, run_id=run_id))
        assert done_before == run.patients >= 10  # at least the two committed batches
        new_before = run.alerts_new
    resumed = run_sweep(options(export_dir, tmp_path, resume=run_id, as_of=None), maker=maker)
    assert resumed.run_id == run_id and resumed.status == "completed"
    assert resumed.patients_skipped == done_before
    assert resumed.patients == resumed.patients_total - done_before

    fresh_maker = make_maker(f"sqlite:///{tmp_path / 'fresh.db'}")
    fresh = run_sweep(options(export_dir, tmp_path), maker=fresh_maker)
    with maker() as s:
        run = s.get(SweepRun, run_id)
        assert run is not None and run.status == "completed" and run.attempts == 2
        assert run.patients == fresh.patients_total  # every patient exactly once
        assert run.alerts_new == new_before + resumed.alerts_new == fresh.alerts_new
        items = s.execute(
            select(SweepItem.patient_ref, SweepItem.order_id, SweepItem.rule_id).where(
                SweepItem.run_id == run_id
            )
        ).all()
        assert len(items) == len(set(items)) == fresh.alerts_new
        assert s.scalar(select(func.count()).select_from(Card)) == fresh.alerts_new
    # a completed run cannot be resumed
    with pytest.raises(SweepError, match="completed"):
        run_sweep(options(export_dir, tmp_path, resume=run_id, as_of=None), maker=maker)


def test_dedup_against_an_open_hook_alert(
    export_dir: Path, population: list[SyntheticPatient], maker, tmp_path: Path
) -> None:
    patient = next(p for p in population if p.scenario == "renal-drift")
    with _hook_client(maker, _url(maker)) as client:
        resp = client.post(
            "/cds-services/baclofen-patient-view", json=patient_view_request(patient)
        )
        assert resp.status_code == 200 and resp.json()["cards"]
    with maker() as s:
        hook_card = s.scalars(select(Card).where(Card.source == "hook")).one()
        hook_id, rule, order = hook_card.id, hook_card.primary_rule, hook_card.order_id
    report = run_sweep(options(export_dir, tmp_path), maker=maker)
    with maker() as s:
        item = s.scalars(
            select(SweepItem).where(
                SweepItem.run_id == report.run_id,
                SweepItem.patient_ref == f"Patient/{patient.id}",
                SweepItem.rule_id == rule,
                SweepItem.order_id == order,
            )
        ).one()
        assert item.status == "duplicate" and item.card_id == hook_id
        assert not s.scalars(
            select(Card).where(Card.run_id == report.run_id, Card.patient_ref == item.patient_ref)
        ).all()
    assert report.alerts_duplicate == 1

    # once a pharmacist resolves the hook alert, the next sweep raises it again
    from cds.store.console import add_review
    from tests.console.conftest import make_user

    make_user(maker, "resolver")
    with maker.begin() as s:
        uid = s.scalar(select(User.id).where(User.username == "resolver"))
        assert add_review(
            session=s, card_id=hook_id, action="resolve", note=None, reviewer_id=uid, now=FIXED_NOW
        )
    again = run_sweep(options(export_dir, tmp_path), maker=maker)
    with maker() as s:
        item = s.scalars(
            select(SweepItem).where(
                SweepItem.run_id == again.run_id,
                SweepItem.patient_ref == f"Patient/{patient.id}",
                SweepItem.rule_id == rule,
            )
        ).one()
        assert item.status == "new" and item.card_id != hook_id


def test_bad_lines_are_reported_with_file_and_line_and_never_stop_the_run(
    population: list[SyntheticPatient], maker, tmp_path: Path
) -> None:
    folder, expected = broken_export(tmp_path, population)
    report = run_sweep(options(folder, tmp_path), maker=maker)
    assert report.status == "completed"
    found = {(Path(b.path).name, b.line): b.reason for b in report.bad}
    for line, reason in expected.items():
        assert found.pop(("Extra.ndjson", line)) == reason
    assert found.pop(("Observation.999.ndjson", 1)) == "not-utf8"
    assert found.pop(("Patient.999.ndjson", 1)) == "invalid-patient"
    assert found.pop(("Condition.999.ndjson", 1)) == "no-patient-resource"
    assert found == {}
    assert report.skipped_types == {"Claim": 1}
    assert report.patients_total == 12 + 2 and report.patient_errors == 2
    with maker() as s:
        run = s.get(SweepRun, report.run_id)
        assert run is not None
        assert run.bad_lines == len(expected) + 1  # lines; the two patients are errors
        assert run.patient_errors == 2
        assert {(b["file"].rsplit("/", 1)[-1], b["line"]) for b in run.bad_sample} >= {
            ("Extra.ndjson", 2)
        }


def test_cli_writes_worklist_and_errors(
    population: list[SyntheticPatient], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from cds.cli import app

    folder, expected = broken_export(tmp_path, population)
    monkeypatch.setenv("CDS_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    out, errors = tmp_path / "worklist.csv", tmp_path / "errors.csv"
    result = CliRunner().invoke(
        app,
        ["sweep", str(folder), "--as-of", "2026-11-20T12:00:00Z", "--out", str(out),
         "--errors", str(errors), "--workers", "1", "--work-dir", str(tmp_path / "w")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "completed" in result.output and "Bad lines" in result.output
    assert "Extra.ndjson" in result.output
    rows = list(csv.DictReader(out.open()))
    assert rows and set(rows[0]) == set(sweeps.WORKLIST_COLUMNS)
    assert {r["status"] for r in rows} == {"new"}
    assert rows[0]["indicator"] == "critical"  # most severe first
    bad = list(csv.DictReader(errors.open()))
    assert len(bad) == len(expected) + 3
    assert {"file", "line", "reason", "description"} == set(bad[0])
    # Parquet by extension, for the same run via a rerun (all duplicates now)
    pq = tmp_path / "worklist.parquet"
    result = CliRunner().invoke(
        app,
        ["sweep", str(folder), "--as-of", "2026-11-20T12:00:00Z", "--out", str(pq),
         "--workers", "1", "--work-dir", str(tmp_path / "w")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    import duckdb

    statuses = duckdb.sql(f"SELECT DISTINCT status FROM '{pq}'").fetchall()
    assert statuses == [("duplicate",)]
    listed = CliRunner().invoke(app, ["sweeps"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and "completed" in listed.output
    bad_ext = CliRunner().invoke(app, ["sweep", str(folder), "--out", str(tmp_path / "w.xlsx")])
    assert bad_ext.exit_code == 1 and ".csv or .parquet" in bad_ext.output


def test_resume_refuses_a_changed_export(
    export_dir: Path, population, maker, tmp_path: Path
) -> None:
    from cds.testing.population import write_export

    folder = tmp_path / "copy"
    write_export(folder, population[:20], lines_per_file=1000)
    with pytest.raises(SweepInterrupted) as stopped:
        run_sweep(options(folder, tmp_path, stop_after_batches=1), maker=maker)
    (folder / "Condition.000.ndjson").write_text("")
    with pytest.raises(SweepError, match="export changed"):
        run_sweep(options(folder, tmp_path, resume=stopped.value.run_id, as_of=None), maker=maker)


@pytest.mark.postgres
def test_sweep_and_rerun_on_postgresql(export_dir: Path, pg_url: str, tmp_path: Path) -> None:
    pg = make_maker(pg_url)
    try:
        first = run_sweep(options(export_dir, tmp_path, batch_size=25), maker=pg)
        second = run_sweep(options(export_dir, tmp_path, batch_size=25), maker=pg)
        assert first.alerts_new > 0
        assert second.alerts_new == 0 and second.alerts_duplicate == first.alerts_new
        with pg() as s:
            assert s.scalar(select(func.count()).select_from(Card)) == first.alerts_new
            run = s.get(SweepRun, first.run_id)
            assert run is not None and run.status == "completed"
    finally:
        pg.kw["bind"].dispose()
