"""api/ is the integrators' contract: it must match what the app really does."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cds.cards import contract_problems
from cds.evaluate_file import evaluate_request
from tests.conftest import FIXED_NOW, REPO

API = REPO / "api"
sys_path_hint = "regenerate with: .venv/bin/python scripts/gen_api.py"


def test_openapi_document_has_not_drifted() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_api", REPO / "scripts" / "gen_api.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    committed = json.loads((API / "openapi.json").read_text())
    assert gen.openapi() == committed, sys_path_hint


def test_openapi_declares_operation_outcome_errors() -> None:
    doc = json.loads((API / "openapi.json").read_text())
    call = doc["paths"]["/cds-services/{service_id}"]["post"]["responses"]
    for status in ("400", "401", "404", "412", "413", "422", "503"):
        assert status in call
    assert "OperationOutcome" in doc["components"]["schemas"]


def _strip(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _strip(v) for k, v in x.items() if k != "uuid"}
    if isinstance(x, list):
        return [_strip(v) for v in x]
    return x


REQUESTS = sorted(API.glob("examples/*.request.json"))


@pytest.mark.parametrize("path", REQUESTS, ids=[p.name for p in REQUESTS])
def test_api_examples_are_what_the_service_answers(path) -> None:
    [expected] = list(API.glob(f"examples/{path.name.replace('.request.json', '')}.response-*"))
    want_status = int(expected.name.rsplit("-", 1)[1].split(".")[0])
    status, body = evaluate_request(
        json.loads(path.read_text()),
        rules_dir=REPO / "rules",
        pack_ids=["baclofen"],
        profile="US",
        now=FIXED_NOW,
    )
    assert status == want_status
    assert _strip(body) == _strip(json.loads(expected.read_text())), sys_path_hint
    for card in body.get("cards", []):
        assert contract_problems(card) == []


def test_cds_evaluate_cli_runs_every_example(tmp_path) -> None:
    import subprocess
    import sys
    from pathlib import Path

    cds = Path(sys.executable).with_name("cds")
    for src in sorted((REPO / "fhir" / "examples").glob("*.json")):
        out = subprocess.run(
            [str(cds), "evaluate", str(src), "--now", "2026-11-20T12:00:00Z"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
            env={"PATH": "/usr/bin:/bin", "CDS_AUTH": "off"},
        )
        body = json.loads(out.stdout)
        if "prefetch-missing" in src.name:
            assert out.returncode == 1 and body["resourceType"] == "OperationOutcome"
        else:
            assert out.returncode == 0, out.stderr
            assert body["cards"], src.name
