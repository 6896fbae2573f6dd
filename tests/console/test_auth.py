"""Who can reach the console: sign-in, sessions, CSRF, lockout, roles.

The two sweeping tests walk the router's own route table, so a page or form added later
is covered without anyone remembering to add it here.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cds.store import users as store_users
from cds.store.models import ConsoleSession, User
from cds.web.console import console_router
from cds.web.console.security import LOGIN_COOKIE, SESSION_COOKIE
from tests.console.conftest import Account, csrf_from, login, make_user, page_token
from tests.console.seed import add_card

try:  # FastAPI >= 0.150 keeps included routers nested
    from fastapi.routing import iter_route_contexts
except ImportError:  # pragma: no cover - older FastAPI flattens them
    iter_route_contexts = None

PUBLIC = {"console_login", "console_login_submit"}


def console_routes() -> list[tuple[str, str, str]]:
    """(name, method, path) for every route of the console router."""
    router = console_router()
    routes = list(iter_route_contexts(router.routes)) if iter_route_contexts else router.routes
    out = []
    for r in routes:
        for method in sorted(getattr(r, "methods", None) or ()):
            out.append((r.name, method, r.path))
    assert len(out) >= 10, out
    return out


def fill(path: str, card_id: str = "00000000-0000-0000-0000-000000000000") -> str:
    return path.replace("{card_id}", card_id).replace("{user_id}", "1")


ROUTES = console_routes()


@pytest.mark.parametrize(
    ("name", "method", "path"), [r for r in ROUTES if r[0] not in PUBLIC], ids=lambda x: str(x)
)
def test_every_route_refuses_anonymous(
    client: TestClient, maker: sessionmaker[Session], name: str, method: str, path: str
) -> None:
    card_id = add_card(maker, summary="Secret summary nobody anonymous may see")
    response = client.request(method, fill(path, card_id), data={"note": "x"})
    assert response.status_code == 303, (name, response.status_code)
    assert response.headers["location"].startswith("/review/login")
    assert "Secret summary" not in response.text
    assert card_id not in response.text


def test_anonymous_get_remembers_where_it_was_going(client: TestClient) -> None:
    response = client.get("/review/alerts?indicator=critical")
    assert response.headers["location"] == (
        "/review/login?next=%2Freview%2Falerts%3Findicator%3Dcritical"
    )


def test_a_forged_session_cookie_is_refused(client: TestClient) -> None:
    client.cookies.set(SESSION_COOKIE, "forged.token", path="/review")
    response = client.get("/review/alerts")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/review/login")


@pytest.mark.parametrize(
    ("name", "method", "path"),
    [r for r in ROUTES if r[1] == "POST" and r[0] not in PUBLIC],
    ids=lambda x: str(x),
)
def test_every_post_needs_the_session_csrf_token(
    client: TestClient, maker: sessionmaker[Session], name: str, method: str, path: str
) -> None:
    admin = make_user(maker, "csrf.admin", "admin password 123", "admin")
    other = make_user(maker, "csrf.other")
    card_id = add_card(maker)
    assert login(client, admin).status_code == 303  # type: ignore[attr-defined]
    target = fill(path, card_id).replace("/users/1/", "/users/2/")
    form = {
        "action": "acknowledge",
        "note": "n",
        "patient": "Patient/critical-1",  # a group of the queue (add_card's patient)
        "current": "admin password 123",  # the password forms
        "password": "a new password 456",
        "confirm": "a new password 456",
    }
    for token in (None, "", "not-the-token", csrf_from(login_page_html(client))):
        data = dict(form)
        if token is not None:
            data["csrf_token"] = token
        response = client.post(target, data=data)
        assert response.status_code == 403, (name, token)
        assert "security token" in response.text
    # Nothing happened: the card is unreviewed, the other account enabled, still signed in.
    with maker() as s:
        assert not s.scalar(select(User.disabled).where(User.username == other.username))
    assert client.get("/review/alerts").status_code == 200
    # And with the right token the same request goes through.
    response = client.post(target, data={**form, "csrf_token": page_token(client)})
    assert response.status_code == 303, (name, response.text)


def login_page_html(client: TestClient) -> str:
    """A sign-in form's token: valid for signing in, never for a session's forms."""
    return client.get("/review/login").text


def test_login_form_needs_its_csrf_token(client: TestClient, pharmacist: Account) -> None:
    client.get("/review/login")
    response = client.post(
        "/review/login", data={"username": pharmacist.username, "password": pharmacist.password}
    )
    assert response.status_code == 403
    response = client.post(
        "/review/login",
        data={
            "username": pharmacist.username,
            "password": pharmacist.password,
            "csrf_token": "forged",
        },
    )
    assert response.status_code == 403
    assert SESSION_COOKIE not in response.cookies


def test_login_token_is_tied_to_its_cookie(console_app: FastAPI, pharmacist: Account) -> None:
    """A token lifted from another browser's form does not work with this browser's cookie."""
    with (
        TestClient(console_app, follow_redirects=False) as a,
        TestClient(console_app, follow_redirects=False) as b,
    ):
        token_a = csrf_from(a.get("/review/login").text)
        b.get("/review/login")
        response = b.post(
            "/review/login",
            data={
                "username": pharmacist.username,
                "password": pharmacist.password,
                "csrf_token": token_a,
            },
        )
        assert response.status_code == 403


def test_sign_in_sets_a_hardened_cookie_and_lands_on_next(
    client: TestClient, pharmacist: Account
) -> None:
    response = login(client, pharmacist, next_path="/review/rules")
    assert response.status_code == 303  # type: ignore[attr-defined]
    assert response.headers["location"] == "/review/rules"  # type: ignore[attr-defined]
    cookies = response.headers.get_list("set-cookie")  # type: ignore[attr-defined]
    session = next(c for c in cookies if c.startswith(f"{SESSION_COOKIE}="))
    assert "HttpOnly" in session
    assert "samesite=lax" in session.lower()
    assert "Path=/review" in session
    assert "Secure" not in session  # secure_cookies=False in these plain-http tests
    assert any(c.startswith(f"{LOGIN_COOKIE}=") and "Max-Age=0" in c for c in cookies)
    assert client.get("/review/rules").status_code == 200


def test_cookies_are_secure_by_default(console_app: FastAPI, pharmacist: Account) -> None:
    console_app.state.settings = console_app.state.settings.model_copy(
        update={"secure_cookies": True}
    )
    with TestClient(console_app, base_url="https://testserver", follow_redirects=False) as c:
        page = c.get("/review/login")
        assert "Secure" in page.headers["set-cookie"]
        response = login(c, pharmacist)
        assert all("Secure" in v for v in response.headers.get_list("set-cookie"))  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/x",
        "/elsewhere",
        "/review\\@evil",
        "javascript:alert(1)",
    ],
)
def test_next_never_leaves_the_console(
    client: TestClient, pharmacist: Account, target: str
) -> None:
    response = login(client, pharmacist, next_path=target)
    assert response.headers["location"] == "/review/alerts"  # type: ignore[attr-defined]


def test_wrong_password_is_refused_with_one_message(
    client: TestClient, pharmacist: Account
) -> None:
    wrong = login(client, pharmacist, password="not the password")
    unknown = login(client, Account("nobody", "whatever password", "pharmacist"))
    for response in (wrong, unknown):
        assert response.status_code == 401  # type: ignore[attr-defined]
        assert "Sign-in failed" in response.text  # type: ignore[attr-defined]
        assert SESSION_COOKIE not in response.cookies  # type: ignore[attr-defined]
    assert client.get("/review/alerts").status_code == 303


def test_lockout_after_five_failures(
    client: TestClient, pharmacist: Account, maker: sessionmaker[Session]
) -> None:
    for _ in range(store_users.MAX_FAILURES):
        assert login(client, pharmacist, password="wrong password").status_code == 401  # type: ignore[attr-defined]
    # Locked: even the right password fails, with the same message.
    response = login(client, pharmacist)
    assert response.status_code == 401  # type: ignore[attr-defined]
    assert "locked for 15 minutes" in response.text  # type: ignore[attr-defined]
    with maker() as s:
        user = s.scalar(select(User).where(User.username == pharmacist.username))
        assert user is not None and user.locked_until is not None
    # 15 minutes later the right password works again and clears the counter.
    later = store_users.utcnow() + store_users.LOCK_DURATION + timedelta(seconds=1)
    assert (
        store_users.authenticate(
            maker=maker, username=pharmacist.username, password=pharmacist.password, now=later
        ).outcome
        == "ok"
    )
    with maker() as s:
        user = s.scalar(select(User).where(User.username == pharmacist.username))
        assert user is not None and user.failed_attempts == 0 and user.locked_until is None


def test_failures_while_locked_do_not_extend_the_lock(
    maker: sessionmaker[Session], pharmacist: Account
) -> None:
    now = store_users.utcnow()
    for _ in range(store_users.MAX_FAILURES):
        store_users.authenticate(
            maker=maker, username=pharmacist.username, password="x" * 12, now=now
        )
    with maker() as s:
        until = s.scalar(select(User.locked_until).where(User.username == pharmacist.username))
    assert until is not None
    for _ in range(10):
        assert (
            store_users.authenticate(
                maker=maker,
                username=pharmacist.username,
                password="x" * 12,
                now=now + timedelta(minutes=5),
            ).outcome
            == "locked"
        )
    with maker() as s:
        assert (
            s.scalar(select(User.locked_until).where(User.username == pharmacist.username)) == until
        )


def test_a_success_resets_the_failure_count(
    maker: sessionmaker[Session], pharmacist: Account
) -> None:
    for _ in range(2):
        for _ in range(store_users.MAX_FAILURES - 1):
            store_users.authenticate(maker=maker, username=pharmacist.username, password="no")
        assert (
            store_users.authenticate(
                maker=maker, username=pharmacist.username, password=pharmacist.password
            ).outcome
            == "ok"
        )


def test_disabled_user_cannot_sign_in(
    client: TestClient, pharmacist: Account, maker: sessionmaker[Session]
) -> None:
    with maker.begin() as s:
        store_users.set_disabled(session=s, username=pharmacist.username, disabled=True)
    response = login(client, pharmacist)
    assert response.status_code == 401  # type: ignore[attr-defined]
    assert "Sign-in failed" in response.text  # type: ignore[attr-defined]


def test_disabling_ends_open_sessions_at_once(
    signed_in: TestClient, pharmacist: Account, maker: sessionmaker[Session]
) -> None:
    assert signed_in.get("/review/alerts").status_code == 200
    with maker.begin() as s:
        store_users.set_disabled(session=s, username=pharmacist.username, disabled=True)
    assert signed_in.get("/review/alerts").status_code == 303


def test_logout_revokes_the_session_server_side(
    signed_in: TestClient, maker: sessionmaker[Session]
) -> None:
    stolen = signed_in.cookies.get(SESSION_COOKIE)
    response = signed_in.post("/review/logout", data={"csrf_token": page_token(signed_in)})
    assert response.status_code == 303
    assert response.headers["location"] == "/review/login?signed_out=1"
    assert "You are signed out" in signed_in.get("/review/login?signed_out=1").text
    # Replaying the old cookie (say, copied before logout) no longer works.
    signed_in.cookies.set(SESSION_COOKIE, stolen or "", path="/review")
    assert signed_in.get("/review/alerts").status_code == 303
    with maker() as s:
        row = s.scalars(select(ConsoleSession)).one()
        assert row.revoked_at is not None


def test_sessions_store_only_a_hash_of_the_token(
    signed_in: TestClient, maker: sessionmaker[Session]
) -> None:
    token = (signed_in.cookies.get(SESSION_COOKIE) or "").rsplit(".", 1)[0]
    with maker() as s:
        ids = s.scalars(select(ConsoleSession.id)).all()
    assert token and token not in ids and len(ids) == 1 and re.fullmatch(r"[0-9a-f]{64}", ids[0])


def test_sign_in_again_replaces_the_old_session(
    signed_in: TestClient, pharmacist: Account, maker: sessionmaker[Session]
) -> None:
    first = signed_in.cookies.get(SESSION_COOKIE)
    login(signed_in, pharmacist)
    assert signed_in.cookies.get(SESSION_COOKIE) != first
    with maker() as s:
        rows = s.scalars(select(ConsoleSession).order_by(ConsoleSession.created_at)).all()
    assert [r.revoked_at is not None for r in rows] == [True, False]


def test_idle_and_expired_sessions_end(maker: sessionmaker[Session], pharmacist: Account) -> None:
    now = store_users.utcnow()
    with maker.begin() as s:
        uid = s.scalar(select(User.id).where(User.username == pharmacist.username))
        assert uid is not None
        token = store_users.create_session(session=s, user_id=uid, now=now)
        assert store_users.load_session(session=s, token=token, now=now) is not None
        idle = now + store_users.SESSION_IDLE + timedelta(seconds=1)
        assert store_users.load_session(session=s, token=token, now=idle) is None
        # Active all day long still ends at the absolute limit.
        t = now
        while t < now + store_users.SESSION_MAX - timedelta(minutes=30):
            t += timedelta(minutes=30)
            assert store_users.load_session(session=s, token=token, now=t) is not None
        assert (
            store_users.load_session(session=s, token=token, now=now + store_users.SESSION_MAX)
            is None
        )


def test_pharmacists_cannot_open_admin_pages(
    signed_in: TestClient, maker: sessionmaker[Session]
) -> None:
    response = signed_in.get("/review/users")
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert "Administrators only" in response.text
    other = make_user(maker, "victim")
    with maker() as s:
        uid = s.scalar(select(User.id).where(User.username == other.username))
    response = signed_in.post(
        f"/review/users/{uid}/disable", data={"csrf_token": page_token(signed_in)}
    )
    assert response.status_code == 403
    with maker() as s:
        assert not s.scalar(select(User.disabled).where(User.id == uid))


def test_admin_disables_and_enables_an_account(
    client: TestClient, admin: Account, pharmacist: Account, maker: sessionmaker[Session]
) -> None:
    login(client, admin)
    page = client.get("/review/users")
    assert page.status_code == 200 and pharmacist.username in page.text
    with maker() as s:
        uid = s.scalar(select(User.id).where(User.username == pharmacist.username))
        own = s.scalar(select(User.id).where(User.username == admin.username))
    token = csrf_from(page.text)
    assert (
        client.post(f"/review/users/{uid}/disable", data={"csrf_token": token}).status_code == 303
    )
    assert login(TestClient(client.app, follow_redirects=False), pharmacist).status_code == 401  # type: ignore[attr-defined]
    assert client.post(f"/review/users/{uid}/enable", data={"csrf_token": token}).status_code == 303
    response = client.post(f"/review/users/{own}/disable", data={"csrf_token": token})
    assert response.status_code == 400 and "your own account" in response.text
    response = client.post("/review/users/999/disable", data={"csrf_token": token})
    assert response.status_code == 404


def test_console_pages_carry_security_headers(signed_in: TestClient) -> None:
    for path in ("/review/alerts", "/review/rules", "/review/login", "/review/alerts/nope"):
        headers = signed_in.get(path).headers
        assert headers["cache-control"] == "no-store"
        assert headers["x-frame-options"] == "DENY"
        assert "script-src" not in headers["content-security-policy"]  # default-src 'none'
        assert "default-src 'none'" in headers["content-security-policy"]


def test_errors_are_html_pages(signed_in: TestClient) -> None:
    response = signed_in.get("/review/alerts/does-not-exist")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "Alert not found" in response.text


def test_console_is_not_in_the_openapi_contract(console_app: FastAPI) -> None:
    assert not [p for p in console_app.openapi().get("paths", {}) if p.startswith("/review")]
