"""``cds rules replay``: what a working copy of a pack would change, per rule.

Two sources of calls, one comparison:

- **stored calls** (``--since``/``--until``): the hook calls kept with
  ``CDS_KEEP_REQUESTS_DAYS``, each evaluated at the instant it was received
  (``cds.hooks.stored.evaluate_stored``: the hook route's own steps);
- **a Bulk Data export** (``--bulk DIR --as-of``): every patient, as the ``patient-view``
  call a sweep evaluates (the sweep's reader, ``cds.batch.duck``, and its
  ``patient_input``).

Each call is evaluated twice through ``cds.hooks.pipeline.evaluate``: with the packs being
served (``CDS_PACKS`` from ``CDS_RULES_DIR`` or the shipped rules: the baseline), and with
the working copy in place of the pack of the same id (added if the service has no such
pack). ``cds.hooks.compare`` then says which cards appear, disappear or change severity,
attributed to the rule that decides each card; the report counts them per rule with
example invocation ids (stored calls) or patient references (an export).

Calls are evaluated in this process for small replays, in a process pool otherwise
(``--workers``); workers compile both pack sets once. Nothing is written but the report
(``replay_reports``, shown on the console's rule-changes page); no card is issued.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cds.hooks.compare import APPEAR, DISAPPEAR, RULES, SAME, SEVERITY, compare, rule_counts
from cds.hooks.compare import views_of as _views

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from cds.engine.pack import CompiledPack

log = logging.getLogger("cds.batch")

SOURCES = ("stored", "bulk")
KINDS = ("appear", "disappear", "severity_up", "severity_down", "rules")
IN_PROCESS_BELOW = 200  # calls: fewer are evaluated here (a pool costs seconds to start)


class ReplayError(Exception):
    """A replay that cannot run as asked (no such folder, a broken pack, no calls)."""


@dataclass(frozen=True)
class ReplaySpec:
    """Which packs a worker compiles (picklable)."""

    rules_dir: str
    pack_ids: tuple[str, ...]
    profile: str
    candidate_dir: str


@dataclass
class PackSets:
    baseline: list[CompiledPack]
    candidate: list[CompiledPack]
    pack: CompiledPack  # the working copy
    shipped: CompiledPack | None  # the served pack of the same id (None: a new pack)

    def rule(self, rule_id: str) -> Any:
        for packs in (self.candidate, self.baseline):
            for p in packs:
                if rule_id in p.rules:
                    return p.rules[rule_id]
        return None


_SETS: dict[ReplaySpec, PackSets] = {}


def pack_sets(spec: ReplaySpec) -> PackSets:
    """Both pack sets of ``spec``, compiled once per process. Raises ``PackError``."""
    sets = _SETS.get(spec)
    if sets is None:
        from cds.engine.pack import compile_pack
        from cds.engine.registry import PackRegistry
        from cds.hooks.stored import substitute

        registry = PackRegistry(
            rules_dir=Path(spec.rules_dir), pack_ids=list(spec.pack_ids), profile=spec.profile
        )
        registry.load()
        baseline = registry.packs()
        pack = compile_pack(Path(spec.candidate_dir), spec.profile, registry.runtime)
        shipped = next((p for p in baseline if p.id == pack.id), None)
        sets = _SETS[spec] = PackSets(baseline, substitute(baseline, pack), pack, shipped)
    return sets


# ---- one call, both ways --------------------------------------------------------------------


@dataclass
class ItemResult:
    """One call (or patient) compared: plain data, so a pool can pickle it."""

    ref: str  # invocation id, or Patient/<id>
    error: str | None = None
    changes: list[dict[str, Any]] = field(default_factory=list)  # not "same"
    fires_before: dict[str, int] = field(default_factory=dict)
    fires_after: dict[str, int] = field(default_factory=dict)
    served_by: str | None = None  # the pack versions that answered the call (stored)


def _compare(ref: str, run: Callable[[Sequence[CompiledPack]], Any], sets: PackSets) -> ItemResult:
    result = ItemResult(ref=ref)
    try:
        before = _views(run(sets.baseline).cards)
        after = _views(run(sets.candidate).cards)
    except Exception as exc:  # noqa: BLE001 - one call's defect must not stop a replay
        from cds.errors import RequestError

        result.error = type(exc).__name__
        if not isinstance(exc, RequestError):  # a request the hook refused is not a defect
            log.error(
                "replay evaluation failed (%s) for %s:\n%s",
                result.error,
                ref if not ref.startswith("Patient/") else "a patient",
                "".join(traceback.format_tb(exc.__traceback__)),
            )
        return result
    result.changes = [c.as_dict() for c in compare(before, after) if c.kind != SAME]
    result.fires_before = rule_counts(before)
    result.fires_after = rule_counts(after)
    return result


def compare_stored(
    spec: ReplaySpec, rows: list[tuple[str, bytes, str | None]]
) -> list[dict[str, Any]]:
    """Pool task: (invocation id, kept body, versions that served it) -> compared calls."""
    from cds.hooks.stored import StoredCall, evaluate_stored
    from cds.store.requests import decode_body

    sets = pack_sets(spec)
    out = []
    for invocation_id, blob, served_by in rows:
        try:
            call = StoredCall.from_doc(invocation_id, decode_body(blob))
        except Exception as exc:  # noqa: BLE001 - an unreadable kept request is counted
            out.append(ItemResult(ref=invocation_id, error=f"unreadable ({type(exc).__name__})"))
            continue
        item = _compare(invocation_id, partial(evaluate_stored, call), sets)
        item.served_by = served_by
        out.append(item)
    return [vars(r) for r in out]


def compare_patients(
    spec: ReplaySpec, now: datetime, patients: list[tuple[str, list[Any]]]
) -> list[dict[str, Any]]:
    """Pool task: a sweep's patients (key, lines) -> compared ``patient-view`` calls."""
    from cds.batch.chart import window_days
    from cds.batch.evaluate import patient_input
    from cds.hooks.pipeline import evaluate

    sets = pack_sets(spec)
    window = window_days([*sets.baseline, sets.pack])
    out = []
    for key, rows in patients:
        ref = f"Patient/{key}"
        res, inp, _at = patient_input(key, rows, window=window, now=now, latin1=True)
        if inp is None:
            reason = res.error[2] if res.error else "unreadable"
            out.append(ItemResult(ref=ref, error=reason))
            continue
        out.append(_compare(ref, partial(evaluate, inp, now=now), sets))
    return [vars(r) for r in out]


