"""Tapers of a regimen kept as several orders, checked on the resource an EHR would receive.

The vignettes hold the card set and each order's [dose, frequency]; this checks what they
cannot: the unit each dose is counted in (the product given, not the word the prescriber
wrote for another form), the timing kept (a bedtime dose stays at bedtime), and that
accepting the suggestion leaves no card above info on any order it edits.
"""

from __future__ import annotations

from typing import Any

from cds.testing import invariants as inv
from cds.testing.vignettes import load_vignette, run_vignette
from tests.conftest import REPO

SPLIT = "rules/gabapentin/vignettes/x943-a6-split-regimen-stop-both-tablet-to-capsule.yaml"
EPILEPSY = "rules/gabapentin/vignettes/x944-a6-epilepsy-split-regimen-hold-both.yaml"


def _taper_actions(path: str) -> list[dict[str, Any]]:
    vignette = load_vignette(REPO / path, REPO)
    result = run_vignette(vignette, REPO / "rules", "gabapentin")
    assert result.ok, result.problems
    cards = [
        c for c in result.response["cards"] if c["source"]["topic"]["code"] == "withdrawal-risk"
    ]
    assert len(cards) == 2
    actions = cards[0]["suggestions"][0]["actions"]
    assert {a["resource"]["id"] for a in actions} == {
        a["resource"]["id"] for a in cards[1]["suggestions"][0]["actions"]
    }
    return actions


def test_a_tablet_order_tapered_in_capsules_is_counted_in_capsules() -> None:
    by_id = {a["resource"]["id"]: a["resource"] for a in _taper_actions(SPLIT)}
    for rid, when in (("gab-am", "MORN"), ("gab-hs", "HS")):
        res = by_id[rid]
        assert res["medicationCodeableConcept"]["coding"][0]["code"] == "310430"  # 100 mg cap
        for di in res["dosageInstruction"]:
            q = di["doseAndRate"][0]["doseQuantity"]
            assert (q["unit"], q["code"]) == ("{capsule}", "{capsule}")
            assert di["timing"]["repeat"]["when"] == [when]


def test_accepting_the_taper_of_both_orders_leaves_no_alert() -> None:
    for path in (SPLIT, EPILEPSY):
        vignette = load_vignette(REPO / path, REPO)
        reg = inv.registry_for(REPO / "rules", "gabapentin", "US")
        inv.check_no_alert_loops(vignette.request, reg, vignette.now)
        inv.check_suggestions_safe(vignette.request, reg, vignette.now)
