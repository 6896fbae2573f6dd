"""Where the shipped data lives: ``rules/``, ``fhir/``, ``alembic/``, ``api/``.

In a wheel they are mapped under ``cds/_data/`` (they must never be top-level packages:
Alembic and fhir.resources own those names); in a source checkout they sit beside ``cds/``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PKG = Path(__file__).resolve().parent


@cache
def data_dir(name: str) -> Path:
    """Directory of shipped data ``name`` (rules, fhir, alembic, api)."""
    for candidate in (_PKG / "_data" / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"shipped data folder {name!r} not found")
