"""Deliberately broken copies of ``rules/baclofen``: each breaks one invariant.

A pack fixture is the real pack copied to a temporary folder with one realistic authoring
mistake applied to its YAML, so the kit is shown to catch exactly the kind of edit a rule
author makes. Each edit names the text it replaces and fails loudly if the pack no longer
holds it (the real pack moved on: update the edit, not the test).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO


@dataclass(frozen=True)
class Edit:
    file: str
    pattern: str  # a regular expression; its first match is replaced
    replacement: str


@dataclass(frozen=True)
class BrokenPack:
    name: str
    breaks: str  # the invariant it must fail
    why: str
    edits: tuple[Edit, ...]


BROKEN_PACKS: dict[str, BrokenPack] = {
    p.name: p
    for p in (
        BrokenPack(
            "ceiling-inverted",
            "monotonic in dose",
            "the US ceiling rule compares with lt instead of gt: higher doses lose the card",
            (
                Edit(
                    "a3-oral-ceilings.yaml",
                    r'\{regimen_daily: \{gt: "@profile\.oral_daily_ceiling_mg"\}\}',
                    '{regimen_daily: {lt: "@profile.oral_daily_ceiling_mg"}}',
                ),
            ),
        ),
        BrokenPack(
            "no-override-reasons",
            "valid cards",
            "no default override reasons: warning and critical cards carry none",
            (
                Edit(
                    "pack.yaml",
                    r"default_override_reasons:\n(?:  - .*\n)+",
                    "default_override_reasons: []\n",
                ),
            ),
        ),
        BrokenPack(
            "creatinine-factor-typo",
            "unit invariance",
            "umol/L per mg/dL typed as 8.84: a creatinine in umol/L reads 10x too high",
            (
                Edit(
                    "pack.yaml",
                    r"creatinine_umol_per_mg_dl: 88\.4",
                    "creatinine_umol_per_mg_dl: 8.84",
                ),
            ),
        ),
        BrokenPack(
            "renal-band-gap",
            "monotonic in renal function",
            "the moderate band ends at 40, not 50: CrCl 40-49 falls between bands",
            (
                Edit(
                    "pack.yaml",
                    r"when: \{renal_value: \{gte: 30, lt: 50\}, on_dialysis: false\}",
                    "when: {renal_value: {gte: 30, lt: 40}, on_dialysis: false}",
                ),
            ),
        ),
        BrokenPack(
            "renal-suggestion-above-limit",
            "safe suggestions",
            "the renal fix suggests 90% of the ordered dose, capped only at 120 mg/day "
            "instead of the band limit: accepting it fires the same rule again (raising "
            "suggest_fraction alone is harmless: the band limit caps it)",
            (
                Edit(
                    "a5-renal.yaml",
                    r'params: \{fraction_of_ordered: "@row\.suggest_fraction", '
                    r'daily_max: "@row\.limit_established"\}',
                    "params: {fraction_of_ordered: 0.9, "
                    'daily_max: "@tables.oral_critical_daily_mg"}',
                ),
            ),
        ),
        BrokenPack(
            "start-suggestion-above-start",
            "safe suggestions",
            "the new-start fix suggests 10 mg three times daily (30 mg/day), above the "
            "15 mg/day start the rule enforces: accepting it fires the same rule again",
            (
                Edit(
                    "a4-titration.yaml",
                    r'start_per_admin: "@tables\.titration\.start_per_admin_mg"',
                    "start_per_admin: 10",
                ),
            ),
        ),
    )
}


def make_broken_pack(name: str, rules_dir: Path) -> Path:
    """Copy the real pack under ``rules_dir/baclofen`` with the edits of ``name`` applied."""
    pack = BROKEN_PACKS[name]
    target = rules_dir / "baclofen"
    shutil.copytree(REPO / "rules" / "baclofen", target)
    for edit in pack.edits:
        path = target / edit.file
        text = path.read_text(encoding="utf-8")
        new, n = re.subn(edit.pattern, edit.replacement, text, count=1)
        if n != 1:
            raise AssertionError(
                f"broken pack {name}: {edit.file} no longer contains {edit.pattern!r}"
            )
        path.write_text(new, encoding="utf-8")
    return rules_dir
