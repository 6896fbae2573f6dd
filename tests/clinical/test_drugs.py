"""A1 drug identity and route, part C codes, and the fhir/ terminology files."""

from __future__ import annotations

import json

import pytest

from cds.paths import data_dir
from tests.clinical.builders import (
    BACLOFEN_IN,
    INTRATHECAL,
    RXNORM,
    SCT,
    dosage,
    drug,
    facts_for,
    med_request,
)


def order_for(med, *dosages):
    f = facts_for([med_request("d1", *(dosages or (dosage(),)), med=med)])
    return f.orders[0] if f.orders else None


@pytest.mark.parametrize(
    ("system", "code"),
    [
        (RXNORM, "1292"),
        (RXNORM, "430902"),
        (RXNORM, "2593376"),
        ("http://www.whocc.no/atc", "M03BX01"),
        (SCT, "387342009"),
    ],
)
def test_baclofen_by_code(system: str, code: str) -> None:
    o = order_for({"coding": [{"system": system, "code": code}]})
    assert o is not None and not o.matched_by_name


def test_baclofen_by_name_only() -> None:
    o = order_for({"text": "Baclofen 10mg tabs"})
    assert o is not None and o.matched_by_name


@pytest.mark.parametrize("text", ["arbaclofen 10 mg", "R-baclofen", "tizanidine 4 mg"])
def test_not_baclofen(text: str) -> None:
    assert order_for({"text": text}) is None


def test_route_from_product_when_not_written() -> None:
    o = order_for({"coding": [{"system": RXNORM, "code": "197391"}]}, dosage(10, route=None))
    assert o.route == "oral" and o.product_kind == "oral" and not o.route_unknown
    o = order_for(
        {"coding": [{"system": RXNORM, "code": "1047437"}]}, dosage(1, "mL", freq=None, route=None)
    )
    assert o.route == "intrathecal" and o.bolus_ug == 50  # 1 mL of 50 ug/mL


def test_ingredient_only_without_route_is_oral_unknown() -> None:
    o = order_for(BACLOFEN_IN, dosage(10, route=None))
    assert o.route == "oral" and o.route_unknown and o.product_kind == "unknown"


def test_enteral_tube_route_is_oral() -> None:
    peg = {"coding": [{"system": SCT, "code": "127490009"}]}
    o = order_for(BACLOFEN_IN, dosage(10, route=peg))
    assert o.route == "oral" and o.route_given == "oral"


def test_intrathecal_product_by_wrong_route() -> None:
    iv = {"coding": [{"system": SCT, "code": "47625008"}]}
    o = order_for(
        {"coding": [{"system": RXNORM, "code": "1047437"}]}, dosage(50, "ug", freq=None, route=iv)
    )
    assert o.route == "intrathecal" and o.route_given == "iv" and o.product_kind == "intrathecal"


def test_concentration_never_decides_route() -> None:
    """2 mg/mL oral solution with no route stays oral (== 2000 ug/mL intrathecal)."""
    o = order_for({"coding": [{"system": RXNORM, "code": "2667941"}]}, dosage(5, "mL", route=None))
    assert o.route == "oral" and o.daily == 30


def test_intrathecal_route_reads_ug() -> None:
    o = order_for(
        BACLOFEN_IN,
        dosage(
            None,
            route=INTRATHECAL,
            freq=None,
            rate={"rateQuantity": {"value": 0.45, "unit": "mg/d"}},
        ),
    )
    assert o.daily == pytest.approx(450)


def test_every_valueset_is_valid_r4b_and_dated() -> None:
    from fhir.resources.R4B.bundle import Bundle
    from fhir.resources.R4B.codesystem import CodeSystem
    from fhir.resources.R4B.valueset import ValueSet

    root = data_dir("fhir")
    files = sorted((root / "valuesets").glob("*.json"))
    assert len(files) >= 30
    # and every pack's own ValueSets (rules/<pack>/terminology/)
    pack_files = sorted(data_dir("rules").glob("*/terminology/*.json"))
    products = [p for p in pack_files if p.name == "products.json"]
    assert products, "every pack ships its product table"
    files += [p for p in pack_files if p.name != "products.json"]
    for path in files:
        doc = json.loads(path.read_text())
        vs = ValueSet.model_validate(doc)
        assert vs.description and "Inclusion" in vs.description, path.name
        assert vs.expansion is not None and vs.expansion.timestamp is not None, path.name
        assert doc["id"] == path.stem
    for path in sorted((root / "codesystems").glob("*.json")):
        CodeSystem.model_validate(json.loads(path.read_text()))
    for path in products:
        Bundle.model_validate(json.loads(path.read_text()))


def test_product_table_strengths() -> None:
    term = drug().term
    strengths = {
        code: (p.form_kind, p.strength.amount, p.strength.unit, p.strength.per)
        for (_, code), p in term.products.items()
        if p.strength
    }
    assert strengths["430902"] == ("oral", 5, "mg", "tablet")
    assert strengths["2593376"] == ("oral", 5, "mg", "mL")
    assert strengths["1047437"] == ("intrathecal", 50, "ug", "mL")
    assert {v[1] for k, v in strengths.items() if v[3] == "tablet"} == {5, 10, 15, 20}


def test_class_valuesets() -> None:
    term = drug().term
    atc = "http://www.whocc.no/atc"
    assert term.vs("muscle-relaxants").has_code(atc, "M03BX02")
    assert not term.vs("muscle-relaxants").has_code(atc, "M03BX01")
    assert term.vs("gabapentinoids").has_code(atc, "N03AX12")
    assert not term.vs("anticonvulsants").has_code(atc, "N03AX12")
    assert term.vs("anticonvulsants").has_code(atc, "N03AG01")
    assert term.vs("opioids").has_code(RXNORM, "7804")
    assert term.vs("dialysis").has_code("http://hl7.org/fhir/sid/icd-10-cm", "Z49.01")
