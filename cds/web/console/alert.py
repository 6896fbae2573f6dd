"""One alert: what the rule used, the card as the prescriber saw it, what they did, the
problem's other firings, and the pharmacist's review.

Review actions are append-only (``reviews`` rows) and answered with Post/Redirect/Get,
so reloading the page never records an action twice.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from cds.store import console as store
from cds.store import reviews
from cds.store.console import CardDetail
from cds.web.console.evidence import evidence
from cds.web.console.present import card_view, fact_sections
from cds.web.console.routing import ConsoleError, ConsoleRoute, CurrentUser, Maker
from cds.web.console.templates import render, site_zone

router = APIRouter(route_class=ConsoleRoute)

ACTION_LABELS = {
    "acknowledge": "Acknowledged",
    "escalate": "Escalated",
    "resolve": "Resolved",
    "annotate": "Note added",
}
#: What each action means, said on the page next to its button.
ACTION_MEANINGS = {
    "acknowledge": "Seen: you have read it and are following it up. It stays on the "
    "patient's open problems until resolved.",
    "resolve": "Dealt with: the order was changed, the prescriber agreed with a reason, or "
    "it no longer applies. It leaves the open list.",
    "escalate": "Needs someone else's decision: it goes to the colleague or role you choose "
    "and shows in their “Escalated to me” queue, with your note.",
    "annotate": "Adds your note to the history without changing the status.",
}


def loaded_pack(request: Request, pack_id: str) -> Any | None:
    """The pack as loaded now (``None`` if it is not, or the app has no registry)."""
    registry = getattr(request.app.state, "registry", None)
    try:
        return next((p for p in registry.packs() if p.id == pack_id), None) if registry else None
    except Exception:  # noqa: BLE001 - the page never depends on the registry
        return None


def reason_words(
    card_json: dict[str, Any], pack: Any | None, code: str | None, display: str | None
) -> str | None:
    """An override reason in the words offered to the prescriber: the card's own
    ``overrideReasons``, else the pack's, else what the EHR sent, else the code."""
    if code is None and display is None:
        return None
    for r in card_json.get("overrideReasons") or []:
        if isinstance(r, dict) and code is not None and r.get("code") == code and r.get("display"):
            return str(r["display"])
    for r in (getattr(pack, "override_reasons", None) or {}).values():
        if isinstance(r, dict) and code is not None and r.get("code") == code and r.get("display"):
            return str(r["display"])
    return display or code


def _feedback_rows(
    detail: CardDetail, labels: dict[str, str], pack: Any | None
) -> list[dict[str, Any]]:
    card_json = detail.card.card_json or {}
    rows = []
    for f in detail.feedback:
        accepted = [labels.get(u, u) for u in f.accepted_suggestions or []]
        words = reason_words(card_json, pack, f.override_code, f.override_display)
        rows.append(
            {
                "outcome": f.outcome,
                "when": f.outcome_timestamp,
                "accepted": accepted,
                "reason": words,
                "reason_code": f.override_code if f.override_code != words else None,
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
    maker: Maker | None = None,
) -> Response:
    card = detail.card
    tz = site_zone(request)
    view = card_view(card.card_json or {})
    labels = {s.uuid: s.label for s in view.suggestions}
    pack = loaded_pack(request, card.pack_id)
    used = evidence(
        facts=card.facts,
        category=card.category,
        fired=[(r.rule_id, r.severity, r.sets_severity) for r in detail.rules]
        or [(card.primary_rule, card.indicator, True)],
        pack=pack,
        tz=tz,
    )
    choices: list[reviews.Assignee] = []
    if maker is not None:
        with maker() as s:
            choices = reviews.escalation_choices(session=s)
    return render(
        request,
        "alert.html",
        status=status,
        card=card,
        view=view,
        invocation=detail.invocation,
        rules=detail.rules,
        used=used,
        pack_loaded=pack.version if pack is not None else None,
        facts=fact_sections(card.facts, tz),
        feedback=_feedback_rows(detail, labels, pack),
        reviews=detail.reviews,
        firings=detail.firings,
        open_firings=detail.open_firings,
        users=detail.users,
        choices=choices,
        action_labels=ACTION_LABELS,
        meanings=ACTION_MEANINGS,
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
    return _page(request, _load(maker, card_id), done=done, maker=maker)


@router.post("/alerts/{card_id}/review", name="console_review")
def review(request: Request, card_id: str, user: CurrentUser, maker: Maker) -> Response:
    if not card_id.isprintable():
        raise ConsoleError(404, "Alert not found", "No card with this id was issued.")
    form = request.state.console_form
    action = str(form.get("action") or "")
    note = str(form.get("note") or "")
    try:
        with maker.begin() as s:
            target = (
                reviews.parse_escalation(session=s, value=str(form.get("escalate_to") or ""))
                if action == "escalate" and form.get("escalate_to")
                else None
            )
            found = reviews.add_review(
                session=s,
                card_id=card_id[:64],
                action=action,
                note=note,
                reviewer_id=user.user_id,
                now=datetime.now(UTC),
                escalate_to=target,
                with_repeats=form.get("repeats") == "1",
            )
    except reviews.ReviewError as exc:
        return _page(
            request, _load(maker, card_id), status=400, error=str(exc), note=note, maker=maker
        )
    if not found:
        raise ConsoleError(404, "Alert not found", "No card with this id was issued.")
    url = str(request.url_for("console_alert", card_id=card_id).path)
    return RedirectResponse(f"{url}?done={action}", status_code=303)
