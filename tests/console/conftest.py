"""Console fixtures: a migrated SQLite database, accounts, the app, signed-in clients.

``console_app`` is the real ``create_app(settings)`` when it imports (it includes the
console router and mounts its static files); before that existed, a minimal FastAPI app
with the same ``app.state`` contract stood in, and still does if the import fails.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from cds.settings import Settings
from cds.store import users as store_users
from cds.store.db import make_engine, make_sessionmaker, upgrade

PASSWORD = "correct horse battery"
ADMIN_PASSWORD = "admin staple battery"
SECRET = "console-test-secret-0123456789abcdef"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def build_app(settings: Settings, maker: sessionmaker[Session]) -> FastAPI:
    """The app under test: ``create_app`` if importable, else the minimal stand-in."""
    try:
        from cds.web.app import create_app
    except ImportError:
        create_app = None
    if create_app is not None:
        return create_app(settings, maker=maker)
    from fastapi.staticfiles import StaticFiles

    from cds.web.console import STATIC_DIR, console_router

    app = FastAPI()
    app.state.settings = settings
    app.state.maker = maker
    app.include_router(console_router())
    app.mount("/review/static", StaticFiles(directory=str(STATIC_DIR)), name="review-static")
    return app


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'console.db'}"
    upgrade(url)
    return url


@pytest.fixture
def maker(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def console_settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, secure_cookies=False, session_secret=SECRET, auth="off")


@pytest.fixture
def console_app(console_settings: Settings, maker: sessionmaker[Session]) -> FastAPI:
    return build_app(console_settings, maker)


@dataclass(frozen=True)
class Account:
    username: str
    password: str
    role: str


def make_user(
    maker: sessionmaker[Session], username: str, password: str = PASSWORD, role: str = "pharmacist"
) -> Account:
    with maker.begin() as s:
        store_users.create_user(session=s, username=username, password=password, role=role)
    return Account(username, password, role)


@pytest.fixture
def pharmacist(maker: sessionmaker[Session]) -> Account:
    return make_user(maker, "pat.pharm")


@pytest.fixture
def admin(maker: sessionmaker[Session]) -> Account:
    return make_user(maker, "ada.admin", ADMIN_PASSWORD, "admin")


@pytest.fixture
def client(console_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(console_app, follow_redirects=False) as c:
        yield c


_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_from(html: str) -> str:
    match = _TOKEN.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def login(
    client: TestClient, account: Account, password: str | None = None, next_path: str = ""
) -> object:
    """Sign in through the real form (GET for the token and cookie, then POST)."""
    page = client.get("/review/login")
    return client.post(
        "/review/login",
        data={
            "username": account.username,
            "password": password or account.password,
            "csrf_token": csrf_from(page.text),
            "next": next_path,
        },
    )


@pytest.fixture
def signed_in(client: TestClient, pharmacist: Account) -> TestClient:
    response = login(client, pharmacist)
    assert response.status_code == 303, response.text  # type: ignore[attr-defined]
    return client


def page_token(client: TestClient, path: str = "/review/alerts") -> str:
    """The session's CSRF token, read from a signed-in page."""
    return csrf_from(client.get(path).text)
