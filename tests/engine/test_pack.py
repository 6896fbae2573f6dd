"""The pack compiler: load-time validation, the condition language against the engine, and
the rule that numbers live in the pack (edit a number, the card changes, no Python)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds.engine import conditions as cond
from cds.engine.pack import FACT_FIELDS, compile_pack, fmt_number
from cds.engine.registry import PackRegistry
from cds.errors import PackError
from tests.conftest import FIXED_NOW, REPO

PACK = REPO / "rules" / "baclofen"


@pytest.fixture(scope="module")
def us_pack():
    return compile_pack(PACK, "US")


def copy_pack(tmp_path: Path) -> Path:
    dest = tmp_path / "rules" / "baclofen"
    shutil.copytree(PACK, dest)
    return dest


def edit_yaml(path: Path, fn) -> None:
    data = yaml.safe_load(path.read_text())
    fn(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_baclofen_compiles_for_both_profiles(us_pack) -> None:
    uk = compile_pack(PACK, "UK")
    assert len(us_pack.rules) > 60 and len(uk.rules) > 60
    assert "oral-daily-above-ceiling-us" in us_pack.rules
    assert "oral-daily-above-ceiling-us" not in uk.rules
    assert "oral-daily-above-ceiling-uk-outpatient" in uk.rules
    categories = {r.category for r in us_pack.rules.values()}
    assert categories == {
        "dose-ceiling",
        "titration-rate",
        "renal-adjustment",
        "withdrawal-risk",
        "side-effect",
        "interaction",
        "data-quality",
    }


def test_every_rule_cites_evidence_and_policy_rules_are_listed(us_pack) -> None:
    for r in us_pack.rules.values():
        assert r.evidence, r.id
        assert all(e in us_pack.evidence for e in r.evidence)
    policy_only = us_pack.rules_resting_on_policy_only()
    assert "renal-value-stale-inpatient" in policy_only
    assert "oral-daily-above-ceiling-us" not in policy_only


def test_renal_band_limits_are_computed_from_the_tables(us_pack) -> None:
    assert us_pack.rules["renal-above-limit.moderate"].vars["limit"] == 40
    assert us_pack.rules["renal-above-limit-new-start.moderate"].vars["limit"] == 7.5
    assert us_pack.rules["renal-above-limit.severe"].vars["limit"] == 15  # min(80/3, 15)
    uk = compile_pack(PACK, "UK")
    assert uk.rules["renal-above-limit.moderate"].vars["limit"] == 50


@pytest.mark.parametrize(
    ("mutate", "message", "where"),
    [
        (
            lambda d: d["rules"][0]["when"].append({"regimen_dialy": {"gt": 1}}),
            "did you mean 'regimen_daily'",
            "rule oral-daily-above-ceiling-us",
        ),
        (
            lambda d: d["rules"][0].update(severity="severe"),
            "severity must be one of",
            "field severity",
        ),
        (
            lambda d: d["rules"][0].update(evidence=["nobody-2020"]),
            "unknown evidence id",
            "field evidence",
        ),
        (
            lambda d: d["rules"][0].update(summary="Dose {daily_dose}"),
            "neither a fact field",
            "field summary",
        ),
        (
            lambda d: d["rules"][0]["when"].append({"regimen_daily": {"gt": "@profile.ceiling"}}),
            "unknown reference",
            "rule oral-daily-above-ceiling-us",
        ),
        (lambda d: d["rules"][0].update(category="dosing"), "Input should be", "field category"),
    ],
)
def test_invalid_pack_names_file_rule_and_field(tmp_path, mutate, message, where) -> None:
    folder = copy_pack(tmp_path)
    edit_yaml(folder / "a3-oral-ceilings.yaml", mutate)
    with pytest.raises(PackError) as info:
        compile_pack(folder, "US")
    text = str(info.value)
    assert message in text
    assert where in text
    assert "a3-oral-ceilings.yaml" in text


def test_broken_yaml_is_a_pack_error(tmp_path) -> None:
    folder = copy_pack(tmp_path)
    (folder / "a4-titration.yaml").write_text("rules: [ {id: x\n")
    with pytest.raises(PackError, match="invalid YAML"):
        compile_pack(folder, "US")


def test_missing_include_is_a_pack_error(tmp_path) -> None:
    folder = copy_pack(tmp_path)
    (folder / "a9-intrathecal.yaml").unlink()
    with pytest.raises(PackError, match="a9-intrathecal.yaml.*file not found|file not found"):
        compile_pack(folder, "US")


def test_fmt_number() -> None:
    assert fmt_number(60.0) == "60"
    assert fmt_number(47.2311) == "47.2"
    assert fmt_number(0.25) == "0.25"
    assert fmt_number(2.5) == "2.5"


# ---- the compiled conditions agree with the reference semantics, through durable_rules ----

ORDER_FIELDS = sorted(FACT_FIELDS["order"] - {"kind", "hook"})
NUMERIC = {
    "regimen_daily": (0, 400),
    "regimen_first_daily": (0, 400),
    "daily": (0, 400000),
    "single_max": (0, 200),
    "single_min": (0, 200),
    "renal_value": (0, 150),
    "age": (0, 100),
    "regimen_daily_per_kg": (0, 5),
    "increase_per_admin": (0, 30),
    "increase_daily": (0, 100),
    "days_on_current": (0, 20),
    "after_to_prior": (0, 1.5),
    "after_daily": (0, 120),
    "prior_daily": (0, 120),
    "egfr_for_beers": (0, 120),
    "resp_rate": (0, 30),
    "spo2": (70, 100),
    "refill_overdue_days": (-5, 5),
    "renal_age_hours": (0, 20000),
    "gcs": (3, 15),
    "rass": (-5, 4),
    "sbp": (60, 180),
}
BOUNDARIES = [
    0.5,
    2.0,
    2.5,
    5.0,
    7.5,
    8.0,
    12.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    80.0,
    90.0,
    94.0,
    120.0,
    1000.0,
    2000.0,
]
BOOLS = [
    "is_draft",
    "new_start",
    "on_dialysis",
    "inpatient",
    "chronic_user",
    "adverse_reason",
    "seizure_history",
    "epilepsy",
    "anticonvulsant",
    "delirium_recent",
]


@st.composite
def order_facts(draw):
    fact = {
        "kind": "order",
        "hook": draw(st.sampled_from(["order-select", "order-sign", "patient-view"])),
        "order_id": "o1",
        "route": draw(st.sampled_from(["oral", "intrathecal"])),
        "status": draw(st.sampled_from(["draft", "active", "stopped"])),
        "change": draw(st.sampled_from(["new", "same", "increase", "decrease", "stop"])),
    }
    for name, (lo, hi) in NUMERIC.items():
        if draw(st.booleans()):
            # values on and around the pack's boundaries matter most
            edges = [v for v in BOUNDARIES if lo <= v <= hi]
            fact[name] = draw(
                st.one_of(
                    st.integers(int(lo), int(hi)).map(float),
                    st.sampled_from(edges),
                    st.floats(lo, hi, allow_nan=False, allow_infinity=False),
                )
            )
    for name in BOOLS:
        if draw(st.booleans()):
            fact[name] = draw(st.booleans())
    return fact


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(facts=st.lists(order_facts(), min_size=1, max_size=3))
def test_engine_matches_reference_semantics(us_pack, facts) -> None:
    for i, f in enumerate(facts):
        f["order_id"] = f"o{i}"
        f["continuing"] = f["status"] != "stopped"
    got = {(f.rule_id, f.order_id) for f in us_pack.findings_for(facts)}
    want = {
        (rid, f["order_id"])
        for rid, r in us_pack.rules.items()
        for f in facts
        if r.fact_kind == "order" and cond.evaluate(r.tree, f)
    }
    assert got == want


def test_condition_negation_treats_missing_as_unknown() -> None:
    r = cond.Resolver({"profile": {}, "tables": {}, "row": {}}, "when")
    fields = frozenset({"x", "flag"})
    tree = cond.negate(cond.parse({"x": {"gt": 5}}, r, fields))
    assert cond.evaluate(tree, {}) is True  # not (unknown > 5)
    assert cond.evaluate(tree, {"x": 6}) is False
    assert cond.evaluate(tree, {"x": 5}) is True
    tree = cond.negate(cond.parse({"flag": True}, r, fields))
    assert cond.evaluate(tree, {"flag": False}) is True
    assert cond.evaluate(tree, {}) is True


# ---- numbers live in the pack ------------------------------------------------------------


def _d3_request():
    from cds.testing.vignettes import load_vignette

    return load_vignette(PACK / "vignettes" / "d03-above-ceiling.yaml", REPO).request


def test_editing_a_pack_number_changes_the_card_without_python(tmp_path) -> None:
    from cds.evaluate_file import evaluate_request

    request = _d3_request()
    status, before = evaluate_request(
        request, rules_dir=REPO / "rules", pack_ids=["baclofen"], profile="US", now=FIXED_NOW
    )
    assert status == 200
    assert [c["source"]["topic"]["code"] for c in before["cards"]] == ["dose-ceiling"]

    folder = copy_pack(tmp_path)

    def raise_ceiling(d):
        d["profiles"]["US"]["oral_daily_ceiling_mg"] = 120
        d["profiles"]["US"]["single_dose_cap_mg"] = 30

    edit_yaml(folder / "pack.yaml", raise_ceiling)
    status, after = evaluate_request(
        request, rules_dir=folder.parent, pack_ids=["baclofen"], profile="US", now=FIXED_NOW
    )
    assert status == 200
    assert after["cards"] == []


def test_reload_keeps_serving_when_the_new_pack_is_broken(tmp_path) -> None:
    folder = copy_pack(tmp_path)
    reg = PackRegistry(rules_dir=folder.parent, pack_ids=["baclofen"], profile="US")
    reg.load()
    before = reg.get("baclofen")
    (folder / "a5-renal.yaml").write_text("rules: [{id: broken}]\n")
    [result] = reg.reload()
    assert not result.ok and "a5-renal.yaml" in (result.error or "")
    assert reg.get("baclofen") is before
    assert "baclofen" in reg.last_errors


def test_reload_swaps_in_a_new_version(tmp_path) -> None:
    folder = copy_pack(tmp_path)
    reg = PackRegistry(rules_dir=folder.parent, pack_ids=["baclofen"], profile="US")
    reg.load()
    edit_yaml(folder / "pack.yaml", lambda d: d.update(version="1.0.1"))
    [result] = reg.reload()
    assert result.ok and result.changed and reg.get("baclofen").version == "1.0.1"


def test_identical_recompile_reuses_the_installed_ruleset(us_pack) -> None:
    again = compile_pack(PACK, "US", us_pack.runtime)
    assert again.ruleset_name == us_pack.ruleset_name
