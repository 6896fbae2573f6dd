"""No drug in ``cds/``: the engine knows no drug, every pack's drug lives in its pack.

For every pack under ``rules/``: its drug's name (``drug.name``) and the words its identity
ValueSet matches by text, and every code of its identity and family ValueSets and of its
product table, must appear in no ``.py`` file under ``cds/``. A match is a whole word:
letters and digits on either side make another word ("gabapentinoid" is a class word, not
the drug), while an underscore does not (an identifier such as ``x_requests`` built on a
drug name is the drug in code). Docstrings and comments count too: they say "the pack's
drug".

The only exceptions are listed in :data:`ALLOWED`, each with the reason it must stay.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

RULES = REPO / "rules"
CODE = REPO / "cds"
TEXT_MATCH = "https://posologic.example.org/fhir/StructureDefinition/text-match"

# (file under cds/, the exact text allowed on a line, why it must stay)
ALLOWED: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class Term:
    text: str
    pack: str
    what: str  # "drug name", "identity word", "code in <ValueSet or product table>"


def _json(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict), path
    return doc


def _valuesets(folder: Path, pack: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every ValueSet a pack can name: the shared ones, then the pack's own files."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted((REPO / "fhir" / "valuesets").glob("*.json")):
        doc = _json(path)
        if doc.get("resourceType") == "ValueSet":
            out[doc["id"]] = doc
    for rel in pack.get("terminology") or []:
        doc = _json(folder / rel)
        out[doc["id"]] = doc
    return out


def _codes(valueset: dict[str, Any]) -> set[str]:
    codes = {
        c["code"]
        for inc in (valueset.get("compose") or {}).get("include") or []
        for c in inc.get("concept") or []
    }
    codes |= {c["code"] for c in (valueset.get("expansion") or {}).get("contains") or []}
    return codes


def pack_terms() -> list[Term]:
    """Every drug word and code of every pack under ``rules/``."""
    terms: list[Term] = []
    folders = sorted(p.parent for p in RULES.glob("*/pack.yaml"))
    assert len(folders) >= 2, "expected the shipped packs under rules/"
    for folder in folders:
        pack = yaml.safe_load((folder / "pack.yaml").read_text(encoding="utf-8"))
        drug = pack["drug"]
        pid = pack["id"]
        terms.append(Term(drug["name"], pid, "drug name"))
        sets = _valuesets(folder, pack)
        identity = sets[drug["identity"]]
        for ext in identity.get("extension") or []:
            if ext.get("url") == TEXT_MATCH:
                terms.append(Term(ext["valueString"], pid, "identity word"))
        names = [drug["identity"]]
        names += [f["valueset"] for f in (drug.get("families") or {}).values() if f.get("valueset")]
        for name in names:
            terms += [Term(c, pid, f"code in ValueSet {name}") for c in sorted(_codes(sets[name]))]
        if drug.get("products"):
            table = _json(folder / drug["products"])
            for entry in table.get("entry") or []:
                for c in entry["resource"].get("code", {}).get("coding") or []:
                    terms.append(Term(c["code"], pid, "code in the product table"))
    return terms


def _pattern(text: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(text)}(?![A-Za-z0-9])", re.IGNORECASE)


def _allowed(path: str, line: str, start: int, end: int) -> bool:
    for file, snippet, _ in ALLOWED:
        if file != path:
            continue
        at = line.find(snippet)
        while at != -1:
            if at <= start and end <= at + len(snippet):
                return True
            at = line.find(snippet, at + 1)
    return False


def find_drugs_in_code(terms: list[Term]) -> tuple[list[str], set[tuple[str, str]]]:
    """(hits outside the allowlist, the allowlist entries that were used)."""
    patterns: dict[str, tuple[re.Pattern[str], Term]] = {}
    for t in terms:  # one pattern per word; the first term (the drug name) labels it
        patterns.setdefault(t.text.lower(), (_pattern(t.text), t))
    hits: list[str] = []
    used: set[tuple[str, str]] = set()
    for path in sorted(CODE.rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for pattern, term in patterns.values():
                for m in pattern.finditer(line):
                    if _allowed(rel, line, m.start(), m.end()):
                        used |= {(f, s) for f, s, _ in ALLOWED if f == rel and s in line}
                        continue
                    hits.append(
                        f"{rel}:{n}: {m.group(0)!r} ({term.what}, pack {term.pack}): "
                        f"{line.strip()[:120]}"
                    )
    return hits, used


def test_no_drug_name_or_code_in_cds() -> None:
    hits, _ = find_drugs_in_code(pack_terms())
    assert not hits, (
        "cds/ holds only what is true of every drug; say 'the pack's drug' (or read it from "
        "the pack) instead of:\n" + "\n".join(hits)
    )


def test_every_allowed_exception_is_still_needed() -> None:
    _, used = find_drugs_in_code(pack_terms())
    stale = [(f, s) for f, s, _ in ALLOWED if (f, s) not in used]
    assert not stale, f"allowlist entries no longer needed (remove them): {stale}"


def test_the_terms_cover_every_pack_drug() -> None:
    terms = pack_terms()
    by_pack: dict[str, set[str]] = {}
    for t in terms:
        by_pack.setdefault(t.pack, set()).add(t.what)
    for pack, kinds in by_pack.items():
        assert {"drug name", "identity word", "code in the product table"} <= kinds, pack


@pytest.mark.parametrize(
    ("line", "found"),
    [
        ("x = 'the drug'", False),
        ("# gabapentinoid is a class word", False),
        ("def gabapentin_requests(): ...", True),
        ("'Baclofen 20 MG'", True),
        ("code = '11292'", False),
        ("code = '1292'", True),
    ],
)
def test_the_match_is_a_whole_word(line: str, found: bool) -> None:
    patterns = [_pattern(w) for w in ("gabapentin", "baclofen", "1292")]
    assert any(p.search(line) for p in patterns) == found
