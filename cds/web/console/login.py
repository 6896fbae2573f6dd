"""Signing in and out of the console.

One message for every failed sign-in (unknown user, wrong password, disabled or locked
account) so the form does not tell an attacker which usernames exist; the lockout policy
is stated on the form instead. A new session token is issued at every sign-in and any
session the browser already had is revoked (no session fixation).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from cds.store import users as store_users
from cds.web.console import security
from cds.web.console.routing import (
    ConsoleRoute,
    CurrentUser,
    Maker,
    maker_of,
    public,
    too_many_attempts,
)
from cds.web.console.templates import render
from cds.web.console.throttle import Busy, HashExecutor

router = APIRouter(route_class=ConsoleRoute)

FAILED = (
    "Sign-in failed. Check your username and password. "
    f"After {store_users.MAX_FAILURES} failed attempts an account is locked for "
    f"{int(store_users.LOCK_DURATION.total_seconds() // 60)} minutes."
)


def _safe_next(request: Request, target: str | None) -> str:
    """Only console paths on this site: no open redirect through ``next``."""
    home = str(request.url_for("console_queue").path)
    if not target:
        return home
    parts = urlsplit(target)
    base = security.cookie_path(request)
    if (
        parts.scheme
        or parts.netloc
        or not target.startswith(base)
        or "\\" in target
        or target.startswith("//")
    ):
        return home
    return target


def _login_form(
    request: Request,
    *,
    status: int = 200,
    error: str | None = None,
    username: str = "",
    next_path: str | None = None,
    notice: str | None = None,
) -> Response:
    key = security.session_secret(request)
    nonce = security.new_nonce()
    response = render(
        request,
        "login.html",
        status=status,
        error=error,
        notice=notice,
        username=username,
        next_path=next_path or "",
        login_token=security.login_csrf_token(nonce, key),
        cookie_problem=security.cookie_problem(request),
    )
    security.set_cookie(
        request,
        response,
        security.LOGIN_COOKIE,
        security.sign(nonce, key, "login"),
        max_age=security.LOGIN_COOKIE_MAX_AGE,
    )
    return response


@router.get("/login", name="console_login")
@public
def login_page(
    request: Request, next: str | None = None, signed_out: str | None = None
) -> Response:
    return _login_form(
        request,
        next_path=_safe_next(request, next) if next else None,
        notice="You are signed out." if signed_out else None,
    )


@router.post("/login", name="console_login_submit")
@public
async def login_submit(request: Request, maker: Maker) -> Response:
    """Sign in. Async on purpose: the whole attempt (its database reads and writes and the
    argon2 hash) runs on the console's own bounded hashing pool, never on the worker
    threads that verify JWTs and evaluate rules (see ``throttle``)."""
    form = request.state.console_form
    username = str(form.get("username") or "")[:128]
    password = str(form.get("password") or "")[:1024]
    next_path = _safe_next(request, str(form.get("next") or "") or None)
    if not username or not password:
        return _login_form(
            request, status=401, error=FAILED, username=username, next_path=next_path
        )
    key = security.session_secret(request)
    previous = security.unsign(request.cookies.get(security.SESSION_COOKIE), key, "session")

    def attempt() -> str | None:
        result = store_users.authenticate(maker=maker, username=username, password=password)
        if result.outcome != "ok" or result.user_id is None:
            return None
        with maker.begin() as s:
            if previous:
                old = store_users.load_session(session=s, token=previous)
                if old is not None:
                    store_users.revoke_session(session=s, session_id=old.session_id)
            return store_users.create_session(session=s, user_id=result.user_id)

    hasher: HashExecutor | None = getattr(request.app.state, "hash_executor", None)
    try:
        token = await hasher.run(attempt) if hasher is not None else attempt()
    except Busy:
        raise too_many_attempts("2") from None
    if token is None:
        return _login_form(
            request, status=401, error=FAILED, username=username, next_path=next_path
        )
    response = RedirectResponse(next_path, status_code=303)
    security.set_cookie(
        request, response, security.SESSION_COOKIE, security.sign(token, key, "session")
    )
    security.clear_cookie(request, response, security.LOGIN_COOKIE)
    return response


@router.post("/logout", name="console_logout")
def logout(request: Request, user: CurrentUser) -> Response:
    with maker_of(request).begin() as s:
        store_users.revoke_session(session=s, session_id=user.session_id)
    url = str(request.url_for("console_login").path) + "?signed_out=1"
    response = RedirectResponse(url, status_code=303)
    security.clear_cookie(request, response, security.SESSION_COOKIE)
    return response