def _init_worker(spec: ReplaySpec) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    pack_sets(spec)


# ---- the report -----------------------------------------------------------------------------


@dataclass
class RuleStats:
    rule_id: str
    category: str
    title: str
    appear: int = 0
    disappear: int = 0
    severity_up: int = 0
    severity_down: int = 0
    rules: int = 0  # joined or left a card that stayed (same indicator)
    fires_before: int = 0
    fires_after: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        return self.appear + self.disappear + self.severity_up + self.severity_down + self.rules

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "category": self.category,
            "title": self.title,
            "appear": self.appear,
            "disappear": self.disappear,
            "severity_up": self.severity_up,
            "severity_down": self.severity_down,
            "rules": self.rules,
            "fires_before": self.fires_before,
            "fires_after": self.fires_after,
            "examples": self.examples,
        }


@dataclass
class ReplayReport:
    id: str
    source: str
    pack_id: str
    candidate_version: str
    candidate_digest: str
    candidate_dir: str
    baseline_version: str | None
    profile: str
    since: datetime | None = None
    until: datetime | None = None
    as_of: datetime | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    calls: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    changed_calls: int = 0
    duration_s: float = 0.0
    rules: dict[str, RuleStats] = field(default_factory=dict)
    changes: list[dict[str, Any]] = field(default_factory=list)
    changes_truncated: bool = False
    served_by: dict[str, int] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def totals(self) -> dict[str, int]:
        return {k: sum(getattr(r, k) for r in self.rules.values()) for k in KINDS}

    def ordered_rules(self) -> list[RuleStats]:
        return sorted(
            (r for r in self.rules.values() if r.changed or r.fires_before != r.fires_after),
            key=lambda r: (-r.changed, r.rule_id),
        )

    def as_json(self) -> dict[str, Any]:
        """Everything, for ``--out report.json``."""
        return {
            "id": self.id,
            "source": self.source,
            "created_at": self.created_at.isoformat(),
            "pack": {
                "id": self.pack_id,
                "baseline_version": self.baseline_version,
                "candidate_version": self.candidate_version,
                "candidate_digest": self.candidate_digest,
                "candidate_dir": self.candidate_dir,
                "profile": self.profile,
            },
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "calls": self.calls,
            "errors": self.errors,
            "error_kinds": self.error_kinds,
            "changed_calls": self.changed_calls,
            "duration_s": round(self.duration_s, 3),
            "served_by": self.served_by,
            "totals": self.totals,
            "rules": [r.as_dict() for r in self.ordered_rules()],
            "changes": self.changes,
            "changes_truncated": self.changes_truncated,
            "options": self.options,
        }

    def store_row(self) -> dict[str, Any]:
        """The ``replay_reports`` columns (the rules with their examples, no change list)."""
        return {
            "id": self.id,
            "created_at": self.created_at,
            "source": self.source,
            "pack_id": self.pack_id,
            "baseline_version": self.baseline_version,
            "candidate_version": self.candidate_version,
            "candidate_digest": self.candidate_digest,
            "candidate_dir": self.candidate_dir[:1024],
            "since": self.since,
            "until": self.until,
            "as_of": self.as_of,
            "calls": self.calls,
            "errors": self.errors,
            "changed_calls": self.changed_calls,
            "duration_s": round(self.duration_s, 3),
            "totals": self.totals,
            "rules": [r.as_dict() for r in self.ordered_rules()],
            "options": {
                **self.options,
                "profile": self.profile,
                "error_kinds": self.error_kinds,
                "served_by": self.served_by,
            },
        }


