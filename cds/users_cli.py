"""``cds users``: console accounts from the command line (add, list, disable, enable,
set-password, unlock).

Accounts are made here, not on a web page, so the password is typed by its owner
(twice, hidden) or piped in (``--password-stdin``, for provisioning scripts and any run
without a terminal) and never appears in shell history or a process list. Every command
first brings the database schema up to date, so it works on a fresh machine.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from sqlalchemy.orm import Session, sessionmaker

from cds.settings import Settings
from cds.store import users as store_users
from cds.store.db import make_engine, make_sessionmaker, upgrade

users_app = typer.Typer(help="Review console accounts.", no_args_is_help=True)


def _maker() -> sessionmaker[Session]:
    url = Settings().database_url
    upgrade(url)
    return make_sessionmaker(make_engine(url))


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=1)


NO_TERMINAL = (
    "no terminal to type the password in: pipe it on standard input with "
    "--password-stdin, e.g.  printf '%s\\n' \"$PASSWORD\" | cds users {cmd} NAME --password-stdin"
)


def has_terminal() -> bool:
    """Whether a password can be typed (hidden) here: standard input is a terminal."""
    return sys.stdin.isatty()


def _read_password(from_stdin: bool, cmd: str = "add") -> str:
    """The password from standard input (one line), or typed twice at a terminal."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not has_terminal():
        _fail(NO_TERMINAL.format(cmd=cmd))
    try:
        return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))
    except typer.Abort:
        _fail("no password typed")
        raise


@users_app.command("add")
def add(
    username: Annotated[str, typer.Argument(help="Login name")],
    role: Annotated[str, typer.Option(help="pharmacist or admin")] = "pharmacist",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input")
    ] = False,
) -> None:
    """Create an account (password at least 12 characters, argon2-hashed)."""
    if role not in store_users.ROLES:
        _fail(f"role must be one of {', '.join(store_users.ROLES)}")
    password = _read_password(password_stdin)
    try:
        store_users.check_password_policy(password)
        with _maker().begin() as s:
            info = store_users.create_user(
                session=s, username=username, password=password, role=role
            )
    except store_users.UserError as exc:
        _fail(str(exc))
        return
    typer.echo(f"added {info.username} ({info.role})")


@users_app.command("list")
def list_() -> None:
    """Show every account with its role and state."""
    with _maker()() as s:
        accounts = store_users.list_users(session=s)
    if not accounts:
        typer.echo("no accounts (add one with: cds users add NAME --role admin)")
        return
    now = store_users.utcnow()
    width = max(len(a.username) for a in accounts)
    for a in accounts:
        state = (
            "disabled"
            if a.disabled
            else (
                f"locked until {a.locked_until:%Y-%m-%d %H:%M} UTC"
                if a.locked_until and a.locked_until > now
                else "active"
            )
        )
        typer.echo(
            f"{a.username:<{width}}  {a.role:<10}  {state:<10}  created {a.created_at:%Y-%m-%d}"
        )


def _set_disabled(username: str, disabled: bool) -> None:
    try:
        with _maker().begin() as s:
            store_users.set_disabled(session=s, username=username, disabled=disabled)
    except store_users.UserError as exc:
        _fail(str(exc))
        return
    typer.echo(f"{'disabled' if disabled else 'enabled'} {username}")


@users_app.command("disable")
def disable(username: Annotated[str, typer.Argument(help="Login name")]) -> None:
    """Disable an account and end its sessions at once (nothing is deleted)."""
    _set_disabled(username, True)


@users_app.command("set-password")
def set_password(
    username: Annotated[str, typer.Argument(help="Login name")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input")
    ] = False,
) -> None:
    """Give an account a new password; unlocks it and ends its sessions."""
    password = _read_password(password_stdin, "set-password")
    try:
        with _maker().begin() as s:
            info = store_users.set_password(session=s, username=username, password=password)
    except store_users.UserError as exc:
        _fail(str(exc))
        return
    typer.echo(f"password set for {info.username}; its sessions ended")


@users_app.command("unlock")
def unlock(username: Annotated[str, typer.Argument(help="Login name")]) -> None:
    """Clear an account's lock after too many failed sign-ins."""
    try:
        with _maker().begin() as s:
            info = store_users.unlock(session=s, username=username)
    except store_users.UserError as exc:
        _fail(str(exc))
        return
    typer.echo(f"unlocked {info.username}")


@users_app.command("enable")
def enable(username: Annotated[str, typer.Argument(help="Login name")]) -> None:
    """Re-enable a disabled account (and clear any lock)."""
    _set_disabled(username, False)
