"""What ``cds sweep`` shows in the terminal: a progress bar and the summary tables (rich).

Counts, file names and line numbers only: no patient data is printed (the worklist with
patient references goes to ``--out`` and the review console, not to the terminal or logs).
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from cds.batch.run import Progress as SweepProgress
from cds.batch.run import SweepReport

FIRST_BAD_LINES = 10


class RichProgress(SweepProgress):
    """A rich progress bar of patients evaluated, with the alert counts so far."""

    def __init__(self, console: Console) -> None:
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("patients"),
            TextColumn("{task.fields[alerts]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task: Any = None

    def __enter__(self) -> RichProgress:
        self.bar.start()
        self.task = self.bar.add_task("starting", total=None, alerts="")
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def phase(self, text: str) -> None:
        self.bar.update(self.task, description=text)

    def start(self, total: int, skipped: int) -> None:
        note = f" ({skipped} done before)" if skipped else ""
        self.bar.update(self.task, total=total, completed=0, description="evaluating" + note)

    def advance(self, patients: int, new: int, duplicate: int) -> None:
        self.bar.update(
            self.task, advance=patients, alerts=f"alerts: {new} new, {duplicate} duplicate"
        )


def summary(report: SweepReport, console: Console) -> None:
    """The run's figures, its inputs and packs, and the first bad lines."""
    t = Table(title=f"Sweep {report.run_id}: {report.status}", show_header=False)
    t.add_column("", style="bold")
    t.add_column("", justify="right")
    rate = report.patients / report.duration_s if report.duration_s > 0 else 0.0
    rows = [
        ("engine", report.engine),
        ("as of", report.as_of.isoformat()),
        ("patients in the export", f"{report.patients_total:,}"),
        ("evaluated now", f"{report.patients:,}"),
        ("done in an earlier attempt", f"{report.patients_skipped:,}"),
        ("patients not evaluated (errors)", f"{report.patient_errors:,}"),
        ("lines read", f"{report.lines:,}"),
        ("resources used", f"{report.resources:,}"),
        ("bad lines and resources", f"{len(report.bad):,}"),
        ("alerts new", f"{report.alerts_new:,}"),
        ("alerts already open (duplicates)", f"{report.alerts_duplicate:,}"),
        ("duration", f"{report.duration_s:,.1f} s ({rate:,.0f} patients/s)"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    packs = ", ".join(f"{p['id']} {p['version']} ({p['profile']})" for p in report.packs)
    console.print(f"packs: {packs}")
    console.print(
        f"input: {len(report.files)} file(s) read"
        + (f", {len(report.skipped_files)} skipped by type" if report.skipped_files else "")
        + (
            "; types not read: "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(report.skipped_types.items()))
            if report.skipped_types
            else ""
        )
    )
    if report.bad:
        b = Table(title=f"Bad lines and resources: {len(report.bad):,} (first {FIRST_BAD_LINES})")
        b.add_column("file")
        b.add_column("line", justify="right")
        b.add_column("problem")
        for bad in report.bad[:FIRST_BAD_LINES]:
            b.add_row(bad.path.rsplit("/", 1)[-1], str(bad.line), bad.description)
        console.print(b)
