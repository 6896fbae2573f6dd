"""The body of ``cds sweep`` and ``cds sweeps`` (``cds/cli.py`` keeps only the options).

Exit status: 0 completed; 1 the run could not start or go on (bad options, changed
export, no Java for Spark); 130 interrupted (the run record says ``interrupted`` and
``--resume RUN_ID`` carries on).
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cds.settings import Settings


def _instant(text: str | None) -> datetime | None:
    if text is None:
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _maker(settings: Settings):  # type: ignore[no-untyped-def]
    from cds.store.db import make_engine, make_sessionmaker, upgrade

    if settings.database_url.startswith("sqlite"):
        upgrade(settings.database_url)  # as `cds serve` does for the embedded store
    return make_sessionmaker(make_engine(settings.database_url))


def run_sweep_command(
    *,
    settings: Settings,
    rules_dir: Path,
    export_dir: Path,
    as_of: str | None,
    engine: str,
    spark_master: str,
    out: Path | None,
    errors: Path | None,
    resume: str | None,
    workers: int | None,
    batch_size: int,
    memory_limit: str,
    work_dir: Path | None,
    console: Console,
    err: Console,
) -> int:
    from cds.batch.output import OutputError, check_table_path, write_csv, write_table
    from cds.batch.run import (
        BAD_LINE_COLUMNS,
        SweepError,
        SweepInterrupted,
        SweepOptions,
        run_sweep,
    )
    from cds.batch.terminal import RichProgress, summary
    from cds.store import sweeps

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        instant = _instant(as_of)
        if out is not None:
            check_table_path(out)
        if batch_size < 1:
            raise SweepError("--batch-size must be at least 1")
    except (ValueError, OutputError, SweepError) as exc:
        err.print(f"[red]{exc}[/red]")
        return 1
    opts = SweepOptions(
        export_dir=export_dir,
        rules_dir=rules_dir,
        pack_ids=settings.pack_ids,
        profile=settings.profile,
        as_of=instant,
        engine=engine,
        workers=(os.cpu_count() or 1) if workers is None else workers,
        batch_size=batch_size,
        spark_master=spark_master,
        resume=resume,
        work_dir=work_dir,
        memory_limit=memory_limit,
    )
    maker = _maker(settings)
    try:
        with RichProgress(console) as progress:
            report = run_sweep(opts, maker=maker, progress=progress)
    except SweepInterrupted as exc:
        err.print(f"[yellow]{exc}[/yellow]")
        return 130
    except (SweepError, FileNotFoundError) as exc:
        err.print(f"[red]{exc}[/red]")
        return 1
    except Exception as exc:
        from cds.batch.spark import SparkUnavailable

        if isinstance(exc, SparkUnavailable):
            err.print(f"[red]{exc}[/red]")
            return 1
        raise
    finally:
        if engine == "spark":
            from cds.batch.spark import stop_sessions

            stop_sessions()
    summary(report, console)
    if errors is not None:
        write_csv(errors, BAD_LINE_COLUMNS, [b.as_row() for b in report.bad])
        console.print(f"bad lines written to {errors}")
    if out is not None:
        with maker() as s:
            rows = sweeps.worklist(session=s, run_id=report.run_id)
        write_table(out, sweeps.WORKLIST_COLUMNS, rows)
        console.print(f"worklist ({len(rows)} items) written to {out}")
    return 0


def list_runs(*, settings: Settings, console: Console, limit: int) -> None:
    from cds.store import sweeps

    with _maker(settings)() as s:
        runs = sweeps.recent_runs(session=s, limit=limit)
        t = Table(title="Sweep runs (newest first)")
        t.add_column("run id", overflow="fold")
        t.add_column("status", no_wrap=True, min_width=11)
        for col in ("engine", "started", "as of", "patients", "new", "dup", "bad lines"):
            t.add_column(col)
        for r in runs:
            t.add_row(
                r.id,
                r.status,
                r.engine,
                r.started_at.strftime("%Y-%m-%d %H:%M"),
                r.as_of.strftime("%Y-%m-%d %H:%M"),
                f"{r.patients:,}",
                f"{r.alerts_new:,}",
                f"{r.alerts_duplicate:,}",
                f"{r.bad_lines:,}",
            )
    console.print(t)
