"""Sweep fixtures: a synthetic export built with the testing kit, migrated stores, the app.

The population (``cds.testing.population``) covers every scenario in its first patients, so
every kind of patient-view rule fires in the small exports used here. Each test gets its
own SQLite store; the export itself is written once per session (it is only read).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cds.batch.run import SweepOptions
from cds.store.db import make_engine, make_sessionmaker, upgrade
from cds.testing.population import SyntheticPatient, generate, write_export
from tests.conftest import FIXED_NOW, REPO

POPULATION = 60


@pytest.fixture(scope="session")
def population() -> list[SyntheticPatient]:
    return list(generate(POPULATION, now=FIXED_NOW, seed=7))


@pytest.fixture(scope="session")
def export_dir(
    tmp_path_factory: pytest.TempPathFactory, population: list[SyntheticPatient]
) -> Path:
    folder = tmp_path_factory.mktemp("export")
    # small files so every type is split over several, as $export does
    write_export(folder, population, lines_per_file=40)
    return folder


def make_maker(url: str) -> sessionmaker[Session]:
    upgrade(url)
    return make_sessionmaker(make_engine(url))


@pytest.fixture
def maker(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    m = make_maker(f"sqlite:///{tmp_path / 'sweep.db'}")
    yield m
    bind = m.kw["bind"]
    bind.dispose()


def options(export: Path, tmp_path: Path, **kw: Any) -> SweepOptions:
    base: dict[str, Any] = {
        "export_dir": export,
        "rules_dir": REPO / "rules",
        "pack_ids": ["baclofen"],
        "profile": "US",
        "as_of": FIXED_NOW,
        "workers": 0,  # in process; the tests that exercise the pool ask for workers=2
        "batch_size": 10,
        "work_dir": tmp_path / "work",
    }
    base.update(kw)
    return SweepOptions(**base)


def patient_view_request(p: SyntheticPatient, now: datetime = FIXED_NOW) -> dict[str, Any]:
    """The CDS Hooks patient-view call an EHR would make for ``p`` (everything prefetched)."""
    from cds.testing import builders as b
    from cds.testing.population import shared_medications

    by_type: dict[str, list[dict[str, Any]]] = {}
    for res in p.resources:
        by_type.setdefault(res["resourceType"], []).append(res)
    meds = by_type.get("MedicationRequest", [])
    referenced = {
        m["medicationReference"]["reference"].split("/")[-1]
        for m in meds
        if "medicationReference" in m
    }
    meds = meds + [m for m in shared_medications().values() if m["id"] in referenced]
    return {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "Practitioner/prac-1", "patientId": p.id},
        "prefetch": {
            "patient": by_type["Patient"][0],
            "medications": b.bundle(meds),
            "medicationStatements": b.bundle(by_type.get("MedicationStatement", [])),
            "renal": b.bundle(by_type.get("Observation", [])),
            "weight": None,
            "vitals": None,
            "conditions": b.bundle(by_type.get("Condition", [])),
            "procedures": None,
            "encounter": None,
        },
    }


def broken_export(base: Path, population: list[SyntheticPatient]) -> tuple[Path, dict[int, str]]:
    """The population plus a file of bad lines at known line numbers."""
    folder = base / "broken"
    write_export(folder, population[:12], lines_per_file=1000)
    good = {
        "resourceType": "Observation",
        "id": "ok-1",
        "subject": {"reference": "Patient/pt000000"},
        "status": "final",
        "code": {"text": "note"},
    }
    lines = {
        1: json.dumps(good),
        2: '{"resourceType": "Observation", "id": "cut-off", "subject": {"refer',
        3: "",
        4: json.dumps({"id": "no-type", "subject": {"reference": "Patient/pt000000"}}),
        5: json.dumps({"resourceType": "Observation", "id": "orphan", "status": "final"}),
        6: json.dumps({"resourceType": "Patient", "gender": "female"}),
        7: '{"resourceType": "Observation", "id": "nan", "subject": {"reference": '
        '"Patient/pt000001"}, "valueQuantity": {"value": NaN}}',
        8: json.dumps({"resourceType": "Claim", "id": "c1"}),
        9: "[1, 2, 3]",
    }
    text = "\n".join(lines[i] for i in sorted(lines)) + "\n"
    (folder / "Extra.ndjson").write_text(text, encoding="utf-8")
    raw = (
        b'{"resourceType":"Observation","id":"latin","subject":{"reference":"Patient/pt000002"},'
        b'"code":{"text":"caf\xe9"}}\n'
    )
    (folder / "Observation.999.ndjson").write_bytes(raw)
    # a Patient that is not valid FHIR R4, and resources of a patient with no Patient line
    (folder / "Patient.999.ndjson").write_text(
        json.dumps({"resourceType": "Patient", "id": "bad-pt", "gender": 42}) + "\n"
    )
    (folder / "Condition.999.ndjson").write_text(
        json.dumps(
            {"resourceType": "Condition", "id": "c9", "subject": {"reference": "Patient/ghost"}}
        )
        + "\n"
    )
    expected = {
        2: "invalid-json",
        4: "no-resource-type",
        5: "no-patient-reference",
        6: "patient-without-id",
        7: "invalid-json",
        9: "not-an-object",
    }
    return folder, expected
