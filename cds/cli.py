"""``cds``: serve, evaluate, sweep, rules check / test, db upgrade, users. Thin commands only."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cds.settings import Settings

app = typer.Typer(
    help="CDS Hooks clinical decision-support rules engine.",
    no_args_is_help=True,
    add_completion=False,
)
rules_app = typer.Typer(help="Check and test rule packs.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
requests_app = typer.Typer(
    help="Kept hook requests (CDS_KEEP_REQUESTS_DAYS): patient data, purged on schedule.",
    no_args_is_help=True,
)
app.add_typer(rules_app, name="rules")
app.add_typer(db_app, name="db")
app.add_typer(requests_app, name="requests")
try:
    from cds.users_cli import users_app

    app.add_typer(users_app, name="users", help="Console accounts.")
except ImportError:  # pragma: no cover - the console ships with the package
    pass

console = Console()
err = Console(stderr=True)


def _rules_dir(settings: Settings) -> Path:
    from cds.paths import data_dir

    return settings.rules_dir or data_dir("rules")


def _config_error(exc: Exception) -> typer.Exit:
    """A configuration error as the operator should see it: one line, exit status 2."""
    err.print(f"[bold red]configuration error:[/bold red] {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
    console: Annotated[
        str | None,
        typer.Option(
            help="Review console: on (same port as the hook API), off (hook API only), "
            "only (console only); default CDS_CONSOLE"
        ),
    ] = None,
    console_port: Annotated[
        int | None,
        typer.Option(
            help="Serve the review console on its own port, in its own process: the hook "
            "API on --port never shares a thread or a GIL with console sign-ins"
        ),
    ] = None,
) -> None:
    """Run the service (applies pending migrations on the SQLite default first)."""
    import subprocess

    from cds.errors import ConfigError

    if console is not None:
        if console not in ("on", "off", "only"):
            raise _config_error(ValueError("--console must be on, off or only"))
        os.environ["CDS_CONSOLE"] = console
    try:
        settings = Settings()
    except ValueError as exc:  # pydantic: a CDS_* variable that cannot be read
        raise _config_error(exc) from None
    if console_port is not None:
        if settings.console == "only":
            raise _config_error(ValueError("--console-port needs the hook API: not --console only"))
        if console_port == port:
            raise _config_error(ValueError("--console-port must differ from --port"))
        os.environ["CDS_CONSOLE"] = "off"
        settings = Settings()
    try:
        from cds.web.app import check_settings, make_verifier

        check_settings(settings, workers=workers)
        make_verifier(settings)  # reads CDS_TRUSTED_ISSUERS now: a bad file is one line
    except ConfigError as exc:
        raise _config_error(exc) from None
    if settings.database_url.startswith("sqlite"):
        from cds.store.db import upgrade

        upgrade(settings.database_url)
    if settings.auth == "off" and settings.console != "only":
        err.print(
            "[bold red]CDS_AUTH=off: development mode, JWT authentication is DISABLED.[/bold red]"
        )
    child: subprocess.Popen[bytes] | None = None
    if console_port is not None:
        # The console in its own process (one worker: sign-in is rate-limited per process).
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cds.cli",
                "serve",
                "--host",
                host,
                "--port",
                str(console_port),
                "--console",
                "only",
            ],
            env={**os.environ, "CDS_CONSOLE": "only"},
        )
        err.print(f"review console on http://{host}:{console_port}/review (own process)")
    try:
        _run_uvicorn(settings, host=host, port=port, workers=workers)
    finally:
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()


def _run_uvicorn(settings: Settings, *, host: str, port: int, workers: int) -> None:
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    log_config = {
        **LOGGING_CONFIG,
        "loggers": {
            **LOGGING_CONFIG["loggers"],
            # the service's own lines (hook calls with rule ids, pack reloads, auth failures);
            # never bodies or tokens
            "cds": {"handlers": ["default"], "level": "INFO", "propagate": False},
        },
    }
    uvicorn.run(
        "cds.web.factory:app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=False,
        proxy_headers=True,
        log_config=log_config,
        # httptools (C) with a bound on the request line and headers it buffers: a 64 MB
        # header was held in memory before authentication (hardening #16). h11 bounded it
        # too but parsed in Python, at 0.35 ms of CPU per call (cds/web/http.py).
        http="cds.web.http:BoundedHttpToolsProtocol",
        h11_max_incomplete_event_size=settings.max_header_bytes,  # read by that protocol
    )


@app.command()
def evaluate(
    request: Annotated[Path, typer.Argument(help="A CDS Hooks request (JSON file)")],
    now: Annotated[
        str | None, typer.Option(help="Evaluation instant (ISO 8601); default now")
    ] = None,
    profile: Annotated[str | None, typer.Option(help="US or UK (default CDS_PROFILE)")] = None,
) -> None:
    """Print the response a hook call would give, without a server or a database."""
    from cds.evaluate_file import evaluate_request

    settings = Settings()
    instant = datetime.fromisoformat(now.replace("Z", "+00:00")) if now else datetime.now(UTC)
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    try:
        body = json.loads(request.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        err.print(f"cannot read {request}: {exc}")
        raise typer.Exit(2) from None
    status, response = evaluate_request(
        body,
        rules_dir=_rules_dir(settings),
        pack_ids=settings.pack_ids,
        profile=(profile or settings.profile).upper(),
        now=instant,
        settings=settings,
    )
    sys.stdout.write(json.dumps(response, indent=2) + "\n")
    raise typer.Exit(0 if status == 200 else 1)


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply pending migrations to CDS_DATABASE_URL."""
    from cds.store.db import upgrade

    settings = Settings()
    upgrade(settings.database_url, revision)
    console.print(f"database at {revision}")


