"""The re-checks' reuse of the resource-only extraction steps changes nothing (issue 14).

Within one evaluation the suggestion re-checks and "as offered" checks reuse the request's
indexing, medication records and observations (``cds.clinical.extract.extraction_memo``).
For generated requests of every kind (and those built to offer suggestions), the cards,
the facts and the data issues must be exactly those of an evaluation that extracts every
trial afresh; and the reuse must really happen (a re-check reads no observation again).
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds.clinical import extract
from cds.engine.pack import compile_pack
from cds.hooks import pipeline
from cds.testing import invariants as inv
from cds.testing import strategies as s
from cds.testing.formulary import pack_drug
from tests.conftest import REPO
from tests.reliability.conftest import typical

NOW = s.DEFAULT_NOW


PACK_SETS = [["baclofen"]] + (
    [["baclofen", "gabapentin"]] if (REPO / "rules" / "gabapentin").is_dir() else []
)


# the drugs the requests are about: each shipped pack's own products (cds.testing.formulary)
_DRUGS = [
    pack_drug(compile_pack(REPO / "rules" / pid, "US"))
    for pid in sorted({p for ps in PACK_SETS for p in ps})
]


@pytest.fixture(scope="module", params=PACK_SETS, ids=lambda p: "+".join(p))
def packs(request: pytest.FixtureRequest) -> Any:
    from cds.engine.registry import PackRegistry

    reg = PackRegistry(rules_dir=REPO / "rules", pack_ids=request.param, profile="US")
    reg.load()
    return reg.packs()


def _comparable(ev: pipeline.Evaluation) -> Any:
    cards = []
    for c in ev.cards:
        card = dict(c.card)
        card.pop("uuid", None)
        card["suggestions"] = [
            {k: v for k, v in sug.items() if k != "uuid"} for sug in card.get("suggestions", [])
        ]
        cards.append(card)
    return cards, repr(ev.facts), [repr(d) for d in ev.issues], ev.dropped_suggestions


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    request=st.sampled_from(_DRUGS).flatmap(
        lambda d: st.one_of(
            s.hook_requests(drug=d, now=NOW), s.suggestion_requests(drug=d, now=NOW)
        )
    )
)
def test_reuse_gives_the_facts_and_cards_of_a_fresh_extraction(
    packs: Any, request: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        inp = inv.hook_input(request, NOW, packs)
    except Exception:  # noqa: BLE001 - a request the service refuses: nothing to compare
        return
    reused = pipeline.evaluate(inp, packs, now=NOW)
    with monkeypatch.context() as m:
        m.setattr(pipeline, "extraction_memo", contextlib.nullcontext)
        fresh = pipeline.evaluate(inp, packs, now=NOW)
    assert _comparable(reused) == _comparable(fresh)


def test_a_recheck_reads_no_observation_again(packs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    inp = inv.hook_input(typical(), NOW, packs)  # a renewal at a higher dose, renal limit
    calls = {"n": 0}
    real = extract.read_observations

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(extract, "read_observations", counting)
    ev = pipeline.evaluate(inp, packs, now=NOW)
    assert any(c.card.get("suggestions") for c in ev.cards), "no suggestion was re-checked"
    assert calls["n"] == len(packs)  # once per pack, however many re-checks ran
    calls["n"] = 0
    monkeypatch.setattr(pipeline, "extraction_memo", contextlib.nullcontext)
    pipeline.evaluate(inp, packs, now=NOW)
    assert calls["n"] > len(packs)  # without the reuse, every re-check reads them again
