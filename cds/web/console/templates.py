"""Jinja2 rendering for the console: one autoescaping environment, a few filters.

Autoescaping is on for every template and ``StrictUndefined`` turns a typo into an error
in tests rather than a blank on a pharmacist's screen. Anything that reaches a template
as ``Markup`` (rendered markdown, SVG charts) was escaped by the code that built it.
"""

from __future__ import annotations

from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, pass_context, select_autoescape
from jinja2.runtime import Context

from cds.web.console import security
from cds.web.console.present import fmt_day, fmt_dt, fmt_num, humanize

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"

_env = Environment(
    loader=FileSystemLoader(str(TEMPLATE_DIR)),
    autoescape=select_autoescape(["html", "svg"], default_for_string=True, default=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@pass_context
def _dt(ctx: Context, value: Any) -> str:
    """A stored (UTC) time in the site's zone (``CDS_SITE_TIMEZONE``)."""
    return fmt_dt(value, ctx.get("tz"))


@pass_context
def _day(ctx: Context, value: Any) -> str:
    return fmt_day(value, ctx.get("tz"))


@pass_context
def _hm(ctx: Context, value: Any) -> str:
    """``08:13`` in the site's zone."""
    return fmt_dt(value, ctx.get("tz"))[11:16] if value is not None else "–"


def _minutes(value: float | None) -> str:
    """Minutes as a pharmacist reads a delay: ``45 min``, ``3.5 h``, ``2.1 days``."""
    if value is None:
        return "–"
    if value < 90:
        return f"{value:.0f} min"
    if value < 48 * 60:
        return f"{value / 60:.1f} h"
    return f"{value / 1440:.1f} days"


_env.filters["dt"] = _dt
_env.filters["day"] = _day
_env.filters["hm"] = _hm
_env.filters["minutes"] = _minutes
_env.filters["num"] = fmt_num
_env.filters["humanize"] = humanize


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


_env.filters["pct"] = _pct


def site_zone(request: Request) -> tzinfo:
    """``CDS_SITE_TIMEZONE`` (UTC when the app has no settings)."""
    settings = getattr(request.app.state, "settings", None)
    zone = getattr(settings, "site_zone", None)
    return zone if isinstance(zone, tzinfo) else UTC


def render(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    """Render ``template`` with the signed-in user, CSRF token and URL helpers."""
    user = getattr(request.state, "console_user", None)
    root = request.scope.get("root_path", "").rstrip("/")
    settings = getattr(request.app.state, "settings", None)
    tz = site_zone(request)

    def url(name: str, query: dict[str, Any] | None = None, **params: Any) -> str:
        path = str(request.url_for(name, **params).path)
        clean = {k: v for k, v in (query or {}).items() if v not in (None, "")}
        return f"{path}?{urlencode(clean)}" if clean else path

    html = _env.get_template(template).render(
        request=request,
        user=user,
        csrf_field=security.CSRF_FIELD,
        csrf_token=user.csrf_token if user is not None else "",
        url=url,
        static=lambda name: f"{root}/review/static/{name}",
        tz=tz,
        tz_name=getattr(settings, "site_timezone", "UTC"),
        urlencode=lambda q: urlencode({k: v for k, v in q.items() if v not in (None, "")}),
        **context,
    )
    return HTMLResponse(html, status_code=status)
