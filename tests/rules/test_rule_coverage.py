"""Every rule of every pack is pinned down by vignettes from both sides.

For every rule id the pack compiles to (``for_each`` rules expanded to ``<id>.<row id>``;
profile-specific rules in their own profile: a vignette sets ``profile: UK`` for the UK
rules), there must be

(a) a vignette where it fires: it is in the ``rules_include`` of an expected card and the
    service did fire it, and
(b) a close vignette where it does not fire (a boundary, an exclusion, another hook...): the
    vignette names it in ``covers`` or ``rules_exclude``, its expectations say it must not
    fire (``rules_exclude``, or no card of the rule's category: ``forbid`` or an exact card
    list without one), and the service did not fire it.

Both are checked on the real responses: every vignette runs once (the run is shared with
``test_vignettes.py``), and only vignettes that pass count; an ``xfail`` vignette (a known
bug) covers nothing until the bug is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from cds.cards import card_extension
from cds.engine.pack import compile_pack
from cds.testing.vignettes import Vignette
from tests.conftest import REPO
from tests.rules.test_vignettes import BY_PACK, PACKS, result_of

PROFILES = ("US", "UK")


@dataclass(frozen=True)
class Run:
    vignette: Vignette
    ok: bool
    fired: frozenset[str]


@pytest.fixture(scope="module", params=PACKS)
def pack(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def categories(pack) -> dict[str, dict[str, str]]:
    """profile -> rule id -> category, as compiled."""
    out = {}
    for profile in PROFILES:
        compiled = compile_pack(REPO / "rules" / pack, profile)
        out[profile] = {rid: rule.category for rid, rule in compiled.rules.items()}
    return out


@pytest.fixture(scope="module")
def vignettes(pack) -> list[Vignette]:
    return BY_PACK[pack]


@pytest.fixture(scope="module")
def runs(vignettes) -> list[Run]:
    out = []
    for v in vignettes:
        result = result_of(v)
        fired: set[str] = set()
        if result.status == 200 and isinstance(result.response, dict):
            for card in result.response.get("cards", []):
                fired.update(card_extension(card).get("ruleIds", []))
        out.append(Run(v, result.ok and not v.xfail, frozenset(fired)))
    return out


def _expected_cards(v: Vignette) -> list[dict]:
    return list(v.expect.get("cards", []))


def expected_to_fire(v: Vignette, rule_id: str) -> bool:
    return any(rule_id in c.get("rules_include", []) for c in _expected_cards(v))


def expected_silent(v: Vignette, rule_id: str, category: str) -> bool:
    """The vignette's expectations say ``rule_id`` must not fire."""
    cards = _expected_cards(v)
    if any(rule_id in c.get("rules_exclude", []) for c in cards):
        return True
    if rule_id not in v.covers:
        return False
    if category in v.expect.get("forbid", []):
        return True
    exact = v.expect.get("exact", True)
    return exact and not any(c.get("category") == category for c in cards)


def _uncovered(
    categories: dict[str, dict[str, str]], runs: list[Run], *, firing: bool
) -> list[str]:
    missing = []
    all_ids = sorted({rid for rules in categories.values() for rid in rules})
    for rid in all_ids:
        profiles = [p for p in PROFILES if rid in categories[p]]
        found = False
        for run in runs:
            v = run.vignette
            if not run.ok or v.profile not in profiles:
                continue
            category = categories[v.profile][rid]
            if firing and expected_to_fire(v, rid) and rid in run.fired:
                found = True
            if not firing and expected_silent(v, rid, category) and rid not in run.fired:
                found = True
            if found:
                break
        if not found:
            missing.append(f"{rid} ({'/'.join(profiles)})")
    return missing


def test_every_rule_fires_in_some_vignette(categories, runs) -> None:
    missing = _uncovered(categories, runs, firing=True)
    assert not missing, (
        f"{len(missing)} rule(s) fire in no passing vignette (as an expected rules_include):\n  "
        + "\n  ".join(missing)
    )


def test_every_rule_is_silent_in_a_close_vignette(categories, runs) -> None:
    missing = _uncovered(categories, runs, firing=False)
    assert not missing, (
        f"{len(missing)} rule(s) have no passing boundary/exclusion vignette (covers or "
        "rules_exclude, expected and observed not to fire):\n  " + "\n  ".join(missing)
    )


def test_covers_name_rules_of_the_vignettes_profile(categories, vignettes) -> None:
    bad = [
        f"{v.id}: {rid} is not a {v.profile} rule"
        for v in vignettes
        for rid in v.covers
        if rid not in categories[v.profile]
    ]
    bad += [
        f"{v.id}: rules_include/rules_exclude {rid} is not a {v.profile} rule"
        for v in vignettes
        for c in _expected_cards(v)
        for rid in [*c.get("rules_include", []), *c.get("rules_exclude", [])]
        if rid not in categories[v.profile]
    ]
    assert not bad, "\n".join(bad)


def test_covered_rules_have_an_expectation(categories, vignettes) -> None:
    """A rule a vignette ``covers`` is either expected to fire or expected to stay silent."""
    vague = []
    for v in vignettes:
        for rid in v.covers:
            category = categories[v.profile].get(rid)
            if category is None:
                continue  # reported by test_covers_name_rules_of_the_vignettes_profile
            if not (expected_to_fire(v, rid) or expected_silent(v, rid, category)):
                vague.append(f"{v.id}: {rid}")
    assert not vague, "covered but neither expected nor excluded:\n  " + "\n  ".join(vague)


def test_new_vignettes_say_what_they_cover(vignettes) -> None:
    """Vignettes beyond part D and the shared examples name the rules they exercise."""
    missing = [
        v.id for v in vignettes if v.part_d is None and not v.id.startswith("ex-") and not v.covers
    ]
    assert not missing, "vignettes without covers: " + ", ".join(missing)
