"""The code lists and tables the clinical layer reads from ``fhir/`` (loaded once, cached).

Why data files: drug classes, condition codes, timing abbreviations and product strengths are
clinical knowledge that pharmacists review and correct; they live as FHIR ValueSets,
CodeSystems and a Bundle of Medications under ``fhir/`` (shipped in the wheel), never as
Python literals.

A ValueSet is matched by:
- enumerated codes (``compose.include.concept``, plus the dated ``expansion``);
- ``is-a`` filters, evaluated as a code prefix for the hierarchical code systems whose codes
  encode their hierarchy (ATC, ICD-10, ICD-10-CM; dots ignored);
- ``compose.exclude`` codes (exact, or prefix for those systems);
- last, whole-word text patterns in the project extension ``text-match`` (case-insensitive),
  vetoed by any ``text-exclude`` pattern.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from cds.clinical.drugs import medication_form_kind, medication_strength
from cds.clinical.units import Strength
from cds.paths import data_dir

BASE_URL = "https://posologic.example.org/fhir"
EXT_TEXT_MATCH = f"{BASE_URL}/StructureDefinition/text-match"
EXT_TEXT_EXCLUDE = f"{BASE_URL}/StructureDefinition/text-exclude"
LOCAL_SYSTEM = f"{BASE_URL}/CodeSystem/cds-local"
EXT_FAMILY = f"{BASE_URL}/StructureDefinition/product-family"
EXT_SCORED = f"{BASE_URL}/StructureDefinition/scored"
TIMING_CODESYSTEM = "timing-abbreviation-frequency"
GTS_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation"
PRESENTATION_VS = "units-of-presentation"

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"

# Code systems whose codes spell their hierarchy, so "is-a X" is "starts with X".
_PREFIX_SYSTEMS = frozenset(
    {ATC, "http://hl7.org/fhir/sid/icd-10", "http://hl7.org/fhir/sid/icd-10-cm"}
)


def _norm(system: str, code: str) -> str:
    if system in _PREFIX_SYSTEMS:
        return code.replace(".", "").upper()
    return code


@dataclass
class ValueSet:
    """A ValueSet ready for fast membership tests on raw codings and texts."""

    id: str
    codes: set[tuple[str, str]] = field(default_factory=set)
    prefixes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    excluded: set[tuple[str, str]] = field(default_factory=set)
    excluded_prefixes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    text_re: re.Pattern[str] | None = None
    text_exclude_re: re.Pattern[str] | None = None

    def has_code(self, system: str, code: str) -> bool:
        key = (system, _norm(system, code))
        if key in self.excluded:
            return False
        ex = self.excluded_prefixes.get(system)
        if ex and key[1].startswith(ex):
            return False
        if key in self.codes:
            return True
        pre = self.prefixes.get(system)
        return pre is not None and key[1].startswith(pre)

    def match_codings(self, items: list[tuple[str, str, str]]) -> bool:
        return any(self.has_code(s, c) for s, c, _ in items)

    def match_text(self, texts: list[str]) -> bool:
        if self.text_re is None:
            return False
        for t in texts:
            if self.text_exclude_re is not None and self.text_exclude_re.search(t):
                continue
            if self.text_re.search(t):
                return True
        return False


@dataclass(frozen=True)
class Product:
    """One row of the product table: a code with its dose form kind and strength."""

    system: str
    code: str
    display: str
    form_kind: str  # "oral", "intrathecal", "unknown"
    strength: Strength | None
    form: str = ""  # the dose form (its code, else its words): "same dose form" for a switch
    family: str = ""  # the pack's product family (extension product-family)
    scored: bool | None = None  # may be halved (extension scored); None: the pack's policy


_MEMO_MAX = 50_000  # bound on memoised codes/texts (junk input must not grow memory)
_EMPTY: frozenset[str] = frozenset()


@dataclass(eq=False)  # hashable by identity: derived indexes are cached per instance
class Terminology:
    """All ValueSets plus memoised reverse lookups.

    ``code_hits``/``text_hits`` answer "which ValueSets contain any of these codes / words"
    with one dict lookup per coding or text after the first time a code is seen, which keeps
    classifying a request's few dozen concepts against ~40 ValueSets cheap.
    """

    valuesets: dict[str, ValueSet]
    timing_per_day: dict[str, float]  # upper-case abbreviation -> administrations per day
    timing_systems: frozenset[str]
    products: dict[tuple[str, str], Product]
    # coded units of presentation (SNOMED CT 732936001 |Tablet|...): a dose in one is a count
    presentation_codes: frozenset[tuple[str, str]] = frozenset()
    _code_memo: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict, repr=False)
    _text_memo: dict[str, frozenset[str]] = field(default_factory=dict, repr=False)

    def vs(self, vs_id: str) -> ValueSet:
        return self.valuesets[vs_id]

    def _code(self, system: str, code: str) -> frozenset[str]:
        key = (system, code)
        hit = self._code_memo.get(key)
        if hit is None:
            hit = frozenset(v.id for v in self.valuesets.values() if v.has_code(system, code))
            if len(self._code_memo) >= _MEMO_MAX:
                self._code_memo.clear()
            self._code_memo[key] = hit
        return hit

    def _text(self, text: str) -> frozenset[str]:
        hit = self._text_memo.get(text)
        if hit is None:
            hit = frozenset(v.id for v in self.valuesets.values() if v.match_text([text]))
            if len(self._text_memo) >= _MEMO_MAX:
                self._text_memo.clear()
            self._text_memo[text] = hit
        return hit

    def code_hits(self, items: list[tuple[str, str, str]]) -> frozenset[str]:
        """Ids of the ValueSets that contain any of the codings."""
        if not items:
            return _EMPTY
        if len(items) == 1:
            return self._code(items[0][0], items[0][1])
        return frozenset().union(*(self._code(s, c) for s, c, _ in items))

    def text_hits(self, texts: list[str]) -> frozenset[str]:
        """Ids of the ValueSets whose text patterns match any of the texts."""
        if not texts:
            return _EMPTY
        if len(texts) == 1:
            return self._text(texts[0])
        return frozenset().union(*(self._text(t) for t in texts))

    def hits(self, items: list[tuple[str, str, str]], texts: list[str]) -> frozenset[str]:
        """Code hits, plus text hits (for sets that allow words)."""
        return self.code_hits(items) | self.text_hits(texts)


def _pattern(words: list[str]) -> re.Pattern[str] | None:
    if not words:
        return None
    alts = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alts})(?![\w])", re.IGNORECASE)


def _load_valueset(doc: dict[str, Any]) -> ValueSet:
    vs = ValueSet(id=doc["id"])
    compose = doc.get("compose", {})
    prefixes: dict[str, list[str]] = {}
    for inc in compose.get("include", []):
        system = inc.get("system", "")
        for c in inc.get("concept", []):
            vs.codes.add((system, _norm(system, c["code"])))
        for f in inc.get("filter", []):
            if f.get("op") == "is-a" and system in _PREFIX_SYSTEMS:
                prefixes.setdefault(system, []).append(_norm(system, f["value"]))
            elif f.get("op") == "is-a":
                vs.codes.add((system, f["value"]))
    ex_prefixes: dict[str, list[str]] = {}
    for exc in compose.get("exclude", []):
        system = exc.get("system", "")
        for c in exc.get("concept", []):
            code = _norm(system, c["code"])
            vs.excluded.add((system, code))
        for f in exc.get("filter", []):
            if f.get("op") == "is-a" and system in _PREFIX_SYSTEMS:
                ex_prefixes.setdefault(system, []).append(_norm(system, f["value"]))
    for c in doc.get("expansion", {}).get("contains", []):
        vs.codes.add((c["system"], _norm(c["system"], c["code"])))
    vs.prefixes = {k: tuple(v) for k, v in prefixes.items()}
    vs.excluded_prefixes = {k: tuple(v) for k, v in ex_prefixes.items()}
    ext = doc.get("extension", [])
    vs.text_re = _pattern([e["valueString"] for e in ext if e.get("url") == EXT_TEXT_MATCH])
    vs.text_exclude_re = _pattern(
        [e["valueString"] for e in ext if e.get("url") == EXT_TEXT_EXCLUDE]
    )
    return vs


def _load_timing(doc: dict[str, Any]) -> tuple[dict[str, float], frozenset[str]]:
    per_day: dict[str, float] = {}
    systems = {""}
    for c in doc.get("concept", []):
        props = {p["code"]: p for p in c.get("property", [])}
        per_day[c["code"].upper()] = float(props["administrationsPerDay"]["valueDecimal"])
        systems.add(props.get("sourceSystem", {}).get("valueString", ""))
    return per_day, frozenset(systems)


def _load_products(
    doc: dict[str, Any], valuesets: dict[str, ValueSet], identity: str | None
) -> dict[tuple[str, str], Product]:
    out: dict[tuple[str, str], Product] = {}
    for entry in doc.get("entry", []):
        med = entry["resource"]
        kind = medication_form_kind(med, valuesets)
        strength = medication_strength(med, valuesets, identity)
        form = med.get("form") or {}
        form_key = next(
            (f"{c.get('system')}|{c.get('code')}" for c in form.get("coding", [])),
            str(form.get("text", "")).lower(),
        )
        ext = {e.get("url"): e for e in med.get("extension", []) if isinstance(e, dict)}
        family = ext.get(EXT_FAMILY, {}).get("valueCode", "")
        scored = ext.get(EXT_SCORED, {}).get("valueBoolean")
        for c in med.get("code", {}).get("coding", []):
            out[(c["system"], c["code"])] = Product(
                c["system"],
                c["code"],
                c.get("display", ""),
                kind,
                strength,
                form_key,
                family,
                scored,
            )
    return out


def _read_json(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a JSON object")
    return doc


@cache
def _shared(root: Path) -> tuple[dict[str, ValueSet], dict[str, float], frozenset[str]]:
    """The shared ValueSets and timing table under ``root`` (parsed once per process)."""
    valuesets: dict[str, ValueSet] = {}
    for path in sorted((root / "valuesets").glob("*.json")):
        doc = _read_json(path)
        if doc.get("resourceType") == "ValueSet":
            vs = _load_valueset(doc)
            valuesets[vs.id] = vs
    timing_doc = _read_json(root / "codesystems" / f"{TIMING_CODESYSTEM}.json")
    per_day, systems = _load_timing(timing_doc)
    return valuesets, per_day, systems


def load_terminology(
    root: Path,
    *,
    valuesets: Sequence[Path] = (),
    products: Path | None = None,
    identity: str | None = None,
) -> Terminology:
    """The shared ValueSets and timing table under ``root``, plus a pack's own ValueSet files
    and product table. A pack ValueSet may not redefine a shared one (two packs must match
    a shared class alike); ``ValueError`` names the clash."""
    shared, per_day, systems = _shared(root)
    merged = dict(shared)
    for path in valuesets:
        doc = _read_json(path)
        if doc.get("resourceType") != "ValueSet" or not isinstance(doc.get("id"), str):
            raise ValueError(f"{path}: not a FHIR ValueSet with an id")
        if doc["id"] in shared:
            raise ValueError(f"{path}: ValueSet {doc['id']!r} is already a shared ValueSet")
        vs = _load_valueset(doc)
        merged[vs.id] = vs
    table = _load_products(_read_json(products), merged, identity) if products else {}
    presentation = merged.get(PRESENTATION_VS)
    codes = frozenset(presentation.codes) if presentation is not None else frozenset()
    return Terminology(merged, per_day, systems, table, presentation_codes=codes)


@cache
def get_terminology() -> Terminology:
    """The shared terminology alone (timing codes, classes, labs), loaded on first use."""
    return load_terminology(data_dir("fhir"))
