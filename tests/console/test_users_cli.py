"""``cds users``: add (prompted twice, or from stdin), list, disable, enable."""

from __future__ import annotations

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


def test_add_prompts_twice(env_db: str) -> None:
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
