"""The wheel carries rules/, fhir/, alembic/ and api/ inside the ``cds`` package: install
it into a fresh venv and run ``cds rules check`` and ``cds serve`` from another folder."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO
from tests.server import ServeProcess


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
    )
    [whl] = list(out.glob("*.whl"))
    return whl


def test_wheel_maps_data_folders_under_cds(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    for folder in (
        "rules/baclofen/pack.yaml",
        "rules/baclofen/terminology/baclofen.json",
        "alembic/env.py",
        "api/openapi.json",
    ):
        assert f"cds/_data/{folder}" in names, folder
    top = {n.split("/")[0] for n in names}
    assert "fhir" not in top and "alembic" not in top and "rules" not in top


@pytest.mark.slow
def test_installed_wheel_runs_from_another_directory(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    check = subprocess.run(
        [str(env_dir / "bin" / "cds"), "rules", "check", "baclofen"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "OK baclofen" in check.stdout
    server = ServeProcess(
        {"CDS_AUTH": "off", "TMPDIR": str(tmp_path), "PATH": f"{env_dir / 'bin'}:/usr/bin:/bin"},
        cwd=elsewhere,
    )
    server.cds = env_dir / "bin" / "cds"  # type: ignore[attr-defined]
    with server:
        r = httpx.get(f"{server.base}/cds-services")
        assert r.status_code == 200 and len(r.json()["services"]) == 3
    assert (elsewhere / "cds.db").exists()  # the SQLite default, migrated by cds serve
