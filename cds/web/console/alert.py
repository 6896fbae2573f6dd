"""One alert: the card as the prescriber saw it, why it fired, what happened next.

Review actions are append-only (``reviews`` rows) and answered with Post/Redirect/Get,
so reloading the page never records an action twice.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from cds.store import console as store
from cds.store.console import CardDetail
from cds.web.console.present import card_view, fact_sections
from cds.web.console.routing import ConsoleError, ConsoleRoute, CurrentUser, Maker
from cds.web.console.templates import render

router = APIRouter(route_class=ConsoleRoute)

ACTION_LABELS = {
    "acknowledge": "Acknowledged",
    "escalate": "Escalated",
    "resolve": "Resolved",
    "annotate": "Note added",
}


def _feedback_rows(detail: CardDetail, labels: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    for f in detail.feedback:
        accepted = [labels.get(u, u) for u in f.accepted_suggestions or []]
        rows.append(
            {
                "outcome": f.outcome,
                "when": f.outcome_timestamp,
                "accepted": accepted,
                "reason": f.override_display or f.override_code,
                "reason_code": f.override_code,
                "comment": f.override_comment,
            }
        )
    return rows


def _page(
    request: Request,
    detail: CardDetail,
    *,
    status: int = 200,
    error: str | None = None,
    done: str | None = None,
    note: str = "",
) -> Response:
    view = card_view(detail.card.card_json or {})
    labels = {s.uuid: s.label for s in view.suggestions}
    return render(
        request,
        "alert.html",
        status=status,
        card=detail.card,
        view=view,
        invocation=detail.invocation,
        rules=detail.rules,
        facts=fact_sections(detail.card.facts),
        feedback=_feedback_rows(detail, labels),
        reviews=detail.reviews,
        action_labels=ACTION_LABELS,
        error=error,
        done=ACTION_LABELS.get(done or ""),
        note=note,
        nav="queue",
    )


def _load(maker: Maker, card_id: str) -> CardDetail:
    if not card_id.isprintable():  # a NUL is no card id (and PostgreSQL refuses it)
        raise ConsoleError(404, "Alert not found", "No card with this id was issued.")
    with maker() as s:
        detail = store.card_detail(session=s, card_id=card_id[:64])
    if detail is None:
        raise ConsoleError(404, "Alert not found", "No card with this id was issued.")
    return detail


@router.get("/alerts/{card_id}", name="console_alert")
def alert(
    request: Request, card_id: str, user: CurrentUser, maker: Maker, done: str | None = None
) -> Response:
    return _page(request, _load(maker, card_id), done=done)


@router.post("/alerts/{card_id}/review", name="console_review")
def review(request: Request, card_id: str, user: CurrentUser, maker: Maker) -> Response:
    if not card_id.isprintable():
        raise ConsoleError(404, "Alert not found", "No card with this id was issued.")
    form = request.state.console_form
    action = str(form.get("action") or "")
    note = str(form.get("note") or "")
    try:
        with maker.begin() as s:
            found = store.add_review(
                session=s,
                card_id=card_id[:64],
                action=action,
                note=note,
                reviewer_id=user.user_id,
                now=datetime.now(UTC),
            )
    except store.ReviewError as exc:
        return _page(request, _load(maker, card_id), status=400, error=str(exc), note=note)
    if not found:
        raise ConsoleError(404, "Alert not found", "No card with this id was issued.")
    url = str(request.url_for("console_alert", card_id=card_id).path)
    return RedirectResponse(f"{url}?done={action}", status_code=303)
