"""A8 interaction facts and the A7 anticonvulsant flag."""

from __future__ import annotations

from tests.clinical.builders import (
    RXNORM,
    condition,
    dosage,
    facts_for,
    med_request,
)


def drug(id_, code=None, text=None, status="active", **kw):
    med = (
        {"coding": [{"system": RXNORM, "code": code, "display": text or code}]}
        if code
        else {"text": text}
    )
    return med_request(id_, dosage(5, freq=2), status=status, med=med, **kw)


def baclofen(id_="bac", status="active"):
    return med_request(id_, dosage(20, freq=3), status=status, authored="2026-05-01")


def classes(f):
    return {(i.order_id, i.drug_class): i for i in f.interactions}


def test_d12_chronic_baclofen_plus_draft_oxycodone() -> None:
    """D12: the chronic order continues after signing: a fact (not a draft) paired with
    the draft opioid."""
    f = facts_for(
        [drug("oxy", "7804", "oxycodone", status="draft")], [baclofen()], hook="order-sign"
    )
    assert [(o.order_id, o.is_draft, o.change) for o in f.orders] == [("bac", False, "same")]
    i = classes(f)[("bac", "opioid")]
    assert i.pair_has_draft and i.drug_names == "oxycodone" and i.other_ids == ["oxy"]


def test_renewal_pairs_with_draft_opioid() -> None:
    f = facts_for(
        [
            drug("oxy", "7804", "oxycodone", status="draft"),
            med_request("renew", dosage(20, freq=3), prior="bac"),
        ],
        [baclofen()],
    )
    assert [o.order_id for o in f.orders] == ["renew"]  # the renewed order is replaced
    assert classes(f)[("renew", "opioid")].pair_has_draft


def test_established_pair_on_patient_view_has_no_draft() -> None:
    f = facts_for([], [baclofen(), drug("t", "57258", "tizanidine")], hook="patient-view")
    i = classes(f)[("bac", "muscle_relaxant")]
    assert not i.pair_has_draft


def test_classes_by_code_atc_and_name() -> None:
    others = [
        drug("a", "3322", "diazepam"),
        drug("b", text="Pregabalin 75 mg capsule"),
        drug("c", "6375", "levodopa"),
        drug("d", text="amitriptyline 10 mg"),
        med_request(
            "e",
            dosage(5, freq=1),
            status="active",
            med={
                "coding": [
                    {"system": "http://www.whocc.no/atc", "code": "N02AA05", "display": "oxycodone"}
                ]
            },
        ),
    ]
    f = facts_for([med_request("new", dosage(5, freq=3))], others)
    got = {c for (_, c) in classes(f)}
    assert got == {"sedative", "gabapentinoid", "levodopa", "other_cns", "opioid"}
    assert all(i.pair_has_draft for i in f.interactions)


def test_drafts_that_stop_the_other_drug_remove_the_pair() -> None:
    oxy = drug("oxy", "7804", "oxycodone")
    f = facts_for([med_request("new", dosage(5, freq=3)), dict(oxy, status="stopped")], [oxy])
    assert f.interactions == []


def test_stopped_baclofen_pairs_with_nothing() -> None:
    bac = baclofen()
    f = facts_for([dict(bac, status="stopped")], [bac, drug("oxy", "7804", "oxycodone")])
    assert f.orders and f.interactions == []


def test_alcohol_use_disorder_is_sedative_class() -> None:
    f = facts_for([med_request("new", dosage(5, freq=3))], [condition("aud", "66590003")])
    i = classes(f)[("new", "sedative")]
    assert i.drug_names == "alcohol-use disorder" and i.other_ids == ["Condition/aud"]


def test_home_statement_of_other_drug_counts() -> None:
    s = {
        "resourceType": "MedicationStatement",
        "id": "ms",
        "status": "active",
        "subject": {"reference": "Patient/pat-1"},
        "medicationCodeableConcept": {"text": "gabapentin 300 mg capsule"},
    }
    f = facts_for([med_request("new", dosage(5, freq=3))], [s])
    assert ("new", "gabapentinoid") in classes(f)


def test_anticonvulsant_flag() -> None:
    f = facts_for([med_request("new", dosage(5, freq=3))], [drug("l", "114477", "levetiracetam")])
    assert f.patient.flags["anticonvulsant"]
    f = facts_for([med_request("new", dosage(5, freq=3))], [drug("g", "25480", "gabapentin")])
    assert not f.patient.flags["anticonvulsant"]
    f = facts_for(
        [med_request("new", dosage(5, freq=3))],
        [drug("l", "114477", "levetiracetam", status="completed")],
    )
    assert not f.patient.flags["anticonvulsant"]