CSV_COLUMNS = (
    "rule_id",
    "category",
    "title",
    "appear",
    "disappear",
    "severity_up",
    "severity_down",
    "rules",
    "fires_before",
    "fires_after",
    "examples_appear",
    "examples_disappear",
    "examples_severity",
)


def csv_rows(report: ReplayReport) -> list[dict[str, Any]]:
    """One row per rule that changed (``--out report.csv``)."""
    rows = []
    for r in report.ordered_rules():
        row = {k: v for k, v in r.as_dict().items() if k in CSV_COLUMNS}
        row["examples_appear"] = " ".join(r.examples.get("appear", []))
        row["examples_disappear"] = " ".join(r.examples.get("disappear", []))
        row["examples_severity"] = " ".join(
            r.examples.get("severity_up", []) + r.examples.get("severity_down", [])
        )
        rows.append(row)
    return rows


class _Tally:
    """Folds compared calls into a report."""

    def __init__(self, report: ReplayReport, sets: PackSets, examples: int, max_changes: int):
        self.report, self.sets = report, sets
        self.examples, self.max_changes = examples, max_changes

    def _stats(self, rule_id: str) -> RuleStats:
        stats = self.report.rules.get(rule_id)
        if stats is None:
            rule = self.sets.rule(rule_id)
            stats = self.report.rules[rule_id] = RuleStats(
                rule_id=rule_id,
                category=rule.category if rule is not None else "",
                title=rule.title if rule is not None else "",
            )
        return stats

    def add(self, item: ItemResult) -> None:
        rep = self.report
        rep.calls += 1
        if item.served_by:
            rep.served_by[item.served_by] = rep.served_by.get(item.served_by, 0) + 1
        if item.error is not None:
            rep.errors += 1
            rep.error_kinds[item.error] = rep.error_kinds.get(item.error, 0) + 1
            return
        for rule_id, n in item.fires_before.items():
            self._stats(rule_id).fires_before += n
        for rule_id, n in item.fires_after.items():
            self._stats(rule_id).fires_after += n
        if item.changes:
            rep.changed_calls += 1
        for ch in item.changes:
            kind = ch["kind"]
            if kind == SEVERITY:
                up = _rank(ch["after"]) > _rank(ch["before"])
                kind = "severity_up" if up else "severity_down"
            elif kind not in (APPEAR, DISAPPEAR, RULES):
                continue
            stats = self._stats(ch["rule_id"])
            setattr(stats, kind, getattr(stats, kind) + 1)
            seen = stats.examples.setdefault(kind, [])
            if len(seen) < self.examples and item.ref not in seen:
                seen.append(item.ref)
            if len(rep.changes) < self.max_changes:
                rep.changes.append({"ref": item.ref, **ch})
            else:
                rep.changes_truncated = True


