"""The import contract of the layering in DESIGN.md ("One request, end to end").

Data flows web -> hooks -> clinical -> engine -> cards -> store, and the imports follow:

- only ``cds/engine`` imports durable_rules; only ``cds/store`` imports SQLAlchemy and
  Alembic (``alembic/`` itself is outside ``cds/``); only ``cds/batch`` imports DuckDB and
  pyspark;
- the domain (``cds/clinical``, ``cds/engine``, ``cds/suggestions``, ``cds/cards.py``)
  imports no HTTP (fastapi, starlette, httpx, uvicorn) and no database;
- ``clinical`` imports none of hooks, web, store, engine (the engine fills clinical's
  typed parameters, so imports run engine -> clinical), suggestions or cards;
  ``engine`` none of hooks, web, store, suggestions or cards; ``cards`` and
  ``suggestions`` none of hooks, web or store; ``hooks`` not web; ``store`` nothing
  upstream of it;
- nothing in production code imports the testing kit but the CLI's ``rules test``.

Imports are read with ``ast`` from every ``.py`` under ``cds/``: module level, inside
functions, under ``TYPE_CHECKING`` (a type is a dependency too), relative imports
resolved, and ``importlib.import_module("...")`` with a literal name.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import REPO

CODE = REPO / "cds"

HTTP = ("fastapi", "starlette", "httpx", "uvicorn", "requests", "aiohttp")
DATABASE = ("sqlalchemy", "alembic", "psycopg", "psycopg2", "sqlite3", "duckdb", "redis")
DOMAIN = ("cds.clinical", "cds.engine", "cds.suggestions", "cds.cards")

# third-party package -> the only areas of cds/ that may import it
ONLY_IN: dict[str, tuple[str, ...]] = {
    "durable_rules": ("cds.engine",),
    "durable_rules_engine": ("cds.engine",),  # the C engine under durable_rules
    "durable": ("cds.engine",),  # durable.lang
    "sqlalchemy": ("cds.store",),
    "alembic": ("cds.store",),
    "duckdb": ("cds.batch",),
    "pyspark": ("cds.batch",),
    "cds.testing": ("cds.testing", "cds.cli"),
}

# area -> what it must not import (module prefixes)
MUST_NOT_IMPORT: dict[str, tuple[str, ...]] = {
    "cds.clinical": (
        *HTTP,
        *DATABASE,
        "cds.hooks",
        "cds.web",
        "cds.store",
        "cds.engine",
        "cds.suggestions",
        "cds.cards",
        "cds.batch",
    ),
    "cds.engine": (
        *HTTP,
        *DATABASE,
        "cds.hooks",
        "cds.web",
        "cds.store",
        "cds.suggestions",
        "cds.cards",
        "cds.batch",
    ),
    "cds.suggestions": (*HTTP, *DATABASE, "cds.hooks", "cds.web", "cds.store", "cds.batch"),
    "cds.cards": (*HTTP, *DATABASE, "cds.hooks", "cds.web", "cds.store", "cds.batch"),
    "cds.hooks": ("cds.web", "cds.batch", "fastapi", "starlette", "uvicorn"),
    "cds.store": (
        *HTTP,
        "cds.web",
        "cds.hooks",
        "cds.clinical",
        "cds.engine",
        "cds.suggestions",
        "cds.cards",
        "cds.batch",
    ),
}

# Known breaches of the contract, each to be fixed where it is (not here): a new breach
# fails, and so does an entry that no longer happens. (importer module, imported module)
KNOWN: dict[tuple[str, str], str] = {
    ("cds.batch.run", "sqlalchemy.orm"): (
        "Session/sessionmaker for annotations (under TYPE_CHECKING): take the types from "
        "cds.store (e.g. an alias in cds.store.db)"
    ),
    ("cds.batch.replay", "sqlalchemy.orm"): (
        "Session/sessionmaker for annotations (under TYPE_CHECKING): take the types from cds.store"
    ),
    ("cds.hooks.shadow", "sqlalchemy.orm"): (
        "Session/sessionmaker for annotations (under TYPE_CHECKING): take the types from cds.store"
    ),
    ("cds.users_cli", "sqlalchemy.orm"): (
        "Session/sessionmaker for annotations: take the types from cds.store"
    ),
    ("cds.web.console.routing", "sqlalchemy.orm"): (
        "Session/sessionmaker for the Maker dependency's annotation: take the types from cds.store"
    ),
}


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    imported: str  # dotted module name
    where: str  # file:line


def _module(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, root: Path = REPO) -> Iterator[Import]:
    mod = _module(path, root)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = path.relative_to(root).as_posix()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base)
                if node.module:
                    names = [f"{prefix}.{node.module}"]
                    names += [f"{prefix}.{node.module}.{a.name}" for a in node.names]
                else:  # from . import x: each x may be a module
                    names = [f"{prefix}.{a.name}" for a in node.names]
            elif node.module:
                names = [node.module]
                names += [f"{node.module}.{a.name}" for a in node.names if a.name != "*"]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        for name in names:
            yield Import(mod, name, f"{rel}:{getattr(node, 'lineno', 0)}")


@cache
def all_imports() -> tuple[Import, ...]:
    return tuple(i for path in sorted(CODE.rglob("*.py")) for i in _imports(path))


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def breaches(imports: tuple[Import, ...] | None = None) -> list[tuple[Import, str]]:
    """Every import (of ``cds/``, or those given) that breaks the contract, with the rule."""
    out: list[tuple[Import, str]] = []
    for imp in all_imports() if imports is None else imports:
        for package, allowed in ONLY_IN.items():
            if _within(imp.imported, package) and not any(
                _within(imp.importer, a) for a in allowed
            ):
                out.append((imp, f"only {', '.join(allowed)} may import {package}"))
        for area, forbidden in MUST_NOT_IMPORT.items():
            if not _within(imp.importer, area):
                continue
            for f in forbidden:
                if _within(imp.imported, f):
                    out.append((imp, f"{area} must not import {f}"))
    return out


def _known(imp: Import) -> tuple[str, str] | None:
    """The KNOWN entry covering this import (same importer, the module or inside it)."""
    return next((k for k in KNOWN if imp.importer == k[0] and _within(imp.imported, k[1])), None)


def test_the_layering_contract_holds() -> None:
    new = [
        f"{imp.where}: {imp.importer} imports {imp.imported} ({rule})"
        for imp, rule in breaches()
        if _known(imp) is None
    ]
    assert not new, "imports breaking DESIGN.md's layering:\n" + "\n".join(sorted(set(new)))


def test_every_known_breach_still_happens() -> None:
    used = {_known(imp) for imp, _ in breaches()}
    stale = [k for k in KNOWN if k not in used]
    assert not stale, f"fixed: remove from KNOWN {stale}"


@pytest.mark.parametrize(
    ("importer", "imported", "broken"),
    [
        ("cds.clinical.renal", "cds.store.db", True),
        ("cds.clinical.renal", "cds.engine.pack", True),
        ("cds.engine.pack", "cds.clinical.facts", False),
        ("cds.engine.runtime", "durable_rules_engine", False),
        ("cds.web.app", "durable_rules", True),
        ("cds.hooks.audit", "sqlalchemy.orm", True),
        ("cds.store.db", "sqlalchemy", False),
        ("cds.suggestions.dose", "httpx", True),
        ("cds.cards", "cds.hooks.pipeline", True),
        ("cds.hooks.fetch", "httpx", False),
        ("cds.web.app", "cds.testing.invariants", True),
        ("cds.cli", "cds.testing.invariants", False),
    ],
)
def test_the_rules_catch_a_breach(importer: str, imported: str, broken: bool) -> None:
    found = breaches((Import(importer, imported, "x.py:1"),))
    assert bool(found) == broken, found


def test_the_reader_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Module-level, function-level, TYPE_CHECKING, relative and import_module imports."""
    pkg = tmp_path / "cds" / "clinical"
    pkg.mkdir(parents=True)
    (pkg / "x.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "import httpx\n"
        "from ..engine import pack\n"
        "if TYPE_CHECKING:\n"
        "    from sqlalchemy.orm import Session\n"
        "def f():\n"
        "    import durable_rules.engine\n"
        "    import importlib\n"
        "    return importlib.import_module('cds.web.app')\n"
    )
    found = {i.imported for i in _imports(pkg / "x.py", tmp_path)}
    assert {"httpx", "cds.engine.pack", "sqlalchemy.orm", "durable_rules.engine"} <= found
    assert "cds.web.app" in found
    assert {i.importer for i in _imports(pkg / "x.py", tmp_path)} == {"cds.clinical.x"}


@pytest.mark.parametrize("package", ["durable_rules_engine", "sqlalchemy", "duckdb"])
def test_the_owner_really_imports_it(package: str) -> None:
    """The contract is not vacuous: the one area allowed to import it does."""
    owners = ONLY_IN[package]
    assert any(
        _within(i.imported, package) and any(_within(i.importer, o) for o in owners)
        for i in all_imports()
    )
