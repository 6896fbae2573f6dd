"""Every vignette of every pack, through the same app as ``POST /cds-services/{id}``.

Part D of the clinical policy and the shared examples are vignettes; each must give
exactly the cards it lists, with the suggested dose, timing or taper, and every card must
meet the card contract, and accepting any suggestion it offers must leave no card above info
on the orders it edits ("no alert loops", every vignette a realistic request). A vignette
marked ``xfail: "<reason>"`` documents a known pack or code bug with the correct
expectation: it is ``xfail(strict=True)`` until the bug is fixed.
"""

from __future__ import annotations

import pytest

from cds.engine.registry import PackRegistry
from cds.testing import invariants as inv
from cds.testing.vignettes import Vignette, VignetteResult, load_vignettes, run_vignette
from tests.conftest import REPO

# every pack shipped in rules/ (a pack added to the folder is tested without editing this)
PACKS = sorted(p.parent.name for p in (REPO / "rules").glob("*/pack.yaml"))
BY_PACK = {pack: load_vignettes(REPO / "rules" / pack / "vignettes") for pack in PACKS}
VIGNETTES = [v for pack in PACKS for v in BY_PACK[pack]]
PACK_OF = {id(v): pack for pack in PACKS for v in BY_PACK[pack]}
# the worked examples of each policy's part D (shared/clinical/<drug>.md)
PART_D = {"baclofen": 15, "gabapentin": 21}
_RESULTS: dict[tuple[str, str], VignetteResult] = {}


def result_of(vignette: Vignette) -> VignetteResult:
    """The vignette's run, once per session (tests/rules/test_rule_coverage.py reuses it)."""
    pack = PACK_OF[id(vignette)]
    key = (pack, vignette.id)
    if key not in _RESULTS:
        _RESULTS[key] = run_vignette(vignette, REPO / "rules", pack)
    return _RESULTS[key]


def _param(v: Vignette) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=v.xfail)] if v.xfail else []
    return pytest.param(v, id=f"{PACK_OF[id(v)]}/{v.id}", marks=marks)


@pytest.mark.parametrize("vignette", [_param(v) for v in VIGNETTES])
def test_vignette(vignette) -> None:
    result = result_of(vignette)
    assert result.ok, "\n".join(result.problems)


_REGISTRIES: dict[tuple[tuple[str, ...], str], PackRegistry] = {}


@pytest.mark.parametrize("vignette", [_param(v) for v in VIGNETTES if not v.xfail])
def test_accepting_a_vignettes_suggestions_leaves_no_alert(vignette) -> None:
    packs = tuple(vignette.packs or (PACK_OF[id(vignette)],))
    key = (packs, vignette.profile)
    if key not in _REGISTRIES:
        reg = PackRegistry(rules_dir=REPO / "rules", pack_ids=list(packs), profile=vignette.profile)
        reg.load()
        _REGISTRIES[key] = reg
    inv.check_no_alert_loops(vignette.request, _REGISTRIES[key], vignette.now)


def test_vignette_ids_are_file_names() -> None:
    for pack in PACKS:
        for v in BY_PACK[pack]:
            assert v.id == v.path.stem, v.path.name
        assert len({v.id for v in BY_PACK[pack]}) == len(BY_PACK[pack])


@pytest.mark.parametrize("pack", PACKS)
def test_part_d_is_covered(pack) -> None:
    covered = {v.part_d for v in BY_PACK[pack] if v.part_d}
    assert covered == set(range(1, PART_D[pack] + 1))


def test_every_shared_example_has_a_vignette() -> None:
    examples = {p.name for p in (REPO / "fhir" / "examples").glob("*.json")}
    used = {str(v.request.get("hookInstance")) for v in VIGNETTES}
    import json

    for name in examples:
        body = json.loads((REPO / "fhir" / "examples" / name).read_text())
        assert body["hookInstance"] in used, name