@rules_app.command("check")
def rules_check(
    pack: Annotated[str | None, typer.Argument()] = None,
    profile: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Validate and compile a pack; summarise rules per category and evidence coverage."""
    from collections import Counter

    from cds.engine.pack import compile_pack, pack_folder
    from cds.engine.registry import resolve_pack_ids
    from cds.errors import PackError

    settings = Settings()
    pack_ids = [pack] if pack else resolve_pack_ids(_rules_dir(settings), settings.pack_ids)
    failed = False
    for pid in pack_ids:
        try:
            folder = pack_folder(_rules_dir(settings), pid)
            profiles = [profile.upper()] if profile else _profiles(folder)
            compiled = [compile_pack(folder, p) for p in profiles]
        except PackError as exc:
            err.print(f"[red]FAIL[/red] {pid}: {exc}")
            failed = True
            continue
        first = compiled[0]
        table = Table(title=f"{first.title} {first.version}: rules per category")
        table.add_column("category")
        for c in compiled:
            table.add_column(f"{c.profile} rules", justify="right")
        cats = sorted({r.category for c in compiled for r in c.rules.values()})
        counts = [Counter(r.category for r in c.rules.values()) for c in compiled]
        for cat in cats:
            table.add_row(cat, *[str(cn[cat]) for cn in counts])
        table.add_row("total", *[str(len(c.rules)) for c in compiled])
        console.print(table)
        uncited = [r.id for c in compiled for r in c.rules.values() if not r.evidence]
        console.print(
            f"evidence: every rule cites at least one source: "
            f"{'yes' if not uncited else 'NO ' + ', '.join(uncited)}"
        )
        policy = first.rules_resting_on_policy_only()
        console.print(f"rules resting on local policy alone ({len(policy)}): {', '.join(policy)}")
        console.print(f"[green]OK[/green] {pid} {first.version}")
    if len(pack_ids) > 1 and not failed:
        from cds.engine.pairs import pair_problems

        folders = [pack_folder(_rules_dir(settings), pid) for pid in pack_ids]
        packs = [compile_pack(f, profile.upper() if profile else _profiles(f)[0]) for f in folders]
        problems, owners = pair_problems(packs)
        for owner in owners:
            console.print(f"pair {owner} owns the card")
        for p in problems:
            err.print(f"[red]FAIL[/red] {p}")
        failed = failed or bool(problems)
    raise typer.Exit(1 if failed else 0)


def _profiles(folder: Path) -> list[str]:
    import yaml

    data: dict[str, Any] = yaml.safe_load((folder / "pack.yaml").read_text(encoding="utf-8"))
    return sorted((data.get("profiles") or {"US": {}}).keys())


@rules_app.command("test")
def rules_test(
    pack: Annotated[str | None, typer.Argument()] = None,
    properties: Annotated[
        bool, typer.Option("--properties", help="Also run the pack invariants")
    ] = False,
) -> None:
    """Run the pack's vignettes (and, with --properties, its invariants)."""
    from cds.engine.registry import resolve_pack_ids
    from cds.testing.vignettes import run_vignettes_cli

    settings = Settings()
    pack_ids = [pack] if pack else resolve_pack_ids(_rules_dir(settings), settings.pack_ids)
    ok = True
    for pid in pack_ids:
        ok = run_vignettes_cli(_rules_dir(settings), pid, console) and ok
        if properties:
            from cds.testing.invariants import run_properties_cli

            ok = run_properties_cli(_rules_dir(settings), pid, console) and ok
    raise typer.Exit(0 if ok else 1)


@app.command()
def sweep(
    export_dir: Annotated[Path, typer.Argument(help="A FHIR Bulk Data export (NDJSON files)")],
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Evaluation instant (ISO 8601); default now")
    ] = None,
    engine: Annotated[str, typer.Option(help="duckdb (process pool) or spark")] = "duckdb",
    spark_master: Annotated[str, typer.Option(help="Spark master URL")] = "local[2]",
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the worklist (.csv or .parquet)")
    ] = None,
    errors: Annotated[
        Path | None, typer.Option("--errors", help="Write every bad line as CSV")
    ] = None,
    resume: Annotated[
        str | None, typer.Option("--resume", help="Carry on an interrupted run")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Evaluation processes (default: the cores; 0: in process)")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Patients per committed batch")] = 200,
    memory_limit: Annotated[str, typer.Option(help="DuckDB memory limit")] = "2GB",
    work_dir: Annotated[
        Path | None, typer.Option(help="DuckDB work folder (default under TMPDIR)")
    ] = None,
) -> None:
    """Evaluate the packs over a whole export; put the worklist in the review console."""
    from cds.batch.cli import run_sweep_command

    code = run_sweep_command(
        settings=Settings(),
        rules_dir=_rules_dir(Settings()),
        export_dir=export_dir,
        as_of=as_of,
        engine=engine,
        spark_master=spark_master,
        out=out,
        errors=errors,
        resume=resume,
        workers=workers,
        batch_size=batch_size,
        memory_limit=memory_limit,
        work_dir=work_dir,
        console=console,
        err=err,
    )
    raise typer.Exit(code)


