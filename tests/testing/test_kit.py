"""The kit's helpers, exports, CLI report and documentation examples."""

from __future__ import annotations

import copy
import importlib
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import cds.testing
import cds.testing.runner as runner_mod
from cds.testing import builders as b
from cds.testing import invariants as inv
from cds.testing import strategies as s
from tests.conftest import REPO
from tests.testing.conftest import BACLOFEN

NOW = s.DEFAULT_NOW


def request_for(drafts: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    """55 M 80 kg, creatinine 0.9 two days ago, the given drafts, complete prefetch."""
    from datetime import timedelta

    return b.hook_request(
        hook=kw.pop("hook", "order-sign"),
        now=NOW,
        patient_res=b.patient(now=NOW, age=55),
        drafts=drafts,
        body=[b.weight(80, NOW - timedelta(days=2))],
        labs=kw.pop("labs", [b.creatinine(0.9, "mg/dL", NOW - timedelta(days=2), oid="cr-1")]),
        hook_instance=s.HOOK_INSTANCE,
        **kw,
    )


def draft(dose: float = 30, unit: str = "mg", **kw: Any) -> dict[str, Any]:
    return b.medication_request(
        rid="rx-new",
        status="draft",
        product="tab10",
        dosages=[b.dosage(dose=dose, unit=unit, frequency=kw.pop("frequency", 3), **kw)],
    )


def test_every_exported_name_resolves() -> None:
    for name in cds.testing.__all__:
        assert getattr(cds.testing, name) is not None, name
    with pytest.raises(AttributeError):
        cds.testing.no_such_thing  # noqa: B018


KIT_MODULES = [
    "cds.testing.strategies",
    "cds.testing.invariants",
    "cds.testing.formulary",
    "cds.testing.evaluation",
    "cds.testing.compare",
    "cds.testing.rewrites",
    "cds.testing.fhirserver",
    "cds.testing.checks",
    "cds.testing.describe",
    "cds.testing.runner",
]


@pytest.mark.parametrize("module", KIT_MODULES)
def test_module_all_is_complete(module: str) -> None:
    mod = importlib.import_module(module)
    for name in mod.__all__:
        assert hasattr(mod, name), name


def test_card_key_ignores_uuids_and_unit_spelling(real_pack) -> None:
    out = inv.run_request(request_for([draft(30)]), real_pack, NOW)
    assert out.status == 200 and out.cards
    card = copy.deepcopy(out.cards[0].card)
    other = copy.deepcopy(card)
    other["uuid"] = "another"
    for sug in other.get("suggestions", []):
        sug["uuid"] = "another"
        for a in sug["actions"]:
            for d in a["resource"]["dosageInstruction"]:
                q = d["doseAndRate"][0]["doseQuantity"]
                q.update(value=q["value"] * 1000, unit="ug", code="ug")
    assert inv.card_key(card) == inv.card_key(other)
    other["indicator"] = "critical"
    assert inv.card_key(card) != inv.card_key(other)


def test_unit_rewrites_change_the_spelling_only() -> None:
    req = request_for([draft(7.5, timing_code="TID", frequency=None)])
    ug = inv.doses_in_micrograms(req, BACLOFEN)
    q = ug["context"]["draftOrders"]["entry"][0]["resource"]["dosageInstruction"][0]
    assert q["doseAndRate"][0]["doseQuantity"]["value"] == 7500
    back = inv.doses_in_micrograms(ug, BACLOFEN)
    assert back["context"]["draftOrders"] == req["context"]["draftOrders"]
    timed = inv.timing_in_other_form(req, BACLOFEN)
    t = timed["context"]["draftOrders"]["entry"][0]["resource"]["dosageInstruction"][0]
    assert t["timing"] == {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d"}}
    cr = inv.creatinine_in_other_unit(req)
    obs = cr["prefetch"]["renal"]["entry"][0]["resource"]
    assert obs["code"]["coding"][0]["code"] == "14682-9"
    assert obs["valueQuantity"]["unit"] == "umol/L"
    assert obs["valueQuantity"]["value"] == pytest.approx(0.9 * 88.4)


def test_lower_renal_function_stays_plausible() -> None:
    req = request_for([draft()])
    worse = inv.lower_renal_function(req, 2)
    assert worse is not None
    assert worse["prefetch"]["renal"]["entry"][0]["resource"]["valueQuantity"]["value"] == 1.8
    assert inv.lower_renal_function(req, 30) is None  # 27 mg/dL: implausible, not "worse"
    assert inv.lower_renal_function(request_for([draft()], labs=[]), 2) is None


def test_prefetch_server_answers_every_prefetch_query(real_pack) -> None:
    req = request_for([draft()])
    server = inv.PrefetchServer(req, NOW, real_pack)
    out = inv.run_request(
        inv.with_server(req, drop=s.PREFETCH_KEYS),
        real_pack,
        NOW,
        client=server.client(),
        allowlist=[inv.FHIR_SERVER],
    )
    assert out.status == 200
    # encounter: the context has none, so its template cannot be rendered
    assert sorted(server.fetched) == sorted(k for k in s.PREFETCH_KEYS if k != "encounter")
    direct = inv.run_request(req, real_pack, NOW)
    assert inv.card_keys(out.cards) == inv.card_keys(direct.cards)


def test_describe_request_reads_like_a_chart() -> None:
    text = inv.describe_request(request_for([draft(30, prn=True, max_per_day=90)]))
    assert "hook order-sign" in text
    assert "draft  MedicationRequest/rx-new [draft] baclofen 10 MG Oral Tablet: 30 mg" in text
    assert "PRN" in text and "max 90 mg/day" in text
    assert "renal  cr-1 2160-0 = 0.9 mg/dL" in text


def test_a_violation_names_the_invariant_and_the_chart() -> None:
    exc = inv.InvariantViolation("unit invariance", "cards differ", request_for([draft()]))
    assert str(exc).startswith("[unit invariance] cards differ\n  hook order-sign")
    assert isinstance(exc, AssertionError)


def test_the_cli_prints_a_table_and_saves_a_failure(
    broken_pack, monkeypatch, tmp_path: Path
) -> None:
    by_name = {i.name: i for i in inv.INVARIANTS}
    monkeypatch.setattr(runner_mod, "INVARIANTS", (by_name["valid cards"], by_name["determinism"]))
    monkeypatch.setattr(runner_mod.tempfile, "gettempdir", lambda: str(tmp_path))
    reg = broken_pack("no-override-reasons")
    monkeypatch.setattr(runner_mod, "pack_profiles", lambda rules_dir, pack_id: ["US"])
    monkeypatch.setattr(runner_mod, "registry_for", lambda rules_dir, pack_id, profile: reg)
    console = Console(record=True, width=200)
    ok = inv.run_properties_cli(REPO / "rules", "baclofen", console)
    out = console.export_text()
    assert not ok
    assert "invariant" in out and "examples" in out and "time" in out and "result" in out
    assert re.search(r"valid cards\s+│\s+US\s+│\s+\d+\s+│\s+[\d.]+ s\s+│\s+FAIL", out), out
    n = s.active_settings().max_examples
    assert re.search(rf"determinism\s+│\s+US\s+│\s+{n}\s+│.*pass", out), out
    assert "warning/critical card without overrideReasons" in out
    saved = tmp_path / "cds-properties" / "baclofen-US-valid-cards.json"
    assert saved.is_file() and f"cds evaluate {saved}" in out


def test_the_cli_passes_on_the_real_pack(monkeypatch) -> None:
    by_name = {i.name: i for i in inv.INVARIANTS}
    monkeypatch.setattr(runner_mod, "INVARIANTS", (by_name["determinism"],))
    console = Console(record=True, width=200)
    assert inv.run_properties_cli(REPO / "rules", "baclofen", console)
    out = console.export_text()
    assert "baclofen: 2 invariant runs, 0 failed" in out
    assert "UK" in out and "US" in out


def _readme_blocks() -> list[str]:
    text = (REPO / "rules" / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_readme_examples_run() -> None:
    blocks = _readme_blocks()
    assert blocks
    for code in blocks:
        namespace: dict[str, Any] = {}
        exec(compile(code, "rules/README.md", "exec"), namespace)  # noqa: S102
        tests = [v for k, v in namespace.items() if k.startswith("test_") and callable(v)]
        assert tests
        for t in tests:
            t()


def test_a_run_without_the_pack_s_drug_fails(gabapentin_pack) -> None:
    """The guard behind every invariant: requests that hold none of the pack's drug (here,
    the other pack's orders) test nothing, so the run fails whatever the check says."""
    from hypothesis import settings

    from tests.testing.conftest import BACLOFEN

    determinism = next(i for i in inv.INVARIANTS if i.name == "determinism")
    result = inv.run_property(
        determinism,
        gabapentin_pack,
        requests=s.hook_requests(drug=BACLOFEN, routes=("oral",)),
        settings_=settings(s.active_settings(), max_examples=20),
    )
    assert not result.ok and result.with_drug == 0
    assert re.search(r"none of the \d+ examples held an order of gabapentin", result.message)
    # the same invariant on the pack's own drug runs
    ok = inv.run_property(
        determinism, gabapentin_pack, settings_=settings(s.active_settings(), max_examples=20)
    )
    assert ok.ok and ok.with_drug > 0, ok.message


def test_the_kit_recognises_each_pack_s_drug_only(real_pack, gabapentin_pack) -> None:
    from tests.testing.conftest import BACLOFEN, GABAPENTIN

    gaba = b.medication_request(rid="g", product="cap300", dosages=[b.dosage(dose=300)])
    bac = b.medication_request(rid="b", product="tab10", dosages=[b.dosage(dose=10)])
    by_name = b.medication_request(rid="n", product="tab10", coded=False)
    assert GABAPENTIN.matches(gaba) and not GABAPENTIN.matches(bac)
    assert BACLOFEN.matches(bac) and BACLOFEN.matches(by_name) and not BACLOFEN.matches(gaba)
    req = request_for([gaba, bac])
    raised = inv.raise_doses(req, 2, GABAPENTIN)
    doses = {
        e["resource"]["id"]: e["resource"]["dosageInstruction"][0]["doseAndRate"][0][
            "doseQuantity"
        ]["value"]
        for e in raised["context"]["draftOrders"]["entry"]
    }
    assert doses == {"g": 600, "b": 10}
