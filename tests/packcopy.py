"""Helpers for replay and shadow tests: a changed copy of a shipped pack, and hook calls.

``changed_pack`` refuses an edit that does not apply exactly once: a test whose "changed"
pack is the shipped one would pass without testing anything.
"""

from __future__ import annotations

import shutil
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from cds.testing.vignette_spec import parse_vignette_spec
from cds.testing.vignettes import build_request
from tests.conftest import FIXED_NOW, REPO

#: The version a changed copy gets (never the shipped one: the pages group by version).
CANDIDATE_VERSION = "99.0.0"
#: The US oral ceiling line of rules/baclofen/pack.yaml, and the same at 60 mg/day.
US_CEILING_80 = "oral_daily_ceiling_mg: 80        # US labels: maximum 80 mg/day"
US_CEILING_60 = "oral_daily_ceiling_mg: 60        # US labels: maximum 80 mg/day"


def changed_pack(
    base: Path,
    edits: list[tuple[str, str]],
    *,
    file: str = "pack.yaml",
    version: str | None = CANDIDATE_VERSION,
    pack: str = "baclofen",
) -> Path:
    """A copy of ``rules/<pack>`` under ``base`` with ``edits`` applied to ``file``."""
    folder = base / f"{pack}-{uuid.uuid4().hex[:6]}"
    shutil.copytree(REPO / "rules" / pack, folder)
    path = folder / file
    text = path.read_text(encoding="utf-8")
    for old, new in edits:
        assert text.count(old) == 1, f"{old!r} is not in {file} exactly once"
        text = text.replace(old, new)
    path.write_text(text, encoding="utf-8")
    if version is not None:
        main = folder / "pack.yaml"
        yaml_text = main.read_text(encoding="utf-8")
        lines = [ln for ln in yaml_text.splitlines() if ln.startswith("version: ")]
        assert len(lines) == 1
        main.write_text(yaml_text.replace(lines[0], f"version: {version}"), encoding="utf-8")
    return folder


def renewal(
    dose: float,
    frequency: int,
    *,
    product: str = "tab20",
    age: int = 55,
    weight_days_ago: int = 2,
    weight_kg: float = 80,
    now: datetime = FIXED_NOW,
    hook: str = "order-sign",
) -> dict[str, Any]:
    """An order-sign renewing an established oral regimen at ``dose`` x ``frequency``."""
    spec = parse_vignette_spec(
        {
            "id": "replay-test",
            "description": "a renewal",
            "hook": hook,
            "patient": {"age": age, "sex": "male"},
            "weight": {"kg": weight_kg, "days_ago": weight_days_ago},
            "creatinine": [{"value": 0.9, "days_ago": 2}],
            "active": [
                {
                    "id": "rx-current",
                    "product": product,
                    "dose": dose,
                    "frequency": frequency,
                    "start_days_ago": 200,
                }
            ],
            "drafts": [
                {
                    "id": "draft-1",
                    "product": product,
                    "dose": dose,
                    "frequency": frequency,
                    "prior": "rx-current",
                }
            ]
            if hook != "patient-view"
            else [],
            "expect": {"cards": []},
        },
        where="tests/packcopy.py",
    )
    return build_request(spec, now, REPO)
