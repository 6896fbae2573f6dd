"""What a patient-view call carries, cut from years of export history by date only."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from cds.batch.chart import MIN_WINDOW_DAYS, patient_view_input, window_days
from cds.batch.evaluate import PackSpec, worker_packs
from cds.testing import builders as b
from tests.conftest import FIXED_NOW, REPO

NOW = FIXED_NOW


def _ids(resources: list[dict[str, Any]]) -> set[str]:
    return {r["id"] for r in resources}


def test_window_is_the_longest_pack_look_back_and_at_least_400_days() -> None:
    packs = worker_packs(PackSpec(str(REPO / "rules"), ("baclofen",), "US"))
    assert window_days(packs) == MIN_WINDOW_DAYS == 400
    longer = packs[0].clinical.model_copy(update={"new_start_lookback_days": 900})
    patched = [type("P", (), {"clinical": longer})()]
    assert window_days(patched) == 900  # type: ignore[arg-type]


def test_old_history_is_cut_and_what_matters_is_kept() -> None:
    days = lambda d: NOW - timedelta(days=d)  # noqa: E731
    patient = b.patient(pid="p1", now=NOW)
    old_stopped = b.medication_request(
        rid="old", pid="p1", status="stopped", authored=days(1500),
        dosages=[b.dosage(dose=20, frequency=4, start=days(1500), end=days(1200))],
    )  # fmt: skip
    recent_stopped = b.medication_request(
        rid="recent", pid="p1", status="stopped", authored=days(100),
        dosages=[b.dosage(dose=10, frequency=3, start=days(100), end=days(20))],
    )  # fmt: skip
    undated = b.medication_request(rid="undated", pid="p1", status="completed")
    active_old = b.medication_request(rid="active", pid="p1", authored=days(2000))
    creat = [
        b.creatinine(1.0, "mg/dL", days(900), oid="cr-900", pid="p1"),
        b.creatinine(1.1, "mg/dL", days(700), oid="cr-700", pid="p1"),
        b.creatinine(1.2, "mg/dL", days(10), oid="cr-10", pid="p1"),
    ]
    old_weight = b.weight(80, days(800), pid="p1")
    old_weight["id"] = "wt-800"
    old_egfr = b.egfr(40, days(600), pid="p1")
    old_egfr["id"] = "egfr-600"
    epilepsy = b.condition("epilepsy", pid="p1", onset=days(5000))
    current = b.encounter("enc-now", klass="IMP", pid="p1")
    current["period"] = {"start": b.iso(days(2))}
    earlier = b.encounter("enc-before", klass="IMP", pid="p1")
    earlier["period"] = {"start": b.iso(days(9))}
    finished = b.encounter("enc-old", klass="AMB", pid="p1")
    finished["status"] = "finished"
    finished["period"] = {"start": b.iso(days(700)), "end": b.iso(days(700))}
    removal = b.procedure("itb-pump-removal", status="preparation", when=days(800), pid="p1")
    dialysis = b.procedure("haemodialysis", when=days(500), pid="p1", rid="hd-old")
    inp = patient_view_input(
        "p1",
        [patient, old_stopped, recent_stopped, undated, active_old, *creat, old_weight,
         old_egfr, epilepsy, current, earlier, finished, removal, dialysis],
        now=NOW,
        window=400,
    )  # fmt: skip
    kept = _ids(inp.resources)
    assert inp.hook == "patient-view" and inp.patient_id == "p1" and inp.draft_orders == []
    assert {"recent", "undated", "active"} <= kept and "old" not in kept
    # results: the window, plus the newest older one of each code (a stale value still
    # drives the renal bands on a hook call)
    assert {"cr-10", "cr-700", "wt-800", "egfr-600"} <= kept and "cr-900" not in kept
    assert "cond-epilepsy" in kept  # a problem list has no "recent"
    assert {"enc-now", "enc-before"} <= kept and "enc-old" not in kept
    assert inp.encounter_id == "enc-now"  # the in-progress encounter with the latest start
    assert "proc-itb-pump-removal" in kept and "hd-old" not in kept