def _rank(indicator: str | None) -> int:
    from cds.engine.findings import SEVERITY_RANK

    return SEVERITY_RANK.get(indicator or "", 0)


# ---- running it -----------------------------------------------------------------------------


@dataclass
class ReplayOptions:
    pack_dir: Path
    rules_dir: Path
    pack_ids: list[str]
    profile: str
    since: datetime | None = None
    until: datetime | None = None
    bulk: Path | None = None
    as_of: datetime | None = None
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)  # 0: in this process
    chunk: int = 50
    examples: int = 5
    max_changes: int = 100_000
    work_dir: Path | None = None
    memory_limit: str = "2GB"
    store: bool = True  # keep the report (replay_reports) for the console


class Progress:
    """Callbacks for a progress display; the default shows nothing."""

    def phase(self, text: str) -> None: ...

    def start(self, total: int) -> None: ...

    def advance(self, calls: int, changed: int) -> None: ...


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def run_replay(
    opts: ReplayOptions,
    *,
    maker: sessionmaker[Session] | None,
    progress: Progress | None = None,
) -> ReplayReport:
    """Replay and return the report (stored with ``maker`` when one is given)."""
    from cds.errors import PackError

    progress = progress or Progress()
    t0 = time.monotonic()
    folder = opts.pack_dir
    if not (folder / "pack.yaml").is_file():
        raise ReplayError(f"{folder}: no pack.yaml there (--pack-dir is a pack's folder)")
    if opts.bulk is None and maker is None:
        raise ReplayError("replaying stored calls needs the store (CDS_DATABASE_URL)")
    spec = ReplaySpec(
        rules_dir=str(opts.rules_dir),
        pack_ids=tuple(opts.pack_ids),
        profile=opts.profile,
        candidate_dir=str(folder.resolve()),
    )
    progress.phase("compiling the packs")
    try:
        sets = pack_sets(spec)
    except PackError as exc:
        raise ReplayError(str(exc)) from None
    source = "bulk" if opts.bulk is not None else "stored"
    report = ReplayReport(
        id=str(uuid.uuid4()),
        source=source,
        pack_id=sets.pack.id,
        candidate_version=sets.pack.version,
        candidate_digest=sets.pack.digest,
        candidate_dir=spec.candidate_dir,
        baseline_version=sets.shipped.version if sets.shipped else None,
        profile=opts.profile,
        since=_utc(opts.since),
        until=_utc(opts.until),
        options={
            "workers": opts.workers,
            "baseline_packs": [{"id": p.id, "version": p.version} for p in sets.baseline],
            "baseline_digest": sets.shipped.digest if sets.shipped else None,
        },
    )
    if sets.shipped is not None and sets.shipped.digest == sets.pack.digest:
        report.options["note"] = "the working copy is identical to the served pack"
    tally = _Tally(report, sets, opts.examples, opts.max_changes)
    if source == "stored":
        assert maker is not None
        _replay_stored(opts, spec, maker, tally, progress)
    else:
        report.as_of = _utc(opts.as_of) or datetime.now(UTC)
        report.since = report.until = None
        _replay_bulk(opts, spec, report.as_of, tally, progress)
    report.duration_s = time.monotonic() - t0
    if maker is not None and opts.store:
        from cds.store.replays import save_report

        save_report(maker=maker, report=report.store_row())
    return report


