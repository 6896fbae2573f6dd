"""Fixtures for the testing kit's own tests: the real packs and broken copies, compiled once."""

from __future__ import annotations

from pathlib import Path

import pytest

from cds.engine.registry import PackRegistry
from cds.testing.formulary import PackDrug, drug_in
from cds.testing.invariants import registry_for
from tests.conftest import REPO
from tests.testing.broken_packs import make_broken_pack

# The drugs the kit's tests generate, read from the shipped packs (a strategy is built at
# import time, before any fixture exists).
BACLOFEN: PackDrug = drug_in(REPO / "rules", "baclofen")
GABAPENTIN: PackDrug = drug_in(REPO / "rules", "gabapentin")


@pytest.fixture(scope="session")
def real_pack() -> PackRegistry:
    """The shipped baclofen pack, US profile (compiled once for the session)."""
    return registry_for(REPO / "rules", "baclofen", "US")


@pytest.fixture(scope="session")
def gabapentin_pack() -> PackRegistry:
    """The shipped gabapentin pack, US profile (compiled once for the session)."""
    return registry_for(REPO / "rules", "gabapentin", "US")


@pytest.fixture(scope="session")
def broken_pack(tmp_path_factory: pytest.TempPathFactory):
    """``broken_pack(name)``: the registry of a broken copy of the pack (cached by name)."""
    cache: dict[str, PackRegistry] = {}

    def make(name: str) -> PackRegistry:
        if name not in cache:
            rules_dir: Path = make_broken_pack(name, tmp_path_factory.mktemp(name))
            cache[name] = registry_for(rules_dir, "baclofen", "US")
        return cache[name]

    return make
