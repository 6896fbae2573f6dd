"""The pharmacists' review console, served at ``/review`` by the main app.

``console_router()`` is what the app includes; ``STATIC_DIR`` is what it mounts at
``/review/static`` (the stylesheet: no script, no fonts, nothing from another origin).
Every route is guarded by ``routing.ConsoleRoute`` (session, CSRF, HTML error pages).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter

from cds.web.console import admin, alert, login, queue, rule_changes, rules
from cds.web.console.routing import ConsoleRoute

STATIC_DIR: Path = Path(__file__).resolve().parent / "static"

__all__ = ["STATIC_DIR", "console_router"]


def console_router() -> APIRouter:
    """A fresh router with every console page under ``/review`` (kept out of OpenAPI)."""
    router = APIRouter(prefix="/review", route_class=ConsoleRoute, include_in_schema=False)
    router.add_api_route("", queue.home, methods=["GET"], name="console_home")
    for module in (login, queue, alert, rules, rule_changes, admin):
        router.include_router(module.router)
    return router
