"""One alert: what it shows, that nothing in a card can inject markup, and reviews."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cds.store.audit import FeedbackItem, store_feedback
from cds.store.models import Card, Review
from tests.console.conftest import page_token
from tests.console.seed import add_card


def card_json(maker: sessionmaker[Session], card_id: str) -> dict:  # type: ignore[type-arg]
    with maker() as s:
        card = s.get(Card, card_id)
        assert card is not None
        return dict(card.card_json)


def test_detail_shows_card_rule_facts_call_and_feedback(
    signed_in: TestClient, maker: sessionmaker[Session]
) -> None:
    card_id = add_card(maker, extra_rules=[("baclofen-renal-egfr-30-59", "warning")])
    card = card_json(maker, card_id)
    suggestion = card["suggestions"][0]
    store_feedback(
        maker=maker,
        service_id="medication-safety-order-sign",
        received_at=datetime.now(UTC),
        items=[
            FeedbackItem(
                card_id=card_id,
                outcome="accepted",
                accepted_suggestions=[suggestion["uuid"]],
                override_code=None,
                override_system=None,
                override_display=None,
                override_comment=None,
                outcome_timestamp=datetime.now(UTC),
            )
        ],
    )
    html = signed_in.get(f"/review/alerts/{card_id}").text
    # The card as the prescriber saw it: summary, rendered markdown, suggestion resource.
    assert card["summary"] in html
    assert "<strong>Why</strong>" in html and '<a href="https://bnf.nice.org.uk' in html
    assert suggestion["label"] in html
    assert "MedicationRequest/" in html and "10 mg 3 times a day" in html  # dose and timing
    assert "3 × per 1 d" in html
    assert "Dose advised by specialist" in html  # override reasons offered
    # The rules that fired, the pack version.
    assert "baclofen-renal-egfr-below-30" in html and "baclofen-renal-egfr-30-59" in html
    assert "1.2.0" in html and "Rule IDs" in html
    # Facts as a table, renal measure with its value and date.
    assert "Renal function" in html and "Renal measure › Date" in html
    assert "Weight (kg)" in html and "<td>68</td>" in html
    # The hook call.
    assert "order-sign" in html and "Practitioner/dr-test" in html and "Engine (ms)" in html
    # The prescriber's feedback, naming the accepted suggestion.
    assert re.search(r"Accepted: Change to 30 mg/day", html)


def test_override_feedback_shows_the_reason(
    signed_in: TestClient, maker: sessionmaker[Session]
) -> None:
    card_id = add_card(maker)
    store_feedback(
        maker=maker,
        service_id="medication-safety-order-sign",
        received_at=datetime.now(UTC),
        items=[
            FeedbackItem(
                card_id=card_id,
                outcome="overridden",
                accepted_suggestions=[],
                override_code="specialist-advice",
                override_system="x",
                override_display="Dose advised by specialist",
                override_comment="Neuro team says keep 60 mg",
                outcome_timestamp=datetime.now(UTC),
            )
        ],
    )
    html = signed_in.get(f"/review/alerts/{card_id}").text
    assert "Reason: <strong>Dose advised by specialist</strong>" in html
    assert "Neuro team says keep 60 mg" in html


XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_card_text_cannot_inject_markup(
    signed_in: TestClient, maker: sessionmaker[Session]
) -> None:
    card_id = add_card(
        maker,
        summary=f"Baclofen {XSS}",
        detail=f"Some **bold** {XSS}\n\n[click](javascript:alert(1))\n\n<b>raw html</b>",
        patient="Patient/<script>p</script>",
    )
    for path in (f"/review/alerts/{card_id}", "/review/alerts", "/review/rules"):
        html = signed_in.get(path).text
        assert "<script>" not in html, path
        assert "onerror=alert" not in html.replace("onerror=alert(1)&gt;", ""), path
        assert 'href="javascript:' not in html, path
    html = signed_in.get(f"/review/alerts/{card_id}").text
    assert "&lt;script&gt;" in html and "<strong>bold</strong>" in html
    assert "&lt;b&gt;raw html&lt;/b&gt;" in html


def test_a_review_note_cannot_inject_markup(
    signed_in: TestClient, maker: sessionmaker[Session]
) -> None:
    card_id = add_card(maker)
    signed_in.post(
        f"/review/alerts/{card_id}/review",
        data={"action": "annotate", "note": XSS, "csrf_token": page_token(signed_in)},
    )
    html = signed_in.get(f"/review/alerts/{card_id}").text
    assert "<script>" not in html and "&lt;script&gt;" in html


def review(
    client: TestClient, card_id: str, action: str, note: str = "", to: str = "role:pharmacist"
) -> object:
    return client.post(
        f"/review/alerts/{card_id}/review",
        data={
            "action": action,
            "note": note,
            "csrf_token": page_token(client),
            "escalate_to": to,
        },
    )


def test_review_actions_build_a_history(
    signed_in: TestClient, maker: sessionmaker[Session], pharmacist: object
) -> None:
    card_id = add_card(maker)
    steps = [
        ("acknowledge", "", "acknowledged"),
        ("escalate", "Asked the renal team to review", "escalated"),
        ("annotate", "Renal team called back", "escalated"),
        ("resolve", "Dose reduced to 5 mg tds", "resolved"),
    ]
    for action, note, status in steps:
        response = review(signed_in, card_id, action, note)
        assert response.status_code == 303  # type: ignore[attr-defined]
        assert response.headers["location"] == f"/review/alerts/{card_id}?done={action}"  # type: ignore[attr-defined]
        with maker() as s:
            assert s.get(Card, card_id).review_status == status  # type: ignore[union-attr]
    with maker() as s:
        rows = s.scalars(select(Review).where(Review.card_id == card_id).order_by(Review.id)).all()
        assert [r.action for r in rows] == [a for a, _, _ in steps]  # append-only, all kept
        assert all(r.reviewer_id and r.created_at for r in rows)
    html = signed_in.get(f"/review/alerts/{card_id}?done=resolve").text
    assert "Resolved." in html
    history = html[html.index('class="history"') :]
    words = re.sub(r"<[^>]+>", "", history)
    for label in ("Acknowledged", "Escalated to any pharmacist", "Note added", "Resolved"):
        assert f"{label} by pat.pharm" in words
    assert "Asked the renal team to review" in history
    queue = signed_in.get("/review/alerts?review_status=resolved").text
    assert card_id in queue


@pytest.mark.parametrize("action", ["escalate", "annotate"])
def test_escalate_and_annotate_need_a_note(
    signed_in: TestClient, maker: sessionmaker[Session], action: str
) -> None:
    card_id = add_card(maker)
    response = review(signed_in, card_id, action, "   ")
    assert response.status_code == 400  # type: ignore[attr-defined]
    assert "needs a note" in response.text  # type: ignore[attr-defined]
    with maker() as s:
        assert s.get(Card, card_id).review_status == "unreviewed"  # type: ignore[union-attr]
        assert not s.scalars(select(Review)).all()


def test_unknown_action_and_unknown_card(
    signed_in: TestClient, maker: sessionmaker[Session]
) -> None:
    card_id = add_card(maker)
    assert review(signed_in, card_id, "delete").status_code == 400  # type: ignore[attr-defined]
    response = review(signed_in, "no-such-card", "acknowledge")
    assert response.status_code == 404  # type: ignore[attr-defined]
    assert "Alert not found" in response.text  # type: ignore[attr-defined]
