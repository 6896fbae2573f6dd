"""The bodies of ``cds rules replay`` and ``cds requests ...`` (``cds/cli.py`` keeps only the
options).

Exit status of a replay: 0 done (the report printed, written with ``--out``, stored for the
console); 1 it could not run (no such folder, a pack that does not compile, no stored calls
in the period, the store unavailable); 2 options that do not go together.

The terminal shows counts, rule ids and invocation ids, never patient data: the examples of
a replay over an export are patient references, so they go to ``--out`` and the console.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichBar
from rich.table import Table

from cds.batch.replay import Progress, ReplayReport
from cds.settings import Settings


class OptionError(ValueError):
    """Options that cannot be used (exit status 2)."""


def parse_instant(text: str | None, option: str, *, end_of_day: bool = False) -> datetime | None:
    """A date (midnight UTC; with ``end_of_day`` the next midnight) or an ISO 8601 instant."""
    if text is None:
        return None
    raw = text.strip()
    try:
        if len(raw) == 10:
            day = date.fromisoformat(raw)
            if end_of_day:
                day += timedelta(days=1)
            return datetime.combine(day, time(0), tzinfo=UTC)
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise OptionError(
            f"{option} {text[:40]!r} is neither a date (2026-11-01) nor an ISO 8601 instant "
            "(2026-11-01T08:00:00Z)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class _Bar(Progress):
    def __init__(self, console: Console) -> None:
        self.bar = RichBar(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[changed]} changed"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task: Any = None
        self.changed = 0

    def __enter__(self) -> _Bar:
        self.bar.start()
        self.task = self.bar.add_task("starting", total=None, changed=0)
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def phase(self, text: str) -> None:
        self.bar.update(self.task, description=text)

    def start(self, total: int) -> None:
        self.bar.update(self.task, total=total, completed=0)

    def advance(self, calls: int, changed: int) -> None:
        self.changed += changed
        self.bar.update(self.task, advance=calls, changed=self.changed)


def _maker(settings: Settings) -> Any:
    from cds.batch.cli import _maker as sweep_maker

    return sweep_maker(settings)


def run_replay_command(
    *,
    settings: Settings,
    rules_dir: Path,
    pack_dir: Path,
    since: str | None,
    until: str | None,
    bulk: Path | None,
    as_of: str | None,
    out: Path | None,
    workers: int | None,
    examples: int,
    profile: str | None,
    store: bool,
    console: Console,
    err: Console,
) -> int:
    import os

    from cds.batch.output import write_csv
    from cds.batch.replay import CSV_COLUMNS, ReplayError, ReplayOptions, csv_rows, run_replay

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if bulk is not None and (since or until):
            raise OptionError("--since/--until select stored calls; with --bulk use --as-of")
        if bulk is None and as_of:
            raise OptionError("--as-of goes with --bulk (stored calls keep their own instant)")
        start = parse_instant(since, "--since")
        end = parse_instant(until, "--until", end_of_day=True)
        instant = parse_instant(as_of, "--as-of")
        if start and end and start >= end:
            raise OptionError("--since must be before --until")
        if out is not None and out.suffix.lower() not in (".json", ".csv"):
            raise OptionError(f"{out.name}: write the report as .json or .csv")
        if examples < 0 or examples > 100:
            raise OptionError("--examples must be between 0 and 100")
        if workers is not None and workers < 0:
            raise OptionError("--workers must be 0 (in this process) or more")
        chosen = (profile or settings.profile).upper()
        if chosen not in ("US", "UK"):
            raise OptionError("--profile must be US or UK")
    except OptionError as exc:
        err.print(f"[red]{exc}[/red]", highlight=False)
        return 2
    opts = ReplayOptions(
        pack_dir=pack_dir,
        rules_dir=rules_dir,
        pack_ids=settings.pack_ids,
        profile=chosen,
        since=start,
        until=end,
        bulk=bulk,
        as_of=instant,
        workers=(os.cpu_count() or 1) if workers is None else workers,
        examples=examples,
        store=store,
    )
    maker = None
    try:
        if store or bulk is None:
            maker = _maker(settings)
        with _Bar(console) as bar:
            report = run_replay(opts, maker=maker, progress=bar)
    except ReplayError as exc:
        err.print(f"[red]{exc}[/red]", highlight=False)
        return 1
    except Exception as exc:
        from cds.store.sweeps import is_store_error

        if is_store_error(exc):
            err.print(
                f"[red]the store at CDS_DATABASE_URL is unavailable ({type(exc).__name__}); "
                "it holds the stored calls and the reports (run `cds db upgrade`?)[/red]",
                highlight=False,
            )
            return 1
        raise
    show(report, console)
    if out is not None:
        if out.suffix.lower() == ".json":
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report.as_json(), indent=2, default=str), encoding="utf-8")
        else:
            write_csv(out, CSV_COLUMNS, csv_rows(report))
        console.print(f"report written to {out}")
    if store:
        console.print(f"report {report.id} stored: the console's Rule changes page shows it")
    return 0


def show(report: ReplayReport, console: Console) -> None:
    """The summary and the per-rule table."""
    what = (
        f"{report.calls:,} stored calls"
        if report.source == "stored"
        else f"{report.calls:,} patients of the export (as of {report.as_of:%Y-%m-%d %H:%M} UTC)"
    )
    base = report.baseline_version or "not served (a new pack)"
    console.print(
        f"[bold]{report.pack_id}[/bold]: served {base} vs working copy "
        f"{report.candidate_version} ({report.candidate_dir}), profile {report.profile}"
    )
    console.print(
        f"replayed {what}: {report.changed_calls:,} would change, "
        f"{report.errors:,} could not be evaluated"
        + (f" ({_kinds(report.error_kinds)})" if report.error_kinds else "")
        + f"; {report.duration_s:.1f} s"
    )
    note = report.options.get("note")
    if note:
        console.print(f"[yellow]{note}[/yellow]")
    rules = report.ordered_rules()
    if not rules:
        console.print("[green]no card would appear, disappear or change severity[/green]")
        return
    t = Table(title="Cards that would change, per rule")
    t.add_column("rule", overflow="fold")
    for col in ("appear", "gone", "sev ↑", "sev ↓", "rules", "fires"):
        t.add_column(col, justify="right", no_wrap=True, min_width=len(col))
    for r in rules:
        t.add_row(
            r.rule_id,
            _n(r.appear),
            _n(r.disappear),
            _n(r.severity_up),
            _n(r.severity_down),
            _n(r.rules),
            f"{r.fires_before:,}→{r.fires_after:,}",
        )
    console.print(t)
    console.print(
        "appear/gone: cards the working copy would add or no longer give; sev: a card's "
        "indicator up or down; rules: the same card with other rules behind it; fires: "
        "cards each rule is behind, served → working copy"
    )
    if report.source == "stored":
        for r in rules[:20]:
            for kind in ("appear", "disappear", "severity_up", "severity_down"):
                ids = r.examples.get(kind, [])
                if ids:
                    console.print(f"  {r.rule_id} {kind}: {', '.join(ids[:3])}", soft_wrap=True)
    else:
        console.print("examples (patients) are in --out and on the console's Rule changes page")
    totals = report.totals
    console.print(
        f"total: {totals['appear']:,} appear, {totals['disappear']:,} disappear, "
        f"{totals['severity_up'] + totals['severity_down']:,} change severity"
    )


def _n(value: int) -> str:
    return f"{value:,}" if value else "·"


def _kinds(kinds: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])[:5])


# ---- cds requests ---------------------------------------------------------------------------


def purge_command(*, settings: Settings, days: int | None, console: Console, err: Console) -> int:
    from cds.store.requests import purge_requests

    keep = settings.keep_requests_days if days is None else days
    if keep < 0:
        err.print("[red]--days must be 0 (delete every kept request) or more[/red]")
        return 2
    try:
        n = purge_requests(maker=_maker(settings), keep_days=keep, now=datetime.now(UTC))
    except Exception as exc:
        from cds.store.sweeps import is_store_error

        if is_store_error(exc):
            err.print(f"[red]the store is unavailable ({type(exc).__name__})[/red]")
            return 1
        raise
    what = "every kept request" if keep == 0 else f"kept requests older than {keep} days"
    console.print(f"deleted {n:,} ({what})")
    return 0


def status_command(*, settings: Settings, console: Console) -> int:
    from cds.store.requests import request_stats

    with _maker(settings)() as s:
        st = request_stats(session=s)
    keep = settings.keep_requests_days
    console.print(
        f"CDS_KEEP_REQUESTS_DAYS={keep}"
        + (
            " (requests are not kept; those below go at the next purge)"
            if keep == 0
            else f" (kept {keep} days, purged hourly)"
        )
    )
    if st.count == 0:
        console.print("no kept requests")
        return 0
    console.print(
        f"{st.count:,} kept requests, received {st.oldest:%Y-%m-%d %H:%M} to "
        f"{st.newest:%Y-%m-%d %H:%M}; {st.stored_bytes / 1e6:.1f} MB stored "
        f"({st.json_bytes / 1e6:.1f} MB of JSON)"
    )
    return 0