@app.command("sweeps")
def sweeps_list(
    limit: Annotated[int, typer.Option(help="How many recent runs")] = 20,
) -> None:
    """Recent sweep runs and their status (the id to pass to --resume)."""
    from cds.batch.cli import list_runs

    list_runs(settings=Settings(), console=console, limit=limit)


@rules_app.command("replay")
def rules_replay(
    pack_dir: Annotated[
        Path, typer.Option("--pack-dir", help="The working copy of a pack (its folder)")
    ],
    since: Annotated[
        str | None,
        typer.Option(help="Stored calls received from this date (UTC) or ISO 8601 instant"),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="... up to this date (included) or instant (excluded)")
    ] = None,
    bulk: Annotated[
        Path | None,
        typer.Option("--bulk", help="Replay over a Bulk Data export folder instead"),
    ] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="With --bulk: evaluation instant; default now")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the report (.json or .csv)")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Evaluation processes (default: the cores; 0: here)")
    ] = None,
    examples: Annotated[int, typer.Option(help="Example ids kept per rule and change")] = 5,
    profile: Annotated[str | None, typer.Option(help="US or UK (default CDS_PROFILE)")] = None,
    store: Annotated[
        bool, typer.Option("--store/--no-store", help="Keep the report for the console")
    ] = True,
) -> None:
    """What a changed pack would change: cards appearing, disappearing, changing severity,
    per rule, over the stored hook calls (or a Bulk export), against the served packs."""
    from cds.batch.replay_cli import run_replay_command

    settings = Settings()
    code = run_replay_command(
        settings=settings,
        rules_dir=_rules_dir(settings),
        pack_dir=pack_dir,
        since=since,
        until=until,
        bulk=bulk,
        as_of=as_of,
        out=out,
        workers=workers,
        examples=examples,
        profile=profile,
        store=store,
        console=console,
        err=err,
    )
    raise typer.Exit(code)


@requests_app.command("purge")
def requests_purge(
    days: Annotated[
        int | None,
        typer.Option(help="Keep this many days (default CDS_KEEP_REQUESTS_DAYS; 0: delete all)"),
    ] = None,
) -> None:
    """Delete kept hook requests past their retention (the service also does, hourly)."""
    from cds.batch.replay_cli import purge_command

    raise typer.Exit(purge_command(settings=Settings(), days=days, console=console, err=err))


@requests_app.command("status")
def requests_status() -> None:
    """How many hook requests are kept, from when, and how much space they take."""
    from cds.batch.replay_cli import status_command

    raise typer.Exit(status_command(settings=Settings(), console=console))


@rules_app.command("reload")
def rules_reload(
    url: Annotated[str, typer.Option(help="A running service")] = "http://127.0.0.1:8000",
) -> None:
    """Ask running instances to reload their packs (via Redis when CDS_REDIS_URL is set)."""
    settings = Settings()
    if not settings.redis_url:
        err.print("CDS_REDIS_URL is not set: send SIGHUP to the server process instead")
        raise typer.Exit(2)
    from cds.web.reload import publish_reload

    publish_reload(settings.redis_url)
    console.print(f"reload requested ({os.getpid()})")


if __name__ == "__main__":  # pragma: no cover
    app()
