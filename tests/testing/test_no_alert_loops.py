"""The "no alert loops" property (Conventions of the policy), across every category and both
profiles: accepting any suggestion the service offers leaves no card above info in its
category on that order, and raises no new or worse card.

It cannot pass empty: the generated requests must have exercised accepted suggestions in
every category that has them, and with the production re-check switched off the property
must find a loop (an abrupt-stop taper on dialysis that breaks the renal limit).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import Phase, settings

from cds.hooks import pipeline
from cds.testing import invariants as inv
from cds.testing import strategies as s
from cds.testing.vignettes import load_vignette
from tests.conftest import REPO

NO_LOOPS = next(i for i in inv.INVARIANTS if i.name == "no alert loops")


def suggestion_categories(reg: Any) -> set[str]:
    """The categories in which the pack's rules carry a suggestion."""
    return {r.category for p in reg.packs() for r in p.rules.values() if r.suggestion}


@pytest.mark.parametrize(
    ("pack", "profile"),
    [("baclofen", "US"), ("baclofen", "UK"), ("gabapentin", "US"), ("gabapentin", "UK")],
)
def test_accepting_any_suggestion_leaves_no_alert(pack: str, profile: str) -> None:
    reg = inv.registry_for(REPO / "rules", pack, profile)
    inv.NO_LOOP_EXERCISED.clear()
    result = inv.run_property(
        NO_LOOPS, reg, settings_=settings(s.active_settings(), max_examples=300), profile=profile
    )
    assert result.ok, result.message
    wanted = suggestion_categories(reg)
    assert wanted >= {"dose-ceiling", "titration-rate", "renal-adjustment", "withdrawal-risk"}
    exercised = {c for c, n in inv.NO_LOOP_EXERCISED.items() if n}
    assert exercised >= wanted, (
        f"the generated requests offered no suggestion in {wanted - exercised}"
    )


def test_the_property_finds_a_loop_when_the_recheck_is_off(monkeypatch: Any) -> None:
    """With the re-check (and its repairs) bypassed, the raw taper for an abrupt stop on
    haemodialysis starts at 5 mg TID, above the 5 mg/day dialysis limit: a renal card appears
    once it is accepted, and the property says so."""
    monkeypatch.setattr(pipeline._Planner, "checked", lambda self, sugg, order: (sugg, None))
    vignette = load_vignette(
        REPO / "rules/baclofen/vignettes/a6-stop-on-dialysis-continue-is-renal-adjusted-fires.yaml",
        REPO,
    )
    reg = inv.registry_for(REPO / "rules", "baclofen", "US")
    with pytest.raises(inv.InvariantViolation, match="renal-adjustment critical appears"):
        inv.check_no_alert_loops(vignette.request, reg, vignette.now)
    # and through the runner, as `cds rules test --properties` runs it
    only = settings(s.active_settings(), phases=[Phase.explicit], max_examples=1)
    result = inv.run_property(
        NO_LOOPS, reg, settings_=only, examples=[(vignette.request, {})], now=vignette.now
    )
    assert not result.ok and "no alert loops" in result.message
