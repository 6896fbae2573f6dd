"""The invariants hold for the shipped pack and catch deliberately broken ones.

Each invariant is run the way ``cds rules test --properties`` runs it (``run_property``,
hypothesis profile from ``CDS_HYPOTHESIS_PROFILE``). A broken pack (``broken_packs``) must
fail the invariant its mistake breaks; invariants about the machinery rather than the
pack (determinism, prefetch = fetched, order independence, interactions) are shown to
catch a deliberately broken piece of code, patched in for the test.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import Phase, settings

import cds.clinical.extract as extract_mod
import cds.hooks.prefetch as prefetch_mod
import cds.testing.evaluation as evaluation_mod
from cds.testing import invariants as inv
from cds.testing import strategies as s
from tests.conftest import REPO
from tests.testing.broken_packs import BROKEN_PACKS
from tests.testing.conftest import BACLOFEN
from tests.testing.test_found_bugs import (
    GABAPENTIN_REGRESSIONS,
    REGRESSIONS,
)

BY_NAME = {i.name: i for i in inv.INVARIANTS}
# Detecting is enough here: skip shrinking (exercised by the CLI test and below), and
# allow more examples (a run stops at the first failure, so this costs only on a miss).
DETECT = settings(
    s.active_settings(), phases=[Phase.explicit, Phase.reuse, Phase.generate], max_examples=200
)


PACKS = ("baclofen", "gabapentin")
KNOWN_BUGS = {"baclofen": REGRESSIONS, "gabapentin": GABAPENTIN_REGRESSIONS}


def _real_pack_cases() -> list[Any]:
    """Every invariant on every shipped pack, with the minimal requests of the bugs it
    found as explicit examples (see ``test_found_bugs``). While a bug is open its
    invariant is marked ``xfail(strict=True)`` here: list (pack, name) in ``OPEN_BUGS``."""
    cases = []
    for pack in PACKS:
        for i in inv.INVARIANTS:
            known = [(req, extra) for _, req, extra in KNOWN_BUGS[pack].get(i.name, [])]
            reason = OPEN_BUGS.get((pack, i.name))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            cases.append(pytest.param(pack, i, known, marks=marks, id=f"{pack}-{i.name}"))
    return cases


# (pack, invariant name) -> reason naming the code at fault, while a bug it found is open
# (the first two gabapentin findings are fixed; their requests stay as regressions)
OPEN_BUGS: dict[tuple[str, str], str] = {}  # the gabapentin findings are fixed


@pytest.mark.parametrize(("pack", "invariant", "known"), _real_pack_cases())
def test_the_real_packs_keep_every_invariant(pack: str, invariant: inv.Invariant, known) -> None:
    reg = inv.registry_for(REPO / "rules", pack, "US")
    result = inv.run_property(invariant, reg, examples=known)
    assert result.ok, result.message
    assert result.examples >= s.active_settings().max_examples
    # the requests held the pack's own drug: the run tested the pack, not another drug
    assert result.drug == reg.packs()[0].drug.name
    assert result.with_drug >= result.examples // 4, (result.with_drug, result.examples)


def adult_oral_order_sign(**kw: Any):
    """Requests focused the way a rule author focuses them on an edit: adults, order-sign,
    one oral draft, complete prefetch (the whole space is for ``deep`` runs)."""
    base: dict[str, Any] = dict(
        drug=BACLOFEN,
        hooks=("order-sign",),
        routes=("oral",),
        min_age=18,
        min_drafts=1,
        max_drafts=1,
        max_others=0,
        prefetch_modes=("complete",),
        interacting_classes=(),
    )
    return s.hook_requests(**{**base, **kw})


def established_regimen_in_renal_band() -> Any:
    """55 M 80 kg on the same oral dose for 200 days, renewed; creatinine 1.9-2.6 mg/dL
    (Cockcroft-Gault 36-50 mL/min, the moderate band): the renal rules and nothing else.
    A focused strategy composed from the builders, as a rule author would write one."""
    from datetime import timedelta

    from hypothesis import strategies as st

    from cds.testing import builders as b
    from tests.testing.test_kit import request_for

    now = s.DEFAULT_NOW

    def make(dose: float, freq: int, cr: float) -> dict[str, Any]:
        current = b.medication_request(
            rid="rx-current",
            product="tab10",
            dosages=[b.dosage(dose=dose, frequency=freq)],
            authored=now - timedelta(days=200),
        )
        renewal = b.medication_request(
            rid="rx-renewal",
            status="draft",
            product="tab10",
            prior="rx-current",
            dosages=[b.dosage(dose=dose, frequency=freq)],
        )
        lab = b.creatinine(cr, "mg/dL", now - timedelta(days=1), oid="cr-1")
        return request_for([renewal], medications=[current], labs=[lab])

    return st.builds(
        make,
        dose=st.sampled_from([15.0, 20.0, 12.5, 10.0]),
        freq=st.integers(3, 4),
        cr=st.integers(19, 26).map(lambda x: x / 10),
    )


FOCUS = {
    "renal-suggestion-above-limit": established_regimen_in_renal_band(),
    "ceiling-inverted": adult_oral_order_sign(max_active=0),
    # one scheduled instruction in mg: the orders a dose fix can rewrite
    "start-suggestion-above-start": adult_oral_order_sign(
        max_active=0,
        draft_orders=s.drug_requests(
            drug=BACLOFEN,
            routes=("oral",),
            prn=("no",),
            units=("mg",),
            max_instructions=1,
            allow_taper=False,
        ),
    ),
    "renal-band-gap": adult_oral_order_sign(min_labs=1),
    "creatinine-factor-typo": adult_oral_order_sign(
        min_labs=1, labs=s.creatinines(units=("umol/L",), max_hours_ago=24 * 30)
    ),
}


@pytest.mark.parametrize("name", BROKEN_PACKS)
def test_a_broken_pack_fails_its_invariant(name: str, broken_pack) -> None:
    spec = BROKEN_PACKS[name]
    result = inv.run_property(
        BY_NAME[spec.breaks], broken_pack(name), settings_=DETECT, requests=FOCUS.get(name)
    )
    assert not result.ok, f"{name} ({spec.why}) passed '{spec.breaks}'"
    assert f"[{spec.breaks}]" in result.message, result.message
    assert result.request is not None


def test_a_failure_shrinks_to_a_readable_request(broken_pack) -> None:
    result = inv.run_property(
        BY_NAME["monotonic in dose"],
        broken_pack("ceiling-inverted"),
        requests=FOCUS["ceiling-inverted"],
        shrink_seconds=5,
    )
    assert not result.ok
    request = result.request
    assert request is not None
    drafts = request["context"]["draftOrders"]["entry"]
    assert len(drafts) <= 2
    assert "oral-daily-above-ceiling-us" in result.message
    assert "draft  MedicationRequest/rx-draft-1" in result.message  # the chart, in words


# ---- invariants about the machinery: a broken piece of code, patched in ------------------


def test_determinism_catches_state_leaking_between_calls(real_pack, monkeypatch) -> None:
    real = evaluation_mod.evaluate
    calls = itertools.count()

    def forgetful(inp, packs, *, now, recheck=True):  # every other call loses the labs
        if next(calls) % 2:
            inp = replace(
                inp, resources=[r for r in inp.resources if r.get("resourceType") != "Observation"]
            )
        return real(inp, packs, now=now, recheck=recheck)

    monkeypatch.setattr(evaluation_mod, "evaluate", forgetful)
    result = inv.run_property(BY_NAME["determinism"], real_pack, settings_=DETECT)
    assert not result.ok and "[determinism]" in result.message


def test_order_independence_catches_first_resource_wins(real_pack, monkeypatch) -> None:
    real = extract_mod.index_resources

    def first_observation_only(resources, ctx):
        by_type = real(resources, ctx)
        by_type["Observation"] = by_type["Observation"][:1]
        return by_type

    monkeypatch.setattr(extract_mod, "index_resources", first_observation_only)
    # A chart where the first observation decides: RR 8 two hours ago, RR 16 one hour ago.
    # (A random search alone is flaky here: without an example database it may never
    # generate two observations of one kind; this pins the case it must catch.)
    from datetime import timedelta

    from cds.testing import builders as b
    from tests.testing.test_kit import request_for

    now = s.DEFAULT_NOW
    draft = b.medication_request(
        rid="rx-new", status="draft", product="tab10", dosages=[b.dosage(dose=10, frequency=3)]
    )
    vitals = [
        {**b.vital("resp_rate", 8, now - timedelta(hours=2)), "id": "rr-old"},
        {**b.vital("resp_rate", 16, now - timedelta(hours=1)), "id": "rr-new"},
    ]
    request = request_for([draft], labs=vitals)  # the first Observation bundle of the request
    caught = []
    for seed in range(20):
        try:
            inv.check_order_independence(request, real_pack, now, seed=seed)
        except inv.InvariantViolation as exc:
            caught.append(exc)
            break
    assert caught and "order independence" in str(caught[0])


def test_prefetch_equivalence_catches_a_lossy_fetch(real_pack, monkeypatch) -> None:
    real = prefetch_mod.fetch_all

    async def lossy(**kwargs: Any):
        results = await real(**kwargs)
        for r in results.values():
            del r.resources[-1:]  # the last resource of every fetched key is lost
        return results

    monkeypatch.setattr(prefetch_mod, "fetch_all", lossy)
    result = inv.run_property(BY_NAME["prefetch = fetched"], real_pack, settings_=DETECT)
    assert not result.ok and "[prefetch = fetched]" in result.message


def test_interaction_monotonicity_catches_one_interaction_per_order(real_pack, monkeypatch) -> None:
    real = extract_mod.interaction_facts

    def newest_only(*args: Any, **kwargs: Any):
        pairs = real(*args, **kwargs)
        last = {p.order_id: p for p in pairs}
        return list(last.values())

    monkeypatch.setattr(extract_mod, "interaction_facts", newest_only)
    result = inv.run_property(
        BY_NAME["monotonic in interactions"],
        real_pack,
        settings_=DETECT,
        requests=s.hook_requests(
            drug=BACLOFEN, hooks=("order-sign",), max_others=1, prefetch_modes=("complete",)
        ),
    )
    assert not result.ok and "[monotonic in interactions]" in result.message
