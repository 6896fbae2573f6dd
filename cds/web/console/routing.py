"""The console's route class: sign-in, CSRF and error pages enforced for every route.

Why a route class rather than a dependency per handler: protection that each handler must
remember is protection some handler will forget. ``ConsoleRoute`` wraps every route of
the console router, so a new page is refused to anonymous users, and a new form is
refused without its CSRF token, without the author doing anything. Only handlers marked
``@public`` (the sign-in page) skip the session check, and even they get CSRF.

Errors raised as ``ConsoleError`` (and FastAPI validation errors) become small HTML pages
here, because the app's own handlers answer with OperationOutcome JSON meant for EHRs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session, sessionmaker
from starlette.datastructures import FormData

from cds.store import users as store_users
from cds.web.console import security
from cds.web.console.templates import render

log = logging.getLogger("cds.console")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Every console response: no caching of patient data, no framing, no inline script.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}

F = TypeVar("F", bound=Callable[..., Any])


class ConsoleError(Exception):
    """A console request that ends in an HTML error page with ``status``."""

    def __init__(self, status: int, title: str, message: str = "") -> None:
        super().__init__(title)
        self.status, self.title, self.message = status, title, message


def public(func: F) -> F:
    """Mark a handler as reachable without a session (the sign-in page only)."""
    func.console_public = True  # type: ignore[attr-defined]
    return func


def maker_of(request: Request) -> sessionmaker[Session]:
    maker: sessionmaker[Session] = request.app.state.maker
    return maker


def _load_user(request: Request) -> store_users.SessionUser | None:
    token = security.unsign(
        request.cookies.get(security.SESSION_COOKIE), security.session_secret(request), "session"
    )
    if token is None:
        return None
    with maker_of(request).begin() as s:
        return store_users.load_session(session=s, token=token)


def login_url(request: Request, next_path: str | None = None) -> str:
    url = str(request.url_for("console_login").path)
    return f"{url}?{urlencode({'next': next_path})}" if next_path else url


def _login_redirect(request: Request) -> Response:
    next_path = None
    if request.method in SAFE_METHODS:
        next_path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    response = RedirectResponse(login_url(request, next_path), status_code=303)
    if security.SESSION_COOKIE in request.cookies:
        security.clear_cookie(request, response, security.SESSION_COOKIE)
    return response


async def _login_csrf_ok(request: Request, form: FormData) -> bool:
    key = security.session_secret(request)
    nonce = security.unsign(request.cookies.get(security.LOGIN_COOKIE), key, "login")
    return nonce is not None and security.tokens_equal(
        form.get(security.CSRF_FIELD), security.login_csrf_token(nonce, key)
    )


async def _guard(request: Request, is_public: bool) -> Response | None:
    """``None`` to let the handler run, else the response that refuses the request."""
    form: FormData | None = None
    if request.method not in SAFE_METHODS:
        form = await request.form()
        request.state.console_form = form
    if is_public:
        if form is not None and not await _login_csrf_ok(request, form):
            raise ConsoleError(
                403, "Sign-in form expired", "Reload the sign-in page and try again."
            )
        return None
    user = await run_in_threadpool(_load_user, request)
    if user is None:
        return _login_redirect(request)
    request.state.console_user = user
    if form is not None and not security.tokens_equal(
        form.get(security.CSRF_FIELD), user.csrf_token
    ):
        raise ConsoleError(
            403,
            "Request refused",
            "The form's security token is missing or out of date. "
            "Go back, reload the page and try again.",
        )
    return None


def error_page(request: Request, status: int, title: str, message: str) -> Response:
    return render(request, "error.html", status=status, code=status, title=title, message=message)


class ConsoleRoute(APIRoute):
    """``APIRoute`` whose handler runs only after ``_guard`` lets the request through."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        is_public = bool(getattr(self.endpoint, "console_public", False))

        async def guarded(request: Request) -> Response:
            try:
                response = await _guard(request, is_public) or await handler(request)
            except ConsoleError as exc:
                response = error_page(request, exc.status, exc.title, exc.message)
            except RequestValidationError:
                response = error_page(
                    request,
                    400,
                    "Request not understood",
                    "Check the address or the form and try again.",
                )
            except Exception:
                # Logged here (with the path, never the form: it may hold a password),
                # then a plain HTML page rather than the EHR-facing OperationOutcome.
                log.exception("console error on %s %s", request.method, request.url.path)
                response = error_page(
                    request,
                    500,
                    "Something went wrong",
                    "The error was logged. Try again, or tell the "
                    "service's administrators if it keeps happening.",
                )
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return guarded


# The dependencies below never block, so they are ``async`` (no threadpool hop).
async def _current_user(request: Request) -> store_users.SessionUser:
    user: store_users.SessionUser = request.state.console_user
    return user


async def _admin_user(
    user: Annotated[store_users.SessionUser, Depends(_current_user)],
) -> store_users.SessionUser:
    if user.role != "admin":
        raise ConsoleError(403, "Administrators only", "This page is for console administrators.")
    return user


CurrentUser = Annotated[store_users.SessionUser, Depends(_current_user)]
AdminUser = Annotated[store_users.SessionUser, Depends(_admin_user)]


async def _maker(request: Request) -> sessionmaker[Session]:
    return maker_of(request)


Maker = Annotated[sessionmaker[Session], Depends(_maker)]
