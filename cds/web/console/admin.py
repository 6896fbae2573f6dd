"""Account administration in the console (admins only): see accounts, disable, enable,
unlock, set a new password; and every user's own "change my password" page.

Creating accounts stays on the command line (``cds users add``). Resetting a forgotten
password is here: the administrator types a temporary password (twice), tells the
pharmacist, who changes it on their own page. A reset ends the account's sessions.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from starlette.datastructures import FormData

from cds.store import users as store_users
from cds.web.console.routing import AdminUser, ConsoleError, ConsoleRoute, CurrentUser, Maker
from cds.web.console.templates import render

router = APIRouter(route_class=ConsoleRoute)

DONE = {
    "disabled": "Account disabled; its sessions ended.",
    "enabled": "Account enabled.",
    "unlocked": "Account unlocked.",
    "password": "Password set; the account's sessions ended. Tell its owner the temporary "
    "password and ask them to change it at once (Account › Change password).",
}


@router.get("/users", name="console_users")
def users(request: Request, user: AdminUser, maker: Maker, done: str | None = None) -> Response:
    return _users_page(request, maker, done=DONE.get(done or ""))


def _users_page(
    request: Request,
    maker: Maker,
    *,
    done: str | None = None,
    error: str | None = None,
    error_for: int | None = None,
    status: int = 200,
) -> Response:
    with maker() as s:
        accounts = store_users.list_users(session=s)
    return render(
        request,
        "users.html",
        status=status,
        accounts=accounts,
        done=done,
        error=error,
        error_for=error_for,
        now=store_users.utcnow(),
        min_length=store_users.MIN_PASSWORD_LENGTH,
        nav="users",
    )


def _back(request: Request, done: str) -> Response:
    url = str(request.url_for("console_users").path)
    return RedirectResponse(f"{url}?done={done}", status_code=303)


def _set(
    request: Request, user: store_users.SessionUser, maker: Maker, user_id: int, disabled: bool
) -> Response:
    if disabled and user_id == user.user_id:
        raise ConsoleError(400, "Not allowed", "You cannot disable your own account.")
    try:
        with maker.begin() as s:
            store_users.set_disabled_by_id(session=s, user_id=user_id, disabled=disabled)
    except store_users.UserError as exc:
        raise ConsoleError(404, "No such account", str(exc)) from exc
    return _back(request, "disabled" if disabled else "enabled")


@router.post("/users/{user_id}/disable", name="console_user_disable")
def disable(request: Request, user_id: int, user: AdminUser, maker: Maker) -> Response:
    return _set(request, user, maker, user_id, True)


@router.post("/users/{user_id}/enable", name="console_user_enable")
def enable(request: Request, user_id: int, user: AdminUser, maker: Maker) -> Response:
    return _set(request, user, maker, user_id, False)


@router.post("/users/{user_id}/unlock", name="console_user_unlock")
def unlock(request: Request, user_id: int, user: AdminUser, maker: Maker) -> Response:
    """Clear a lock after too many failed sign-ins (and the failure count)."""
    try:
        with maker.begin() as s:
            store_users.unlock(session=s, user_id=user_id)
    except store_users.UserError as exc:
        raise ConsoleError(404, "No such account", str(exc)) from exc
    return _back(request, "unlocked")


def _new_password(form: FormData) -> str:
    password = str(form.get("password") or "")[:1024]
    if password != str(form.get("confirm") or "")[:1024]:
        raise store_users.UserError("the two passwords differ")
    return password


@router.post("/users/{user_id}/password", name="console_user_password")
def reset_password(request: Request, user_id: int, user: AdminUser, maker: Maker) -> Response:
    """Set a temporary password (typed twice); also unlocks and ends the sessions."""
    try:
        password = _new_password(request.state.console_form)
        with maker.begin() as s:
            store_users.set_password(session=s, user_id=user_id, password=password)
    except store_users.UserError as exc:
        if str(exc).startswith("no user"):
            raise ConsoleError(404, "No such account", str(exc)) from exc
        return _users_page(request, maker, error=str(exc), error_for=user_id, status=400)
    return _back(request, "password")


@router.get("/account/password", name="console_account")
def account(request: Request, user: CurrentUser, done: str | None = None) -> Response:
    return render(
        request,
        "account.html",
        done="Password changed." if done else None,
        error=None,
        min_length=store_users.MIN_PASSWORD_LENGTH,
        nav="account",
    )


@router.post("/account/password", name="console_account_password")
def change_password(request: Request, user: CurrentUser, maker: Maker) -> Response:
    """Change your own password (the current one first); your other sessions end."""
    form = request.state.console_form
    try:
        password = _new_password(form)
        with maker.begin() as s:
            if not store_users.verify_password(
                session=s, user_id=user.user_id, password=str(form.get("current") or "")[:1024]
            ):
                raise store_users.UserError("the current password is not right")
            store_users.set_password(
                session=s, user_id=user.user_id, password=password, keep_session=user.session_id
            )
    except store_users.UserError as exc:
        return render(
            request,
            "account.html",
            status=400,
            done=None,
            error=str(exc),
            min_length=store_users.MIN_PASSWORD_LENGTH,
            nav="account",
        )
    url = str(request.url_for("console_account").path)
    return RedirectResponse(f"{url}?done=1", status_code=303)
