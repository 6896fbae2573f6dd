"""The strategies generate valid FHIR R4 (fhir.resources R4B) that is clinically plausible,
honour their parameters, and give requests the service accepts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import given, settings
from hypothesis import strategies as st

from cds.clinical.dosing import admins_per_day
from cds.clinical.terminology import get_terminology
from cds.testing import strategies as s
from cds.testing.invariants import run_request
from tests.testing.conftest import BACLOFEN, GABAPENTIN

NOW = s.DEFAULT_NOW
FEW = settings(s.active_settings(), max_examples=30)


def valid(resource: dict[str, Any]) -> None:
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def birth_age(patient: dict[str, Any], now: datetime = NOW) -> int:
    born = datetime.fromisoformat(patient["birthDate"])
    return now.year - born.year - ((now.month, now.day) < (born.month, born.day))


RESOURCE_STRATEGIES = {
    "patients": s.patients(),
    **{
        f"{name}-{d.pack_id}": strategy
        for d in (BACLOFEN, GABAPENTIN)
        for name, strategy in (
            ("drug_requests", s.drug_requests(drug=d)),
            (
                "active_orders",
                s.drug_requests(drug=d, statuses=("active", "stopped"), started_days_ago=(1, 400)),
            ),
            ("interacting_requests", s.interacting_requests(drug=d)),
            ("drug_statements", s.drug_statements(drug=d)),
            ("conditions", s.conditions(drug=d)),
        )
    },
    "intrathecal": s.drug_requests(drug=BACLOFEN, routes=("intrathecal",)),
    "creatinines": s.creatinines(),
    "egfrs": s.egfrs(),
    "crcl_measured": s.crcl_measured(),
    "vitals": s.vitals(),
    "encounters": s.encounters(),
}


@pytest.mark.parametrize("name", RESOURCE_STRATEGIES)
def test_every_resource_strategy_gives_valid_r4(name: str) -> None:
    @FEW
    @given(RESOURCE_STRATEGIES[name])
    def check(resource: dict[str, Any]) -> None:
        valid(resource)

    check()


@FEW
@given(
    st.one_of(
        s.hook_requests(drug=BACLOFEN, damage_required=True),
        s.hook_requests(drug=GABAPENTIN, damage_required=True),
    )
)
def test_every_resource_in_a_request_is_valid_r4(request: dict[str, Any]) -> None:
    resources = s.request_resources(request)
    assert any(r["resourceType"] == "Bundle" for r in resources)
    for r in resources:
        valid(r)


@FEW
@given(s.patient_data(min_age=2, max_age=12, weight=True, sexes=("female",)))
def test_patient_data_honours_age_and_weight(data: dict[str, list[dict[str, Any]]]) -> None:
    age = birth_age(data["patient"][0])
    assert 2 <= age <= 12
    weights = [o for o in data["weight"] if o["code"]["coding"][0]["code"] == "29463-7"]
    assert len(weights) == 1
    kg = weights[0]["valueQuantity"]["value"]
    assert 8 <= kg <= 60, "a child's weight stays plausible for the age"
    for r in [*data["patient"], *data["weight"]]:
        valid(r)


@FEW
@given(s.patient_data(min_age=20, max_age=40, sexes=("female",), pregnancy=True))
def test_pregnancy_gives_a_condition_and_a_gestational_age(data) -> None:
    assert data["conditions"][0]["code"]["coding"][0]["code"] == "77386006"
    assert data["vitals"][0]["code"]["coding"][0]["code"] == "11884-4"


@FEW
@given(s.timings())
def test_every_timing_form_is_read_by_the_normaliser(timing: dict[str, Any]) -> None:
    per_day, problem = admins_per_day(timing, get_terminology())
    assert problem is None and per_day is not None and per_day > 0, timing


@FEW
@given(s.dose_quantities(drug=BACLOFEN, units=("ug", "mcg", "mcg-text"), product="tab10"))
def test_microgram_doses(q: dict[str, Any]) -> None:
    assert q["unit"] in ("ug", "mcg") and q["value"] >= 500


@FEW
@given(s.creatinines(units=("umol/L",)))
def test_creatinine_in_umol_uses_a_umol_loinc(obs: dict[str, Any]) -> None:
    assert obs["code"]["coding"][0]["code"] in ("14682-9", "59826-8")
    assert obs["valueQuantity"]["code"] == "umol/L"
    assert datetime.fromisoformat(obs["effectiveDateTime"].replace("Z", "+00:00")) < NOW


def test_every_egfr_loinc_is_generated() -> None:
    seen: set[str] = set()

    @settings(s.active_settings(), max_examples=200, derandomize=True)
    @given(s.egfrs())
    def collect(obs: dict[str, Any]) -> None:
        seen.add(obs["code"]["coding"][0]["code"])

    collect()
    assert seen == set(s.EGFR_LOINCS)


@FEW
@given(s.tapers(drug=BACLOFEN))
def test_tapers_are_sequenced_with_bounds(steps: list[dict[str, Any]]) -> None:
    assert [d["sequence"] for d in steps] == list(range(1, len(steps) + 1))
    assert all("boundsPeriod" in d["timing"]["repeat"] for d in steps)


@pytest.mark.parametrize("hook", s.HOOKS)
def test_complete_requests_are_accepted_for_every_hook(hook: str, real_pack) -> None:
    @FEW
    @given(s.hook_requests(drug=BACLOFEN, hooks=(hook,), prefetch_modes=("complete",)))
    def check(request: dict[str, Any]) -> None:
        assert request["hook"] == hook
        assert ("draftOrders" in request["context"]) == (hook != "patient-view")
        out = run_request(request, real_pack, NOW)
        assert out.status == 200, out.error

    check()


@FEW
@given(
    st.sampled_from(["partial", "null", "outcome"]).flatmap(
        lambda m: st.tuples(
            st.just(m), s.hook_requests(drug=BACLOFEN, prefetch_modes=(m,), damage_required=True)
        )
    )
)
def test_prefetch_modes(pair: tuple[str, dict[str, Any]]) -> None:
    mode, request = pair
    prefetch = request["prefetch"]
    if mode == "partial":
        assert set(prefetch) < set(s.PREFETCH_KEYS)
    elif mode == "null":
        assert set(prefetch) == set(s.PREFETCH_KEYS)
        assert any(prefetch[k] is None for k in prefetch)
    else:
        assert any(
            isinstance(v, dict) and v.get("resourceType") == "OperationOutcome"
            for v in prefetch.values()
        )


def test_settings_profiles_are_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(s.PROFILE_ENV, raising=False)
    assert s.active_settings().max_examples == settings.get_profile("ci").max_examples
    monkeypatch.setenv(s.PROFILE_ENV, "deep")
    assert s.active_settings().max_examples > settings.get_profile("ci").max_examples


# ---- what is generated comes from the pack under test ------------------------------------


def _collect(strategy: Any, n: int = 300) -> list[Any]:
    seen: list[Any] = []

    @settings(s.active_settings(), max_examples=n, derandomize=True)
    @given(strategy)
    def collect(value: Any) -> None:
        seen.append(value)

    collect()
    return seen


@pytest.mark.parametrize("drug", [BACLOFEN, GABAPENTIN], ids=lambda d: d.pack_id)
def test_every_product_of_the_pack_is_generated(drug) -> None:
    orders = _collect(s.drug_requests(drug=drug), 300)
    if "intrathecal" in drug.routes:
        orders += _collect(s.drug_requests(drug=drug, routes=("intrathecal",)), 50)
    codes = {c["code"] for r in orders for c in r["medicationCodeableConcept"].get("coding", [])}
    assert {p.concept.code for p in drug.products} <= codes
    # and nothing but the pack's own products and ingredient
    assert codes <= {p.concept.code for p in drug.products}


def test_regimen_only_keeps_the_families_whose_doses_count() -> None:
    families = {p.concept.code: p.in_regimen for p in GABAPENTIN.products}
    assert not all(families.values()), "the gabapentin pack has a family apart (enacarbil)"
    requests = _collect(s.drug_requests(drug=GABAPENTIN, regimen_only=True), 200)
    assert all(
        families[c["code"]] for r in requests for c in r["medicationCodeableConcept"]["coding"]
    )


def test_intrathecal_orders_only_for_a_pack_with_that_route() -> None:
    assert "intrathecal" in BACLOFEN.routes and "intrathecal" not in GABAPENTIN.routes
    assert "intrathecal" in s.default_routes(BACLOFEN)
    assert s.default_routes(GABAPENTIN) == ("oral", "oral", "oral")
    routes = {
        c["code"]
        for r in _collect(s.drug_requests(drug=GABAPENTIN), 200)
        for d in r.get("dosageInstruction", [])
        for c in (d.get("route") or {}).get("coding", [])
    }
    assert s.ROUTE_CODES["intrathecal"][1] not in routes


@pytest.mark.parametrize("drug", [BACLOFEN, GABAPENTIN], ids=lambda d: d.pack_id)
def test_every_interacting_class_of_the_pack_is_generated(drug) -> None:
    class_of = {c: name for name, cs in drug.interactions for c in cs}
    seen = {class_of.get(c) for c in _collect(s.interacting_drugs(drug, comedications=False))}
    assert seen == {name for name, _ in drug.interactions}


@pytest.mark.parametrize("drug", [BACLOFEN, GABAPENTIN], ids=lambda d: d.pack_id)
def test_every_condition_flag_of_the_pack_is_generated(drug) -> None:
    concepts = set(_collect(s.problems(drug), 400))
    for flag, cs in drug.conditions:
        assert concepts & set(cs), f"no problem generated for {flag}"


@pytest.mark.parametrize("drug", [BACLOFEN, GABAPENTIN], ids=lambda d: d.pack_id)
def test_doses_follow_the_pack_s_strengths(drug) -> None:
    step = drug.dose_step
    doses = _collect(s.oral_dose_mg(step=step), 100)
    assert min(doses) >= 0.2 * step - 1e-9 and max(doses) <= 24 * step + 1e-9
    assert any(abs(d - 2 * step) < 1e-9 for d in doses)


def test_the_dose_step_is_half_the_smallest_tablet() -> None:
    assert BACLOFEN.dose_step == 2.5  # 5 mg tablets
    assert GABAPENTIN.dose_step == 50  # 100 mg capsules
