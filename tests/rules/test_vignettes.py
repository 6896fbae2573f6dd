"""Every vignette of every pack, through the same app as ``POST /cds-services/{id}``.

Part D of the clinical policy and the shared examples are vignettes; each must give
exactly the cards it lists, with the suggested dose, timing or taper, and every card must
meet the card contract.
"""

from __future__ import annotations

import pytest

from cds.testing.vignettes import load_vignettes, run_vignette
from tests.conftest import REPO

VIGNETTES = load_vignettes(REPO / "rules" / "baclofen" / "vignettes")


@pytest.mark.parametrize("vignette", VIGNETTES, ids=[v.id for v in VIGNETTES])
def test_vignette(vignette) -> None:
    result = run_vignette(vignette, REPO / "rules", "baclofen")
    assert result.ok, "\n".join(result.problems)


def test_part_d_is_covered() -> None:
    covered = {v.part_d for v in VIGNETTES if v.part_d}
    assert covered == set(range(1, 16))


def test_every_shared_example_has_a_vignette() -> None:
    examples = {p.name for p in (REPO / "fhir" / "examples").glob("*.json")}
    used = {str(v.request.get("hookInstance")) for v in VIGNETTES}
    import json

    for name in examples:
        body = json.loads((REPO / "fhir" / "examples" / name).read_text())
        assert body["hookInstance"] in used, name
