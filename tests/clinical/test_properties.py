"""Property tests: invariances of dose and renal normalisation, and robustness to junk."""

from __future__ import annotations

import copy
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds.clinical.facts import ClinicalFacts
from tests.clinical.builders import (
    BACLOFEN_IN,
    INTRATHECAL,
    RXNORM,
    born_years_ago,
    condition,
    creatinine,
    dosage,
    facts_for,
    height,
    med_request,
    observation,
    patient,
    qty,
    weight,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

doses = st.floats(min_value=0.5, max_value=200, allow_nan=False).map(lambda x: round(x, 3))
freqs = st.integers(min_value=1, max_value=6)
periods = st.sampled_from([(1, "d"), (12, "h"), (8, "h"), (6, "h"), (4, "h"), (2, "d"), (1, "wk")])


def same_facts(a: ClinicalFacts, b: ClinicalFacts) -> None:
    fa, fb = a.engine_facts(), b.engine_facts()
    assert len(fa) == len(fb)
    for x, y in zip(fa, fb, strict=True):
        assert x.keys() == y.keys(), set(x) ^ set(y)
        for k in x:
            if isinstance(x[k], float) or isinstance(y[k], float):
                assert math.isclose(x[k], y[k], rel_tol=1e-9, abs_tol=1e-12), (k, x[k], y[k])
            else:
                assert x[k] == y[k], k


def one(d: dict[str, Any], resources: list[dict[str, Any]] | None = None) -> ClinicalFacts:
    return facts_for([med_request("d", d)], resources or [weight(70), creatinine(1.0)])


@SETTINGS
@given(dose=doses, freq=freqs, period=periods)
def test_daily_is_dose_times_administrations(dose, freq, period) -> None:
    value, unit = period
    o = one(dosage(dose, freq=freq, period=value, period_unit=unit)).orders[0]
    per_day = {"d": 1, "h": 24, "wk": 1 / 7}[unit] * freq / value
    assert o.admin_per_day is not None and math.isclose(o.admin_per_day, per_day, rel_tol=1e-12)
    assert o.daily is not None and math.isclose(o.daily, dose * per_day, rel_tol=1e-12)
    assert o.single_max == dose


@SETTINGS
@given(dose=doses, freq=freqs, micro=st.sampled_from(["ug", "mcg"]))
def test_mg_and_micrograms_give_the_same_facts(dose, freq, micro) -> None:
    a = one(dosage(dose, "mg", freq=freq))
    b = one(dosage(dose * 1000, micro, freq=freq))
    same_facts(a, b)


@SETTINGS
@given(ug=st.floats(min_value=10, max_value=3000).map(lambda x: round(x, 2)))
def test_intrathecal_rate_in_ug_or_mg_same_facts(ug) -> None:
    def pump(value, unit):
        d = dosage(None, route=INTRATHECAL, freq=None, rate={"rateQuantity": qty(value, unit)})
        return facts_for([med_request("p", d, med=BACLOFEN_IN)])

    same_facts(pump(ug, "ug/d"), pump(ug / 1000, "mg/d"))


@SETTINGS
@given(
    mg_dl=st.floats(min_value=0.3, max_value=12).map(lambda x: round(x, 3)),
    age=st.integers(min_value=18, max_value=95),
    gender=st.sampled_from(["male", "female", None]),
    kg=st.floats(min_value=35, max_value=180).map(lambda x: round(x, 1)),
)
def test_creatinine_mg_dl_and_umol_l_same_facts(mg_dl, age, gender, kg) -> None:
    base = [patient(gender, born_years_ago(age)), weight(kg), height(170)]
    a = facts_for([med_request("d", dosage(10))], [*base, creatinine(mg_dl, "mg/dL")])
    b = facts_for(
        [med_request("d", dosage(10))], [*base, creatinine(mg_dl * 88.4, "umol/L", code="14682-9")]
    )
    same_facts(a, b)
    assert a.patient.renal_value is not None


EQUIVALENT_TIMING = [
    ("QD", 1, 1, "d"),
    ("BID", 2, 1, "d"),
    ("TID", 3, 1, "d"),
    ("QID", 4, 1, "d"),
    ("Q4H", 1, 4, "h"),
    ("Q6H", 1, 6, "h"),
    ("Q8H", 1, 8, "h"),
    ("QOD", 1, 2, "d"),
    ("Q12H", 1, 12, "h"),
]


@SETTINGS
@given(dose=doses, timing=st.sampled_from(EQUIVALENT_TIMING), prn=st.booleans())
def test_timing_code_equals_timing_repeat(dose, timing, prn) -> None:
    code, freq, period, unit = timing
    a = one(dosage(dose, freq=None, code=code, prn=prn))
    b = one(dosage(dose, freq=freq, period=period, period_unit=unit, prn=prn))
    same_facts(a, b)


@SETTINGS
@given(dose=doses, f1=freqs, f2=freqs, prn=st.booleans())
def test_more_frequent_dosing_never_lowers_daily(dose, f1, f2, prn) -> None:
    lo, hi = sorted((f1, f2))
    a = one(dosage(dose, freq=lo, prn=prn)).orders[0]
    b = one(dosage(dose, freq=hi, prn=prn)).orders[0]
    assert b.daily >= a.daily and b.regimen_daily >= a.regimen_daily


@SETTINGS
@given(
    age=st.integers(min_value=1, max_value=95),
    dose=doses,
    with_creatinine=st.booleans(),
    with_height=st.booleans(),
)
def test_missing_data_never_yields_a_number(age, dose, with_creatinine, with_height) -> None:
    res = [patient("female", born_years_ago(age))]
    if with_creatinine:
        res.append(creatinine(1.0))
    if with_height:
        res.append(height(150))
    f = facts_for([med_request("d", dosage(dose))], res)
    p, o = f.patient, f.orders[0]
    assert p.weight_kg is None and o.regimen_daily_per_kg is None
    assert p.renal_kind != "crcl_cockcroft_gault"
    if not with_creatinine:
        assert p.renal_value is None and p.egfr_for_beers is None
        assert p.creatinine_rise_48h_mg_dl is None
    if with_creatinine and age < 18 and not with_height:
        assert p.renal_value is None and p.renal_needed_missing_height
    assert p.resp_rate is None and p.temp_max_24h_c is None


@SETTINGS
@given(dose=doses)
def test_unknown_strength_never_yields_a_dose(dose) -> None:
    med = {"coding": [{"system": RXNORM, "code": "1292"}]}
    o = facts_for([med_request("d", dosage(dose, "mL"), med=med)]).orders[0]
    assert o.daily is None and o.single_max is None and not o.dose_computable


# ---------------------------------------------------------------- junk never raises

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "2026-11-20",
            "2026-02-30",
            "T",
            "mg",
            "ug/d",
            "#m1",
            "Patient/pat-1",
            "MedicationRequest/rx",
            "active",
            "stopped",
            "draft",
            "99999-12-31",
            "2026-11-20T25:00:00Z",
            "-1",
            "1e400",
        ]
    ),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _base_resources() -> list[dict[str, Any]]:
    contained = {
        "resourceType": "Medication",
        "id": "m1",
        "ingredient": [
            {
                "itemCodeableConcept": BACLOFEN_IN,
                "strength": {"numerator": qty(5, "mg"), "denominator": qty(1, "mL")},
            }
        ],
    }
    mr = med_request(
        "rx",
        dosage(20, freq=3),
        dosage(10, freq=None, prn=True),
        status="active",
        authored="2026-05-01",
        contained=[contained],
        dispenseRequest={"validityPeriod": {"end": "2026-11-18"}},
    )
    itb = med_request(
        "itb",
        dosage(None, route=INTRATHECAL, freq=None, rate={"rateQuantity": qty(450, "ug/d")}),
        status="active",
        med=BACLOFEN_IN,
    )
    ms = {
        "resourceType": "MedicationStatement",
        "id": "ms",
        "status": "active",
        "medicationCodeableConcept": {"text": "baclofen 10 mg"},
        "effectivePeriod": {"start": "2026-01-01"},
        "dosage": [dosage(10)],
    }
    enc = {"resourceType": "Encounter", "id": "enc-1", "class": {"code": "IMP"}}
    bp = {
        "resourceType": "Observation",
        "id": "bp",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "effectiveDateTime": "2026-11-20T10:00:00Z",
        "component": [
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": qty(85, "mm[Hg]"),
            }
        ],
    }
    return [
        patient(),
        weight(80),
        height(180),
        creatinine(1.2),
        mr,
        itb,
        ms,
        enc,
        bp,
        observation("rr", "9279-1", 10, "/min"),
        condition("c", "84757009"),
        {"resourceType": "Medication", "id": "m9", "code": BACLOFEN_IN},
    ]


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _set(obj: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    parent = obj
    for p in path[:-1]:
        parent = parent[p]
    parent[path[-1]] = value
    return obj


@st.composite
def mutated(draw: st.DrawFn) -> list[Any]:
    resources = copy.deepcopy(_base_resources())
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        i = draw(st.integers(min_value=0, max_value=len(resources) - 1))
        paths = _paths(resources[i])
        path = draw(st.sampled_from(paths))
        resources[i] = _set(resources[i], path, draw(json_value))
    if draw(st.booleans()):
        resources.append(draw(json_value))
    return resources


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    resources=mutated(),
    hook=st.sampled_from(["order-sign", "order-select", "patient-view"]),
    selections=st.one_of(
        st.none(),
        st.lists(st.one_of(st.text(max_size=5), st.just("MedicationRequest/rx")), max_size=2),
    ),
)
def test_junk_never_raises(resources, hook, selections) -> None:
    drafts = [
        r for r in resources if isinstance(r, dict) and r.get("resourceType") == "MedicationRequest"
    ]
    drafts = [dict(d, status="draft") if isinstance(d, dict) else d for d in drafts[:1]]
    f = facts_for(
        drafts + [None, 3, "x"],
        resources,
        hook=hook,  # type: ignore[list-item]
        selections=selections,
    )
    f.engine_facts()


@settings(max_examples=100, deadline=None)
@given(resources=st.lists(json_value, max_size=5))
def test_random_json_never_raises(resources) -> None:
    facts_for(resources, resources).engine_facts()
