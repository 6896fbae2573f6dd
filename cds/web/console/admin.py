"""Account administration in the console (admins only): see accounts, disable, enable.

Creating accounts stays on the command line (``cds users add``): it needs a password
typed by the person who will use it, not chosen for them on a web page.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from cds.store import users as store_users
from cds.web.console.routing import AdminUser, ConsoleError, ConsoleRoute, Maker
from cds.web.console.templates import render

router = APIRouter(route_class=ConsoleRoute)


@router.get("/users", name="console_users")
def users(request: Request, user: AdminUser, maker: Maker, done: str | None = None) -> Response:
    with maker() as s:
        accounts = store_users.list_users(session=s)
    return render(
        request, "users.html", accounts=accounts, done=done, now=store_users.utcnow(), nav="users"
    )


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
    url = str(request.url_for("console_users").path)
    return RedirectResponse(f"{url}?done={'disabled' if disabled else 'enabled'}", status_code=303)


@router.post("/users/{user_id}/disable", name="console_user_disable")
def disable(request: Request, user_id: int, user: AdminUser, maker: Maker) -> Response:
    return _set(request, user, maker, user_id, True)


@router.post("/users/{user_id}/enable", name="console_user_enable")
def enable(request: Request, user_id: int, user: AdminUser, maker: Maker) -> Response:
    return _set(request, user, maker, user_id, False)
