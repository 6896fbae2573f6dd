"""``cds sweep``: one run over an export, from the run record to the committed worklist.

The parent process owns the run: it loads the packs (to record their versions), hashes
the input, creates or resumes the run record, drives an engine (``duckdb`` with a process
pool, or ``spark``), and commits each batch of results through ``cds.store.sweeps`` as it
arrives. Engines only read and evaluate; they never touch the store. Ctrl-C or SIGTERM
marks the run ``interrupted`` (the batches already committed stay; ``--resume`` skips
their patients); so does a store outage.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cds.batch.chart import window_days
from cds.batch.evaluate import (
    Chunk,
    PackSpec,
    PatientResult,
    evaluate_chunk,
    init_worker,
    pack_ids_versions,
    worker_packs,
)
from cds.batch.files import ExportFile, discover
from cds.batch.lines import REASONS
from cds.store import sweeps
from cds.store.audit import IssuedCard

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger("cds.batch")
ENGINES = ("duckdb", "spark")


class SweepError(Exception):
    """A sweep that cannot start or go on as asked (bad resume, changed input or packs)."""


class SweepInterrupted(Exception):
    """Raised after the run was marked interrupted (Ctrl-C, SIGTERM, store outage)."""

    def __init__(self, run_id: str, reason: str) -> None:
        super().__init__(f"run {run_id} interrupted ({reason}); resume with --resume {run_id}")
        self.run_id = run_id
        self.reason = reason


@dataclass
class SweepOptions:
    export_dir: Path
    rules_dir: Path
    pack_ids: list[str]
    profile: str
    as_of: datetime | None = None  # default: now (a resumed run keeps its own)
    engine: str = "duckdb"
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)  # 0: in this process
    batch_size: int = 200
    spark_master: str = "local[2]"
    resume: str | None = None
    work_dir: Path | None = None
    memory_limit: str = "2GB"
    stop_after_batches: int | None = None  # tests: simulate an interruption


@dataclass(frozen=True)
class BadLine:
    path: str
    line: int
    reason: str

    @property
    def description(self) -> str:
        return REASONS.get(self.reason, self.reason)

    def as_row(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "line": self.line,
            "reason": self.reason,
            "description": self.description,
        }


BAD_LINE_COLUMNS = ("file", "line", "reason", "description")


@dataclass
class SweepReport:
    run_id: str
    status: str
    engine: str
    as_of: datetime
    patients_total: int = 0
    patients_skipped: int = 0  # done in an earlier attempt of this run
    patients: int = 0  # evaluated by this attempt
    patient_errors: int = 0
    resources: int = 0
    lines: int = 0
    skipped_types: dict[str, int] = field(default_factory=dict)
    alerts_new: int = 0
    alerts_duplicate: int = 0
    bad: list[BadLine] = field(default_factory=list)
    files: list[ExportFile] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)
    packs: list[dict[str, str]] = field(default_factory=list)
    duration_s: float = 0.0


class Progress:
    """Callbacks for a progress display (the CLI's rich bar); the default shows nothing."""

    def start(self, total: int, skipped: int) -> None:
        """``total`` patients to evaluate now (``skipped`` were done before)."""

    def advance(self, patients: int, new: int, duplicate: int) -> None:
        """A batch committed."""

    def phase(self, text: str) -> None:
        """What the run is doing (reading, grouping, evaluating)."""


@dataclass
class _Batch:
    results: list[PatientResult]
    packs: list[dict[str, str]]


def _utc(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class _Stop:
    """SIGTERM as an interruption (Ctrl-C already is one), restored afterwards."""

    def __enter__(self) -> _Stop:
        self.previous: Any = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("SIGTERM")

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def _issued(card: dict[str, Any]) -> IssuedCard:
    return IssuedCard(
        card=card["card"],
        order_id=card["order_id"],
        category=card["category"],
        primary_rule=card["primary_rule"],
        rules=[(r[0], r[1]) for r in card["rules"]],
        pack_id=card["pack_id"],
        pack_version=card["pack_version"],
        facts=card["facts"],
    )


def _pool_batches(
    reader: Any, keys: list[str], opts: SweepOptions, spec: PackSpec, now: datetime
) -> Iterator[_Batch]:
    """Evaluate ``keys`` in a process pool, a bounded number of chunks in flight.

    ``workers=0`` evaluates in this process instead (tests, tiny exports: no start-up
    cost); it calls the same ``evaluate_chunk``.
    """
    import multiprocessing

    chunks = [keys[i : i + opts.batch_size] for i in range(0, len(keys), opts.batch_size)]
    if opts.workers <= 0:
        for part in chunks:
            out = evaluate_chunk(Chunk(spec=spec, now=now, patients=list(reader.patients(part))))
            yield _Batch(
                results=[PatientResult.from_payload(p) for p in out["results"]],
                packs=out["packs"],
            )
        return
    workers = opts.workers
    ctx = multiprocessing.get_context("spawn")  # DuckDB threads in the parent: never fork
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=init_worker, initargs=(spec,)
    )
    pending: set[Future[dict[str, Any]]] = set()
    queue = iter(chunks)
    try:

        def submit() -> bool:
            part = next(queue, None)
            if part is None:
                return False
            patients = list(reader.patients(part))
            pending.add(pool.submit(evaluate_chunk, Chunk(spec=spec, now=now, patients=patients)))
            return True

        for _ in range(workers * 2):
            if not submit():
                break
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                pending.discard(fut)
                out = fut.result()
                submit()
                yield _Batch(
                    results=[PatientResult.from_payload(p) for p in out["results"]],
                    packs=out["packs"],
                )
    finally:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _check_resume(run: Any, files: list[ExportFile], packs: list[dict[str, str]]) -> None:
    if run.status == sweeps.COMPLETED:
        raise SweepError(f"run {run.id} is completed; start a new run instead")
    then = sorted((f["path"], f["sha256"]) for f in run.input_files)
    now = sorted((f.path, f.sha256) for f in files)
    if then != now:
        raise SweepError(
            f"the export changed since run {run.id} started (files or their SHA-256 differ);"
            " start a new run"
        )
    if [(p["id"], p["digest"]) for p in run.packs] != [(p["id"], p["digest"]) for p in packs]:
        raise SweepError(f"the rule packs changed since run {run.id} started; start a new run")


def run_sweep(
    opts: SweepOptions,
    *,
    maker: sessionmaker[Session],
    progress: Progress | None = None,
) -> SweepReport:
    """Run (or resume) a sweep; the report of this attempt. Raises SweepInterrupted."""
    if opts.engine not in ENGINES:
        raise SweepError(f"unknown engine {opts.engine!r}: {', '.join(ENGINES)}")
    progress = progress or Progress()
    if opts.engine == "spark":
        from cds.batch.spark import SparkUnavailable, check_available

        try:
            check_available()
        except SparkUnavailable as exc:
            raise SweepError(str(exc)) from None
    t0 = time.monotonic()
    spec = PackSpec(str(opts.rules_dir), tuple(opts.pack_ids), opts.profile)
    progress.phase("loading the rule packs")
    packs = worker_packs(spec)
    pack_info = pack_ids_versions(packs)
    progress.phase("hashing the export")
    files, skipped_files = discover(opts.export_dir)

    if opts.resume:
        with maker() as s:
            run = sweeps.get_run(session=s, run_id=opts.resume)
            if run is None:
                raise SweepError(f"no sweep run {opts.resume}")
            _check_resume(run, files, pack_info)
            as_of = _utc(run.as_of)
            done = sweeps.done_patients(session=s, run_id=run.id)
        if opts.as_of is not None and _utc(opts.as_of) != as_of:
            raise SweepError(
                f"run {opts.resume} evaluates as of {as_of.isoformat()}; --as-of cannot change"
            )
        run_id = opts.resume
        sweeps.resume_run(maker=maker, run_id=run_id, engine=opts.engine)
    else:
        as_of = _utc(opts.as_of)
        done = set()
        run_id = sweeps.create_run(
            maker=maker,
            engine=opts.engine,
            as_of=as_of,
            started_at=datetime.now(UTC),
            export_dir=str(opts.export_dir.resolve()),
            input_files=[f.as_dict() for f in files],
            packs=pack_info,
            options={
                "batch_size": opts.batch_size,
                "workers": opts.workers,
                "window_days": window_days(packs),
                "spark_master": opts.spark_master if opts.engine == "spark" else None,
                "skipped_files": skipped_files,
            },
        )
    report = SweepReport(
        run_id=run_id,
        status=sweeps.RUNNING,
        engine=opts.engine,
        as_of=as_of,
        files=files,
        skipped_files=skipped_files,
        packs=pack_info,
    )
    paths = [f.path for f in files]
    work_dir = opts.work_dir or Path(os.environ.get("TMPDIR", "/tmp")) / f"cds-sweep-{run_id}"
    try:
        with _Stop():
            _drive(opts, spec, maker, report, paths, done, work_dir, progress)
    except KeyboardInterrupt as exc:
        reason = str(exc) or "Ctrl-C"
        _finish(maker, report, sweeps.INTERRUPTED, t0, reason)
        raise SweepInterrupted(run_id, reason) from None
    except _Stopped:
        _finish(maker, report, sweeps.INTERRUPTED, t0, "stopped after a set number of batches")
        raise SweepInterrupted(run_id, "stopped after a set number of batches") from None
    except Exception as exc:
        if sweeps.is_store_error(exc):
            with contextlib.suppress(Exception):  # the store may be down for this too
                _finish(maker, report, sweeps.INTERRUPTED, t0, f"store: {type(exc).__name__}")
            raise SweepInterrupted(run_id, f"the store failed: {type(exc).__name__}") from exc
        _finish(maker, report, sweeps.INTERRUPTED, t0, f"{type(exc).__name__}: {exc}")
        raise
    _finish(maker, report, sweeps.COMPLETED, t0, None)
    return report


class _Stopped(Exception):
    pass


def _finish(
    maker: sessionmaker[Session], report: SweepReport, status: str, t0: float, error: str | None
) -> None:
    report.status = status
    report.duration_s = time.monotonic() - t0
    sweeps.finish_run(
        maker=maker,
        run_id=report.run_id,
        status=status,
        finished_at=datetime.now(UTC),
        duration_s=report.duration_s,
        error=error,
    )


def _drive(
    opts: SweepOptions,
    spec: PackSpec,
    maker: sessionmaker[Session],
    report: SweepReport,
    paths: list[str],
    done: set[str],
    work_dir: Path,
    progress: Progress,
) -> None:
    """Read, evaluate and commit; fills ``report`` as batches land."""
    now = report.as_of
    if opts.engine == "spark":
        from cds.batch.spark import SparkSweep

        progress.phase("reading and grouping with Spark")
        engine: Any = SparkSweep(paths, spec=spec, now=now, master=opts.spark_master)
        stats = engine.load(done=done)
        keys_total, todo = stats.patients + len(done), stats.patients
        batches: Iterator[_Batch] = (
            _Batch(results=r, packs=p) for r, p in engine.results(opts.batch_size)
        )
    else:
        from cds.batch.duck import DuckReader

        progress.phase("reading and grouping with DuckDB")
        engine = DuckReader(
            report.files,
            work_dir,
            threads=max(1, opts.workers),
            memory_limit=opts.memory_limit,
        )
        stats = engine.load()
        keys = engine.patient_keys()
        keys_total = len(keys)
        pending = [k for k in keys if k not in done]
        todo = len(pending)
        batches = _pool_batches(engine, pending, opts, spec, now)
    try:
        report.lines = stats.lines
        report.skipped_types = dict(stats.skipped_types)
        reader_bad = [BadLine(paths[f], n, r) for f, n, r in stats.bad]
        report.bad.extend(reader_bad)
        sweeps.record_bad_lines(
            maker=maker,
            run_id=report.run_id,
            count=len(reader_bad),
            sample=[b.as_row() for b in reader_bad[:100]],
        )
        report.patients_total = keys_total
        report.patients_skipped = keys_total - todo
        progress.start(todo, report.patients_skipped)
        progress.phase("evaluating")
        for committed, batch in enumerate(batches, start=1):
            if [(p["id"], p["digest"]) for p in batch.packs] != [
                (p["id"], p["digest"]) for p in report.packs
            ]:
                raise SweepError("a worker loaded different rule packs (changed during the run)")
            _commit(maker, report, batch, paths)
            progress.advance(len(batch.results), report.alerts_new, report.alerts_duplicate)
            if opts.stop_after_batches is not None and committed >= opts.stop_after_batches:
                raise _Stopped()
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # shuts the pool down now, not whenever the generator is collected
        engine.close()
    report.bad.sort(key=lambda b: (b.path, b.line))


def _commit(
    maker: sessionmaker[Session], report: SweepReport, batch: _Batch, paths: list[str]
) -> None:
    patients: list[sweeps.PatientCards] = []
    new_bad: list[BadLine] = []
    for r in batch.results:
        bad = [BadLine(paths[f], n, reason) for f, n, reason in r.bad]
        if r.error is not None:
            f, n, reason = r.error
            bad.append(BadLine(paths[f] if 0 <= f < len(paths) else "?", n, reason))
        new_bad.extend(bad)
        patients.append(
            sweeps.PatientCards(
                patient_id=r.key,
                cards=[_issued(c) for c in r.cards],
                resources=r.resources,
                bad_lines=len(r.bad),
                error=r.error is not None,
            )
        )
    outcome = sweeps.commit_batch(
        maker=maker,
        run_id=report.run_id,
        patients=patients,
        issued_at=datetime.now(UTC),
        as_of=report.as_of,
        bad_sample=[b.as_row() for b in new_bad[:20]],
    )
    report.bad.extend(new_bad)
    report.patients += len(patients)
    report.patient_errors += sum(1 for p in patients if p.error)
    report.resources += sum(p.resources for p in patients)
    report.alerts_new += outcome.new
    report.alerts_duplicate += outcome.duplicate
