"""Sweep runs and their worklist: the run record, batch commits with deduplication.

A batch of evaluated patients commits in ONE transaction: the new alerts (an invocation
per patient with ``source="sweep"`` and the run id, and its cards, written by the hook
route's own ``record_invocation``), the worklist items, the batch's patient list (what a
resumed run skips) and the run's counters. An interruption therefore loses at most the
batches in flight, and redoing them cannot duplicate anything.

**Open alert** (the deduplication rule): a card for the same patient, order and primary
rule whose review status is not ``resolved``. Unreviewed, acknowledged and escalated
cards are open (a pharmacist has it, or will); so is a card the prescriber overrode or
accepted, until a pharmacist resolves it: prescriber feedback says what happened to the
order, not that the problem is gone, and only the pharmacist closes an alert. Cards from
hook calls and from earlier sweeps count alike. A problem whose alert is open becomes a
``duplicate`` worklist item pointing at that alert; no second card is issued.

Keyword-only functions; callers pass the sessionmaker (writes) or a session (reads).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from cds.store.audit import InvocationRecord, IssuedCard, record_invocation
from cds.store.models import Card, SweepBatch, SweepItem, SweepRun

SWEEP_SERVICE = "sweep"  # the service id sweep invocations and cards carry
RUNNING, COMPLETED, INTERRUPTED = "running", "completed", "interrupted"
_SAMPLE = 100  # bad lines kept in the run record


@dataclass
class PatientCards:
    """One evaluated patient as the store needs it (built by ``cds.batch``)."""

    patient_id: str
    cards: list[IssuedCard]
    resources: int = 0
    bad_lines: int = 0
    error: bool = False


@dataclass
class BatchOutcome:
    new: int = 0
    duplicate: int = 0
    items: list[dict[str, Any]] = field(default_factory=list)


def create_run(
    *,
    maker: sessionmaker[Session],
    engine: str,
    as_of: datetime,
    started_at: datetime,
    export_dir: str,
    input_files: list[dict[str, Any]],
    packs: list[dict[str, Any]],
    options: dict[str, Any],
) -> str:
    run_id = str(uuid.uuid4())
    with maker.begin() as s:
        s.add(
            SweepRun(
                id=run_id,
                status=RUNNING,
                engine=engine,
                as_of=as_of,
                started_at=started_at,
                finished_at=None,
                duration_s=0.0,
                attempts=1,
                export_dir=export_dir[:1024],
                input_files=input_files,
                packs=packs,
                options=options,
                patients=0,
                patients_with_alerts=0,
                patient_errors=0,
                resources=0,
                bad_lines=0,
                alerts_new=0,
                alerts_duplicate=0,
                bad_sample=[],
                error=None,
            )
        )
    return run_id


def get_run(*, session: Session, run_id: str) -> SweepRun | None:
    return session.get(SweepRun, run_id)


def recent_runs(*, session: Session, limit: int = 20) -> list[SweepRun]:
    return list(session.scalars(select(SweepRun).order_by(SweepRun.started_at.desc()).limit(limit)))


def resume_run(*, maker: sessionmaker[Session], run_id: str, engine: str) -> None:
    """Mark a run running again (another attempt)."""
    with maker.begin() as s:
        run = s.get(SweepRun, run_id)
        assert run is not None
        run.status = RUNNING
        run.attempts += 1
        run.engine = engine
        run.error = None
        run.finished_at = None


def record_bad_lines(
    *, maker: sessionmaker[Session], run_id: str, count: int, sample: list[dict[str, Any]]
) -> None:
    """The reader's bad lines: a property of the (hash-checked) input, counted once."""
    with maker.begin() as s:
        run = s.get(SweepRun, run_id)
        assert run is not None
        if run.attempts == 1:
            run.bad_lines += count
        run.bad_sample = (sample + list(run.bad_sample or []))[:_SAMPLE]


def finish_run(
    *,
    maker: sessionmaker[Session],
    run_id: str,
    status: str,
    finished_at: datetime,
    duration_s: float,
    error: str | None = None,
) -> None:
    with maker.begin() as s:
        run = s.get(SweepRun, run_id)
        assert run is not None
        run.status = status
        run.finished_at = finished_at
        run.duration_s = (run.duration_s or 0.0) + duration_s
        run.error = error[:2000] if error else None


def done_patients(*, session: Session, run_id: str) -> set[str]:
    """Patients whose results a run already committed (a resumed run skips them)."""
    done: set[str] = set()
    for (patients,) in session.execute(
        select(SweepBatch.patients).where(SweepBatch.run_id == run_id)
    ):
        done.update(patients or [])
    return done