def _replay_stored(
    opts: ReplayOptions,
    spec: ReplaySpec,
    maker: sessionmaker[Session],
    tally: _Tally,
    progress: Progress,
) -> None:
    from cds.store import requests as kept

    since, until = _utc(opts.since), _utc(opts.until)
    with maker() as s:
        total = kept.count_requests(session=s, since=since, until=until)
    if total == 0:
        period = " ".join(
            p
            for p in (
                since and f"from {since:%Y-%m-%d %H:%M}",
                until and f"to {until:%Y-%m-%d %H:%M}",
            )
            if p
        )
        raise ReplayError(
            f"no stored calls{' ' + period if period else ''}: hook calls are kept only while "
            "CDS_KEEP_REQUESTS_DAYS is above 0 (see `cds requests status`)"
        )

    def chunks() -> Iterator[list[tuple[str, bytes, str | None]]]:
        for page in kept.iter_requests(maker=maker, since=since, until=until, page=opts.chunk):
            yield [(r[0], r[4], r[5]) for r in page]

    progress.start(total)
    progress.phase("replaying stored calls")
    workers = 0 if total < IN_PROCESS_BELOW else opts.workers
    for results in _pool(workers, spec, chunks(), lambda part: (compare_stored, (spec, part))):
        _fold(results, tally, progress)


def _replay_bulk(
    opts: ReplayOptions, spec: ReplaySpec, now: datetime, tally: _Tally, progress: Progress
) -> None:
    from cds.batch.duck import DuckReader
    from cds.batch.files import discover

    assert opts.bulk is not None
    if not opts.bulk.is_dir():
        raise ReplayError(f"{opts.bulk}: not a folder (--bulk is a Bulk Data export folder)")
    progress.phase("hashing the export")
    files, skipped = discover(opts.bulk)
    if not files:
        raise ReplayError(f"{opts.bulk}: no NDJSON files of the types a replay reads")
    work_dir = opts.work_dir or Path(os.environ.get("TMPDIR", "/tmp")) / (
        f"cds-replay-{tally.report.id}"
    )
    progress.phase("reading and grouping with DuckDB")
    reader = DuckReader(
        files, work_dir, threads=max(1, opts.workers), memory_limit=opts.memory_limit
    )
    try:
        stats = reader.load()
        keys = reader.patient_keys()
        tally.report.options.update(
            {
                "export_dir": str(opts.bulk.resolve()),
                "files": len(files),
                "skipped_files": skipped,
                "bad_lines": len(stats.bad),
                "lines": stats.lines,
            }
        )
        progress.start(len(keys))
        progress.phase("replaying the export")
        parts = [keys[i : i + opts.chunk] for i in range(0, len(keys), opts.chunk)]
        chunks = (list(reader.patients(part)) for part in parts)
        workers = 0 if len(keys) < IN_PROCESS_BELOW else opts.workers
        for results in _pool(
            workers, spec, chunks, lambda part: (compare_patients, (spec, now, part))
        ):
            _fold(results, tally, progress)
    finally:
        reader.close()


def _fold(results: list[dict[str, Any]], tally: _Tally, progress: Progress) -> None:
    changed = 0
    for payload in results:
        item = ItemResult(**payload)
        tally.add(item)
        changed += 1 if item.changes else 0
    progress.advance(len(results), changed)


def _pool(
    workers: int,
    spec: ReplaySpec,
    chunks: Iterator[Any],
    task: Callable[[Any], tuple[Callable[..., list[dict[str, Any]]], tuple[Any, ...]]],
) -> Iterator[list[dict[str, Any]]]:
    """Results of ``task`` over ``chunks``: here (``workers`` 0) or in a process pool, a
    bounded number of chunks in flight (results in completion order)."""
    if workers <= 0:
        for part in chunks:
            fn, args = task(part)
            yield fn(*args)
        return
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # DuckDB threads in the parent: never fork
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(spec,)
    )
    pending: set[Future[list[dict[str, Any]]]] = set()
    try:

        def submit() -> bool:
            part = next(chunks, None)
            if part is None:
                return False
            fn, args = task(part)
            pending.add(pool.submit(fn, *args))
            return True

        for _ in range(workers * 2):
            if not submit():
                break
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                pending.discard(fut)
                submit()
                yield fut.result()
    finally:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
