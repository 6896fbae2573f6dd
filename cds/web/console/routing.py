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

import functools
import inspect
import logging
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qsl, urlencode

import anyio
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
T = TypeVar("T")


class ConsoleError(Exception):
    """A console request that ends in an HTML error page with ``status``."""

    def __init__(
        self,
        status: int,
        title: str,
        message: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(title)
        self.status, self.title, self.message = status, title, message
        self.headers = headers or {}


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


FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 32  # the largest console form has 5


async def read_form(request: Request) -> FormData:
    """The form of a console POST, within bounds (hardening #7 and #11).

    Only URL-encoded forms (no console form uploads a file: multipart is refused before a
    byte of it is read), at most ``CDS_MAX_CONSOLE_BODY_BYTES`` (declared or streamed),
    ``MAX_FORM_FIELDS`` fields, UTF-8, no NUL. Each failure is a small HTML page with a
    4xx status, never a 500 and never a traceback in the log.
    """
    settings: Any = getattr(request.app.state, "settings", None)
    cap = int(getattr(settings, "max_console_body_bytes", 65_536))
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype != FORM_TYPE:
        raise ConsoleError(
            415,
            "Form not accepted",
            "Console forms are sent URL-encoded; file uploads are not accepted.",
        )
    too_large = ConsoleError(413, "Form too large", f"A console form is at most {cap} bytes.")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > cap):
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise too_large
    try:
        text = bytes(body).decode("utf-8")
        pairs = parse_qsl(
            text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS, errors="strict"
        )
    except (UnicodeDecodeError, ValueError):
        raise ConsoleError(
            400, "Request not understood", "The form could not be read. Reload and try again."
        ) from None
    if any("\x00" in k or "\x00" in v for k, v in pairs):
        raise ConsoleError(400, "Request not understood", "The form holds a NUL character.")
    fields: list[tuple[str, str | Any]] = list(pairs)
    return FormData(fields)


async def _guard(request: Request, is_public: bool) -> Response | None:
    """``None`` to let the handler run, else the response that refuses the request.

    Order matters: who is asking (the session cookie, no body read) comes first, then the
    sign-in rate limit (public form only), and only then is a body read, within bounds.
    """
    user: store_users.SessionUser | None = None
    if not is_public:
        user = await in_console_thread(request, _load_user, request)
        if user is None:
            return _login_redirect(request)
        request.state.console_user = user
    if request.method in SAFE_METHODS:
        return None
    if is_public:
        throttle = getattr(request.app.state, "login_limiter", None)
        if throttle is not None:
            from cds.web.console.throttle import client_key, retry_after

            wait = throttle.check(client_key(request))
            if wait:
                raise too_many_attempts(retry_after(wait))
    form = await read_form(request)
    request.state.console_form = form
    if is_public:
        if not await _login_csrf_ok(request, form):
            problem = security.cookie_problem(request)
            if problem is not None:
                log.warning(
                    "console sign-in over plain HTTP with Secure cookies: the browser "
                    "drops them (set CDS_SECURE_COOKIES=false for development, or HTTPS)"
                )
            raise ConsoleError(
                403,
                "Sign-in form expired",
                problem or "Reload the sign-in page and try again.",
            )
        return None
    assert user is not None  # not public: signed in above
    if not security.tokens_equal(form.get(security.CSRF_FIELD), user.csrf_token):
        raise ConsoleError(
            403,
            "Request refused",
            "The form's security token is missing or out of date. "
            "Go back, reload the page and try again.",
        )
    return None


def too_many_attempts(retry_after: str) -> ConsoleError:
    return ConsoleError(
        429,
        "Too many sign-in attempts",
        f"Sign-in is paused to protect the service. Wait {retry_after} seconds and try again.",
        headers={"Retry-After": retry_after},
    )


def error_page(request: Request, status: int, title: str, message: str) -> Response:
    return render(request, "error.html", status=status, code=status, title=title, message=message)


#: Worker threads the console's blocking handlers may use at once, apart from the ones
#: that verify JWTs and evaluate rules (anyio's default limiter): a busy console page
#: waits for one of these, never for the hook API's.
CONSOLE_THREADS = 2
_current: ContextVar[Request | None] = ContextVar("cds_console_request", default=None)


def console_limiter(request: Request) -> anyio.CapacityLimiter:
    state = request.app.state
    limiter: anyio.CapacityLimiter | None = getattr(state, "console_limiter", None)
    if limiter is None:
        limiter = state.console_limiter = anyio.CapacityLimiter(CONSOLE_THREADS)
    return limiter


async def in_console_thread(request: Request, fn: Callable[..., T], *args: Any) -> T:
    return await anyio.to_thread.run_sync(
        functools.partial(fn, *args), limiter=console_limiter(request)
    )


def _own_threads(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """A blocking handler run on the console's own threads (FastAPI would use the shared
    pool). ``functools.wraps`` keeps the signature FastAPI reads the parameters from."""
    if inspect.iscoroutinefunction(endpoint):
        return endpoint

    @functools.wraps(endpoint)
    async def run(*args: Any, **kwargs: Any) -> Any:
        request = _current.get()
        call = functools.partial(endpoint, *args, **kwargs)
        if request is None:  # not reached through ConsoleRoute: behave as FastAPI would
            return await run_in_threadpool(call)
        return await anyio.to_thread.run_sync(call, limiter=console_limiter(request))

    return run


class ConsoleRoute(APIRoute):
    """``APIRoute`` whose handler runs only after ``_guard`` lets the request through."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, _own_threads(endpoint), **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        is_public = bool(getattr(self.endpoint, "console_public", False))

        async def guarded(request: Request) -> Response:
            _current.set(request)
            try:
                response = await _guard(request, is_public) or await handler(request)
            except ConsoleError as exc:
                response = error_page(request, exc.status, exc.title, exc.message)
                response.headers.update(exc.headers)
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
