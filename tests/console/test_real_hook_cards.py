"""Cards produced by real hook calls reach the pharmacist: queue, detail, feedback."""

from __future__ import annotations

import html
import json

from tests.conftest import REPO

SIGN = "/cds-services/medication-safety-order-sign"


def test_cards_from_hook_calls_are_reviewable(signed_in) -> None:
    client = signed_in
    body = json.loads((REPO / "fhir" / "examples" / "order-sign-renal-moderate.json").read_text())
    resp = client.post(SIGN, json=body)
    assert resp.status_code == 200, resp.text
    [card] = resp.json()["cards"]
    queue = html.unescape(client.get("/review/alerts").text)
    assert card["summary"] in queue
    detail = html.unescape(client.get(f"/review/alerts/{card['uuid']}").text)
    assert "renal-above-limit.moderate" in detail
    assert "47.2" in detail  # the Cockcroft-Gault value the card rests on
    assert "Change to 10 mg three times daily" in detail
    fb = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
                "outcomeTimestamp": "2026-11-24T10:00:00Z",
            }
        ]
    }
    assert client.post(f"{SIGN}/feedback", json=fb).status_code == 200
    detail = html.unescape(client.get(f"/review/alerts/{card['uuid']}").text)
    assert "accepted" in detail.lower()
