"""``cds users``: add (prompted twice, or from stdin), list, disable, enable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from cds.store import users as store_users
from cds.store.db import make_engine, make_sessionmaker
from cds.store.models import User
from cds.users_cli import users_app

runner = CliRunner()


@pytest.fixture
def env_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh database file the CLI creates and migrates itself."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("CDS_DATABASE_URL", url)
    return url


def users(url: str) -> dict[str, User]:
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as s:
            return {u.username: u for u in s.scalars(select(User))}
    finally:
        engine.dispose()


def test_add_with_password_on_stdin(env_db: str) -> None:
    result = runner.invoke(
        users_app,
        ["add", "alice", "--role", "admin", "--password-stdin"],
        input="a long enough password\n",
    )
    assert result.exit_code == 0, result.output
    assert "added alice (admin)" in result.output
    alice = users(env_db)["alice"]
    assert alice.role == "admin" and alice.password_hash.startswith("$argon2id$")
    assert (
        store_users.authenticate(
            maker=make_sessionmaker(make_engine(env_db)),
            username="alice",
            password="a long enough password",
        ).outcome
        == "ok"
    )


def test_add_prompts_twice(env_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cds.users_cli.has_terminal", lambda: True)  # as at a real terminal
    result = runner.invoke(
        users_app, ["add", "bob"], input="pharmacist secret\npharmacist secret\n"
    )
    assert result.exit_code == 0, result.output
    assert users(env_db)["bob"].role == "pharmacist"
    mismatch = runner.invoke(
        users_app, ["add", "carol"], input="first password x\nsecond password\n"
    )
    assert mismatch.exit_code != 0
    assert "carol" not in users(env_db)


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (
            ["add", "dave", "--role", "root", "--password-stdin"],
            "long enough pass\n",
            "role must be",
        ),
        (["add", "dave", "--password-stdin"], "short\n", "at least 12"),
    ],
)
def test_add_refuses_bad_input(env_db: str, args: list[str], stdin: str, message: str) -> None:
    result = runner.invoke(users_app, args, input=stdin)
    assert result.exit_code == 1
    assert message in result.output


def test_duplicate_list_disable_enable(env_db: str) -> None:
    for name in ("erin", "erin"):
        result = runner.invoke(
            users_app, ["add", name, "--password-stdin"], input="erin's password!\n"
        )
    assert result.exit_code == 1 and "already exists" in result.output
    listed = runner.invoke(users_app, ["list"])
    assert listed.exit_code == 0 and "erin" in listed.output and "active" in listed.output
    assert runner.invoke(users_app, ["disable", "erin"]).exit_code == 0
    assert users(env_db)["erin"].disabled
    assert "disabled" in runner.invoke(users_app, ["list"]).output
    assert runner.invoke(users_app, ["enable", "erin"]).exit_code == 0
    assert not users(env_db)["erin"].disabled
    missing = runner.invoke(users_app, ["disable", "nobody"])
    assert missing.exit_code == 1 and "no user" in missing.output


def test_list_on_an_empty_database(env_db: str) -> None:
    result = runner.invoke(users_app, ["list"])
    assert result.exit_code == 0 and "no accounts" in result.output


CDS = Path(sys.executable).with_name("cds")


def _cds(
    args: list[str], env_db: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The installed ``cds`` command, as an operator or a provisioning script runs it:
    ``stdin`` None means no terminal and nothing piped (``docker exec`` without ``-t``)."""
    return subprocess.run(
        [str(CDS), "users", *args],
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        env={**os.environ, "CDS_DATABASE_URL": env_db},
        timeout=120,
    )


def test_add_without_a_terminal_says_to_use_password_stdin(env_db: str) -> None:
    result = _cds(["add", "nadia"], env_db)
    assert result.returncode == 1, result
    assert "no terminal" in result.stderr and "--password-stdin" in result.stderr
    assert "Traceback" not in result.stderr and "Aborted" not in result.stderr
    piped = _cds(["add", "nadia", "--password-stdin"], env_db, stdin="nadia's long password\n")
    assert piped.returncode == 0, piped.stderr
    assert "added nadia" in piped.stdout
    assert list(users(env_db)) == ["nadia"]  # the refused attempt added nothing


def test_set_password_and_unlock(env_db: str) -> None:
    assert (
        runner.invoke(
            users_app, ["add", "olga", "--password-stdin"], input="olga's first password\n"
        ).exit_code
        == 0
    )
    maker = make_sessionmaker(make_engine(env_db))
    for _ in range(store_users.MAX_FAILURES):
        store_users.authenticate(maker=maker, username="olga", password="wrong guess here")
    assert (
        store_users.authenticate(
            maker=maker, username="olga", password="olga's first password"
        ).outcome
        == "locked"
    )
    assert runner.invoke(users_app, ["unlock", "olga"]).exit_code == 0
    assert (
        store_users.authenticate(
            maker=maker, username="olga", password="olga's first password"
        ).outcome
        == "ok"
    )
    # set-password: without a terminal it asks for --password-stdin; piped, it works,
    # and the old password stops working.
    no_tty = _cds(["set-password", "olga"], env_db)
    assert no_tty.returncode == 1 and "--password-stdin" in no_tty.stderr
    short = runner.invoke(users_app, ["set-password", "olga", "--password-stdin"], input="x\n")
    assert short.exit_code == 1 and "at least 12" in short.output
    done = _cds(["set-password", "olga", "--password-stdin"], env_db, stdin="olga's new password\n")
    assert done.returncode == 0 and "password set for olga" in done.stdout, done.stderr
    assert (
        store_users.authenticate(
            maker=maker, username="olga", password="olga's first password"
        ).outcome
        == "invalid"
    )
    assert (
        store_users.authenticate(
            maker=maker, username="olga", password="olga's new password"
        ).outcome
        == "ok"
    )
    missing = runner.invoke(users_app, ["unlock", "nobody"])
    assert missing.exit_code == 1 and "no user" in missing.output
