"""Two packs whose drugs interact: exactly one of them owns the pair's card, and
``cds rules check`` fails when both or neither do."""

from __future__ import annotations

import shutil
from pathlib import Path

from cds.engine.pack import compile_pack
from cds.engine.pairs import pair_problems
from tests.conftest import REPO


def _packs(rules: Path) -> list:
    return [compile_pack(rules / pid, "US") for pid in ("baclofen", "gabapentin")]


def test_shipped_packs_give_the_pair_to_baclofen() -> None:
    problems, owners = pair_problems(_packs(REPO / "rules"))
    assert problems == []
    assert owners == ["baclofen-gabapentin: baclofen"]


def _copy(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    for pid in ("baclofen", "gabapentin"):
        shutil.copytree(REPO / "rules" / pid, rules / pid)
    return rules


def test_both_packs_firing_for_the_pair_fails(tmp_path: Path) -> None:
    rules = _copy(tmp_path)
    f = rules / "gabapentin" / "a8-interactions.yaml"
    f.write_text(f.read_text().replace("    unless_pack: baclofen\n", ""))
    problems, _ = pair_problems(_packs(rules))
    assert len(problems) == 1 and "both fire" in problems[0]


def test_neither_pack_firing_for_the_pair_fails(tmp_path: Path) -> None:
    rules = _copy(tmp_path)
    f = rules / "baclofen" / "a8-interactions.yaml"
    text = f.read_text()
    marker = "  - id: interaction-gabapentinoid\n"
    assert marker in text
    f.write_text(text.replace(marker, marker + "    unless_pack: gabapentin\n"))
    problems, _ = pair_problems(_packs(rules))
    assert len(problems) == 1 and "neither" in problems[0]
