"""Real-world quirks: wrong shapes, missing medication, STU3/R5 spellings, duplicates, junk."""

from __future__ import annotations

from tests.clinical.builders import (
    RXNORM,
    creatinine,
    dosage,
    facts_for,
    med_request,
    weight,
)


def test_category_object_where_array_belongs() -> None:
    d = med_request("d", dosage(20, freq=3), category={"text": "outpatient"})
    obs = weight(80)
    obs["category"] = {"coding": [{"code": "vital-signs"}]}
    f = facts_for([d], [obs])
    o = f.orders[0]
    assert o.daily == 60 and f.patient.weight_kg == 80
    assert o.fhir_valid is False
    issue = next(i for i in f.issues if i.issue == "invalid-resource")
    assert "category" in issue.detail and issue.order_id == "d"


def test_valid_draft_has_no_issue() -> None:
    f = facts_for([med_request("d", dosage(20, freq=3))])
    assert f.orders[0].fhir_valid and f.issues == []


def test_order_select_draft_without_medication() -> None:
    empty = {
        "resourceType": "MedicationRequest",
        "id": "x",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": "Patient/pat-1"},
    }
    f = facts_for(
        [empty, med_request("b", dosage(10, freq=3))],
        hook="order-select",
        selections=["MedicationRequest/x"],
    )
    assert f.orders == [] and f.issues == []


def test_stu3_order_shapes() -> None:
    stu3 = {
        "resourceType": "MedicationRequest",
        "id": "s3",
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "197391"}]},
        "subject": {"reference": "Patient/pat-1"},
        "authoredOn": "2026-11-20",
        "dosageInstruction": [
            {
                "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d"}},
                "asNeededBoolean": False,
                "doseQuantity": {"value": 1, "unit": "TAB"},
            }
        ],
    }
    active = dict(stu3, id="old", status="suspended")
    o = facts_for([stu3], [active]).orders[0]
    assert o.daily == 30 and o.route == "oral" and o.product_kind == "oral"


def test_stu3_condition_and_medication_amount() -> None:
    med = {
        "resourceType": "Medication",
        "id": "m",
        "code": {"text": "baclofen liquid"},
        "ingredient": [
            {
                "itemCodeableConcept": {"text": "baclofen"},
                "amount": {
                    "numerator": {"value": 1, "unit": "mg"},
                    "denominator": {"value": 1, "unit": "mL"},
                },
            }
        ],
    }
    r = med_request("d", dosage(10, "mL", freq=3))
    del r["medicationCodeableConcept"]
    r["medicationReference"] = {"reference": "Medication/m"}
    o = facts_for([r], [med]).orders[0]
    assert o.daily == 30 and o.matched_by_name


def test_wrong_types_are_reported_not_raised() -> None:
    d = med_request("d", dosage(20, freq=3))
    d["dosageInstruction"] = "20 mg three times daily"
    d["authoredOn"] = "yesterday"
    f = facts_for([d])
    o = f.orders[0]
    assert o.dose_computable is False and o.daily is None
    issues = {i.issue for i in f.issues}
    assert {"invalid-field", "invalid-resource"} <= issues
    assert all("20 mg" not in i.detail for i in f.issues)  # no content copied into issues


def test_unusable_observation_becomes_issue() -> None:
    w = weight(80)
    w["valueQuantity"] = {"value": "eighty", "unit": "kg"}
    f = facts_for([med_request("d")], [w, creatinine(1.0)])
    assert f.patient.weight_kg is None
    assert [i.issue for i in f.issues] == ["measure-unreadable"]


def test_duplicates_are_merged() -> None:
    cur = med_request("cur", dosage(20, freq=3), status="active", authored="2026-05-01")
    f = facts_for([med_request("d", dosage(20, freq=3), prior="cur")], [cur, dict(cur)])
    assert f.orders[0].current_daily == 60 and f.orders[0].change == "same"


def test_newer_duplicate_wins() -> None:
    old = med_request(
        "cur",
        dosage(20, freq=3),
        status="active",
        authored="2026-05-01",
        meta={"lastUpdated": "2026-11-01T00:00:00Z"},
    )
    new = dict(old, status="stopped", meta={"lastUpdated": "2026-11-10T00:00:00Z"})
    f = facts_for([med_request("d", dosage(20, freq=3))], [old, new])
    assert f.orders[0].current_daily is None


def test_unflattened_bundle_is_tolerated() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": weight(80)}, {"resource": creatinine(1.0)}, {}],
    }
    f = facts_for([med_request("d")], [bundle])
    assert f.patient.weight_kg == 80 and f.patient.renal_value is not None


def test_junk_in_resources_is_reported() -> None:
    f = facts_for([med_request("d")], [None, 5, "x", {"no": "type"}])  # type: ignore[list-item]
    assert f.orders and {i.issue for i in f.issues} == {"unusable-resource"}


def test_medication_reference_unresolved() -> None:
    r = med_request("d", dosage(10, freq=3))
    del r["medicationCodeableConcept"]
    r["medicationReference"] = {"reference": "Medication/nowhere"}
    f = facts_for([r])
    assert f.orders == [] and [i.issue for i in f.issues] == ["unresolved-medication"]
    r["medicationReference"]["display"] = "Baclofen 10 mg tablet"
    f = facts_for([r])
    assert f.orders[0].matched_by_name and f.orders[0].dose_computable
