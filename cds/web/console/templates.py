"""Jinja2 rendering for the console: one autoescaping environment, a few filters.

Autoescaping is on for every template and ``StrictUndefined`` turns a typo into an error
in tests rather than a blank on a pharmacist's screen. Anything that reaches a template
as ``Markup`` (rendered markdown, SVG charts) was escaped by the code that built it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from cds.web.console import security
from cds.web.console.present import fmt_dt, fmt_num, humanize

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"

_env = Environment(
    loader=FileSystemLoader(str(TEMPLATE_DIR)),
    autoescape=select_autoescape(["html", "svg"], default_for_string=True, default=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["dt"] = fmt_dt
_env.filters["num"] = fmt_num
_env.filters["humanize"] = humanize


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


_env.filters["pct"] = _pct


def render(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    """Render ``template`` with the signed-in user, CSRF token and URL helpers."""
    user = getattr(request.state, "console_user", None)
    root = request.scope.get("root_path", "").rstrip("/")

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
        **context,
    )
    return HTMLResponse(html, status_code=status)