def _open_alerts(session: Session, patient_refs: list[str]) -> dict[tuple[str, str, str], str]:
    """(patient, order, primary rule) -> the oldest open card, for these patients."""
    found: dict[tuple[str, str, str], str] = {}
    for i in range(0, len(patient_refs), 500):
        rows = session.execute(
            select(Card.patient_ref, Card.order_id, Card.primary_rule, Card.id)
            .where(Card.patient_ref.in_(patient_refs[i : i + 500]))
            .where(Card.review_status != "resolved")
            .order_by(Card.created_at, Card.id)
        )
        for patient_ref, order_id, rule, card_id in rows:
            found.setdefault((str(patient_ref), order_id, rule), card_id)
    return found


def commit_batch(
    *,
    maker: sessionmaker[Session],
    run_id: str,
    patients: Sequence[PatientCards],
    issued_at: datetime,
    as_of: datetime,
    bad_sample: list[dict[str, Any]] | None = None,
) -> BatchOutcome:
    """Store one batch's alerts, worklist, progress and counters in one transaction."""
    from cds.store.db import write_lock

    outcome = BatchOutcome()
    with write_lock(maker), maker.begin() as s:
        refs = [f"Patient/{p.patient_id}" for p in patients if p.cards]
        existing = _open_alerts(s, refs) if refs else {}
        items: list[dict[str, Any]] = []
        with_alerts = 0
        for p in patients:
            if not p.cards:
                continue
            with_alerts += 1
            ref = f"Patient/{p.patient_id}"
            fresh: list[IssuedCard] = []
            for c in p.cards:
                open_id = existing.get((ref, c.order_id, c.primary_rule))
                status = "duplicate" if open_id else "new"
                card_id = open_id or str(c.card["uuid"])
                if not open_id:
                    fresh.append(c)
                items.append(
                    {
                        "run_id": run_id,
                        "patient_ref": ref,
                        "order_id": c.order_id,
                        "rule_id": c.primary_rule,
                        "category": c.category,
                        "indicator": c.card["indicator"],
                        "summary": str(c.card["summary"])[:200],
                        "status": status,
                        "card_id": card_id,
                        "created_at": issued_at,
                    }
                )
            if fresh:
                record_invocation(
                    session=s,
                    invocation=InvocationRecord(
                        id=str(uuid.uuid4()),
                        hook_instance=run_id,
                        service_id=SWEEP_SERVICE,
                        hook="patient-view",
                        patient_ref=ref,
                        user_ref=None,
                        encounter_ref=None,
                        issuer=None,
                        tenant=None,
                        received_at=issued_at,
                        evaluated_at=as_of,
                        duration_ms=0.0,
                        timings={},
                        pack_id=fresh[0].pack_id,
                        pack_version=fresh[0].pack_version,
                        source="sweep",
                        run_id=run_id,
                    ),
                    cards=fresh,
                )
        if items:
            s.execute(insert(SweepItem), items)
        s.add(
            SweepBatch(
                run_id=run_id,
                committed_at=issued_at,
                patient_count=len(patients),
                patients=[p.patient_id for p in patients],
            )
        )
        run = s.get(SweepRun, run_id)
        assert run is not None
        outcome.new = sum(1 for i in items if i["status"] == "new")
        outcome.duplicate = len(items) - outcome.new
        outcome.items = items
        run.patients += len(patients)
        run.patients_with_alerts += with_alerts
        run.patient_errors += sum(1 for p in patients if p.error)
        run.resources += sum(p.resources for p in patients)
        run.bad_lines += sum(p.bad_lines for p in patients)
        run.alerts_new += outcome.new
        run.alerts_duplicate += outcome.duplicate
        if bad_sample:
            run.bad_sample = (list(run.bad_sample or []) + bad_sample)[:_SAMPLE]
    return outcome


def is_store_error(exc: BaseException) -> bool:
    """A database failure (the store went away), as opposed to a defect."""
    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(exc, SQLAlchemyError)


WORKLIST_COLUMNS = (
    "run_id",
    "patient",
    "order_id",
    "rule",
    "category",
    "indicator",
    "status",
    "card_id",
    "summary",
)


def worklist(*, session: Session, run_id: str) -> list[dict[str, Any]]:
    """A run's worklist, most severe first, then by patient, order and rule."""
    rank = {"critical": 0, "warning": 1, "info": 2}
    rows = [
        {
            "run_id": i.run_id,
            "patient": i.patient_ref,
            "order_id": i.order_id,
            "rule": i.rule_id,
            "category": i.category,
            "indicator": i.indicator,
            "status": i.status,
            "card_id": i.card_id,
            "summary": i.summary,
        }
        for i in session.scalars(select(SweepItem).where(SweepItem.run_id == run_id))
    ]
    rows.sort(key=lambda r: (rank.get(r["indicator"], 9), r["patient"], r["order_id"], r["rule"]))
    return rows


__all__ = [
    "COMPLETED",
    "INTERRUPTED",
    "RUNNING",
    "SWEEP_SERVICE",
    "WORKLIST_COLUMNS",
    "BatchOutcome",
    "PatientCards",
    "commit_batch",
    "create_run",
    "done_patients",
    "finish_run",
    "get_run",
    "is_store_error",
    "recent_runs",
    "record_bad_lines",
    "resume_run",
    "worklist",
]
