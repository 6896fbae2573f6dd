"""The one evaluation path of a sweep: a patient's lines -> the cards a hook call gives.

Both engines call :func:`evaluate_patient` (the process pool through
:func:`evaluate_chunk`, Spark through ``cds.batch.spark``), in worker processes that load
the packs once (:func:`worker_packs`). It decodes the lines, builds the ``patient-view``
input (``cds.batch.chart``), applies the hook route's own Patient check
(``require_patient``: no Patient is a 412 there, an invalid one a 422) and runs
``cds.hooks.pipeline.evaluate`` and ``issued_cards``: the same cards, rules, facts and pack
versions a hook call would audit. Nothing clinical is decided here.

Results are plain JSON-able dicts (:class:`PatientResult`), so a process pool can pickle
them and Spark can carry them as a string column; the parent alone writes to the store.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cds.batch.chart import patient_view_input, window_days
from cds.batch.lines import decode
from cds.engine.pack import CompiledPack

log = logging.getLogger("cds.batch")

#: (file index, line number, text) of one line; the file index points into the run's
#: list of input files.
Row = tuple[int, int, str]


@dataclass(frozen=True)
class PackSpec:
    """Which packs a worker loads (picklable; workers compile their own copy once)."""

    rules_dir: str
    pack_ids: tuple[str, ...]
    profile: str


@dataclass
class PatientResult:
    """What one patient's evaluation returns to the parent (no store access in workers)."""

    key: str
    resources: int = 0
    bad: list[tuple[int, int, str]] = field(default_factory=list)  # (file, line, reason)
    error: tuple[int, int, str] | None = None  # the patient could not be evaluated
    cards: list[dict[str, Any]] = field(default_factory=list)  # IssuedCard fields

    def to_payload(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "resources": self.resources,
            "bad": [list(b) for b in self.bad],
            "error": list(self.error) if self.error else None,
            "cards": self.cards,
        }

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> PatientResult:
        err = data.get("error")
        return cls(
            key=str(data["key"]),
            resources=int(data["resources"]),
            bad=[(int(f), int(n), str(r)) for f, n, r in data.get("bad", [])],
            error=(int(err[0]), int(err[1]), str(err[2])) if err else None,
            cards=list(data.get("cards", [])),
        )


_PACKS: dict[PackSpec, list[CompiledPack]] = {}


def worker_packs(spec: PackSpec) -> list[CompiledPack]:
    """The packs of ``spec``, compiled once per process (pool worker or Spark worker)."""
    packs = _PACKS.get(spec)
    if packs is None:
        from cds.engine.registry import PackRegistry

        registry = PackRegistry(
            rules_dir=Path(spec.rules_dir), pack_ids=list(spec.pack_ids), profile=spec.profile
        )
        registry.load()
        packs = _PACKS[spec] = registry.packs()
    return packs


def pack_ids_versions(packs: Sequence[CompiledPack]) -> list[dict[str, str]]:
    return [
        {"id": p.id, "version": p.version, "profile": p.profile, "digest": p.digest} for p in packs
    ]


def _issued(evaluation: Any) -> list[dict[str, Any]]:
    # The hook route's own function: the cards are audited exactly as a hook call's.
    from cds.hooks.audit import issued_cards

    return [
        {
            "card": c.card,
            "order_id": c.order_id,
            "category": c.category,
            "primary_rule": c.primary_rule,
            "rules": [list(r) for r in c.rules],
            "pack_id": c.pack_id,
            "pack_version": c.pack_version,
            "facts": c.facts,
        }
        for c in issued_cards(evaluation)
    ]


def patient_input(
    key: str,
    rows: Iterable[Row],
    *,
    window: float,
    now: datetime,
    latin1: bool,
) -> tuple[PatientResult, Any, tuple[int, int]]:
    """A patient's lines -> (result so far, the ``patient-view`` input or None, the
    Patient's line): what a sweep and a replay evaluate. Bad lines and a missing or
    invalid Patient are recorded in the result (``error``), never raised."""
    from cds.errors import RequestError
    from cds.hooks.request import require_patient

    result = PatientResult(key=key)
    ordered = sorted(rows, key=lambda r: (r[0], r[1]))
    resources: list[dict[str, Any]] = []
    patient_at: tuple[int, int] | None = None
    for file_index, line_no, text in ordered:
        res, reason = decode(text, latin1=latin1)
        if res is None:
            result.bad.append((file_index, line_no, reason or "invalid-json"))
            continue
        if res.get("resourceType") == "Patient" and patient_at is None:
            patient_at = (file_index, line_no)
        resources.append(res)
    result.resources = len(resources)
    first = (ordered[0][0], ordered[0][1]) if ordered else (-1, 0)
    if patient_at is None:
        result.error = (*first, "no-patient-resource")
        return result, None, first
    try:
        inp = patient_view_input(key, resources, now=now, window=window)
        require_patient(inp.resources, key)
    except RequestError:
        result.error = (*patient_at, "invalid-patient")
        return result, None, patient_at
    return result, inp, patient_at


def evaluate_patient(
    key: str,
    rows: Iterable[Row],
    *,
    packs: Sequence[CompiledPack],
    now: datetime,
    latin1: bool,
) -> PatientResult:
    """Cards for one patient at ``now``; never raises (a failure is the result's error)."""
    from cds.hooks.pipeline import evaluate

    result, inp, patient_at = patient_input(
        key, rows, window=window_days(packs), now=now, latin1=latin1
    )
    if inp is None:
        return result
    try:
        result.cards = _issued(evaluate(inp, packs, now=now))
    except Exception as exc:  # noqa: BLE001 - one patient's defect must not stop a sweep
        # No message: it may quote patient data. The type and the code location suffice.
        log.error(
            "sweep evaluation failed (%s) for the patient at input file #%d line %d:\n%s",
            type(exc).__name__,
            patient_at[0],
            patient_at[1],
            "".join(traceback.format_tb(exc.__traceback__)),
        )
        result.error = (*patient_at, "evaluation-error")
    return result


@dataclass(frozen=True)
class Chunk:
    """Patients sent to one pool worker at once (whole patients, never split)."""

    spec: PackSpec
    now: datetime
    patients: list[tuple[str, list[Row]]]


def evaluate_chunk(chunk: Chunk) -> dict[str, Any]:
    """Pool task: evaluate every patient of ``chunk``; plain results and the pack digests."""
    packs = worker_packs(chunk.spec)
    return {
        "packs": pack_ids_versions(packs),
        "results": [
            evaluate_patient(key, rows, packs=packs, now=chunk.now, latin1=True).to_payload()
            for key, rows in chunk.patients
        ],
    }


def init_worker(spec: PackSpec) -> None:
    """Pool initializer: compile the packs before the first chunk arrives."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    worker_packs(spec)
