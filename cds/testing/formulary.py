"""What the testing kit writes for a pack's drug, read from the pack itself.

The strategies, builders and invariants generate orders of *the pack under test*: its
products (the product table: codes, displays, strengths per unit or per mL, forms,
families), its ingredient (the identity ValueSet), the routes it declares, a concept of
each of its interacting classes, and problems from its condition ValueSets. Nothing here
names a drug: a second pack is tested the way the first is, and a property run on a pack
cannot pass by generating another pack's orders.

- :class:`PackDrug`: one pack's drug as the kit sees it (:func:`pack_drug` from a compiled
  pack, :func:`drug_in` from a rules folder without compiling);
- :class:`KitProduct`: a row of the product table, with a short key (``tab10``, ``sol1``,
  ``cap300``, ``tab300-once_daily``; ``ingredient`` is the bare ingredient);
- :class:`Formulary`: lookups across several packs (product keys, drug names, concept
  codes), for vignettes and builders that name things by key.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cds.clinical.conditions import DIALYSIS_VS
from cds.clinical.drugs import drug_identity, resolve_medication
from cds.clinical.drugspec import DrugSpec
from cds.clinical.terminology import ATC, RXNORM, Product
from cds.clinical.units import convert_mass, mass_unit
from cds.paths import data_dir

if TYPE_CHECKING:
    from cds.engine.pack import CompiledPack

JSON = dict[str, Any]

__all__ = [
    "Concept",
    "Formulary",
    "KitProduct",
    "PackDrug",
    "default_formulary",
    "drug_in",
    "formulary_in",
    "pack_drug",
    "pack_ids_in",
]


@dataclass(frozen=True)
class Concept:
    """A code with its display, as a coding in a generated resource."""

    system: str
    code: str
    display: str

    def coding(self) -> JSON:
        return {"system": self.system, "code": self.code, "display": self.display}

    @property
    def slug(self) -> str:
        """The code as a FHIR id fragment (``T42.8X5`` stays, spaces and slashes go)."""
        return re.sub(r"[^A-Za-z0-9.\-]", "-", self.code)[:40] or "x"


@dataclass(frozen=True)
class KitProduct:
    """One row of the pack's product table (or the bare ingredient), ready to write."""

    key: str
    concept: Concept
    route: str  # "oral", "intrathecal" or "unknown" (the bare ingredient)
    strength: float | None  # mg (oral) or ug (intrathecal) per unit of presentation or mL
    per_ml: bool  # strength per mL (a liquid)
    form: str  # tablet, capsule, solution, suspension, injection, or ""
    family: str
    in_regimen: bool
    halves: bool  # a dose may be half a unit (scored, or the pack does not say)

    @property
    def count_unit(self) -> str:
        """The UCUM annotation of one unit of presentation."""
        return "{capsule}" if self.form == "capsule" else "{tablet}"

    @property
    def solid(self) -> bool:
        return self.strength is not None and not self.per_ml


_FORMS = (
    ("suspension", "susp"),
    ("solution", "sol"),
    ("capsule", "cap"),
    ("tablet", "tab"),
    ("injection", "inj"),
)


def _form_word(product: Product) -> str:
    words = f"{product.display} {product.form}".lower()
    return next((w for w, _ in _FORMS if w in words), "")


def _amount(product: Product, unit: str) -> tuple[float | None, bool]:
    s = product.strength
    if s is None or not s.per_value:
        return None, False
    mass = mass_unit(s.unit)
    if mass is None:
        return None, False
    return convert_mass(s.amount, mass, unit) / s.per_value, s.per == "mL"


def _number(x: float) -> str:
    return f"{x:g}".replace(".", "_")


def _products(spec: DrugSpec) -> tuple[KitProduct, ...]:
    out: list[KitProduct] = []
    seen: set[str] = set()
    default = spec.default_family or ""
    for product in spec.term.products.values():
        route = product.form_kind
        unit = spec.unit_of(route) if route in spec.routes else "mg"
        amount, per_ml = _amount(product, unit)
        form = _form_word(product)
        prefix = "itb" if route == "intrathecal" else dict(_FORMS).get(form, "prod")
        key = prefix + (_number(amount) if amount is not None else "")
        if product.family and product.family != default:
            key += f"-{product.family}"
        if key in seen:
            key += f"-{product.code}"
        seen.add(key)
        out.append(
            KitProduct(
                key=key,
                concept=Concept(product.system, product.code, product.display),
                route=route,
                strength=amount,
                per_ml=per_ml,
                form=form,
                family=product.family,
                in_regimen=spec.in_regimen(product.family or spec.default_family),
                halves=product.scored is not False and form == "tablet",
            )
        )
    return tuple(out)


# ---- the raw terminology files (for displays and enumerations) ------------------------------


def _read(path: Path) -> JSON:
    doc = json.loads(path.read_text(encoding="utf-8"))
    return doc if isinstance(doc, dict) else {}


@cache
def _shared_docs(root: Path) -> dict[str, JSON]:
    docs = {}
    for path in sorted((root / "valuesets").glob("*.json")):
        doc = _read(path)
        if doc.get("resourceType") == "ValueSet" and isinstance(doc.get("id"), str):
            docs[doc["id"]] = doc
    return docs


def _pack_docs(folder: Path) -> dict[str, JSON]:
    raw = yaml.safe_load((folder / "pack.yaml").read_text(encoding="utf-8")) or {}
    docs = dict(_shared_docs(data_dir("fhir")))
    for rel in raw.get("terminology") or []:
        doc = _read(folder / rel)
        if doc.get("resourceType") == "ValueSet" and isinstance(doc.get("id"), str):
            docs[doc["id"]] = doc
    return docs


def _concepts(doc: JSON | None, *, excluded: bool = False) -> tuple[Concept, ...]:
    """The enumerated concepts of a ValueSet (compose, then expansion; with ``excluded``,
    its ``compose.exclude`` concepts: the near misses)."""
    if not doc:
        return ()
    out: dict[tuple[str, str], Concept] = {}
    compose = doc.get("compose") or {}
    for inc in compose.get("exclude" if excluded else "include") or []:
        system = str(inc.get("system", ""))
        for c in inc.get("concept") or []:
            display = str(c.get("display") or doc.get("title") or c["code"])
            out.setdefault((system, c["code"]), Concept(system, c["code"], display))
    if not excluded:
        for c in (doc.get("expansion") or {}).get("contains") or []:
            key = (str(c.get("system", "")), c["code"])
            display = str(c.get("display") or doc.get("title") or c["code"])
            out.setdefault(key, Concept(key[0], key[1], display))
    return tuple(out.values())


# ---- a pack's drug -------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PackDrug:
    """A pack's drug as the kit generates it. Built by :func:`pack_drug` / :func:`drug_in`."""

    pack_id: str
    spec: DrugSpec
    ingredient: tuple[Concept, ...]  # the ingredient code (RxNorm first, then ATC)
    products: tuple[KitProduct, ...]
    interactions: tuple[tuple[str, tuple[Concept, ...]], ...]  # class -> drugs in it
    comedications: tuple[tuple[str, tuple[Concept, ...]], ...]  # flag -> drugs in it
    conditions: tuple[tuple[str, tuple[Concept, ...]], ...]  # flag -> problems that set it
    near_misses: tuple[Concept, ...]  # problems a condition ValueSet excludes
    concepts: Mapping[str, Concept] = field(repr=False)  # code -> concept, every ValueSet

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def routes(self) -> tuple[str, ...]:
        return tuple(self.spec.routes)

    def product(self, key: str) -> KitProduct:
        for p in self.products:
            if key in (p.key, p.concept.code):
                return p
        hint = difflib.get_close_matches(key, [p.key for p in self.products], n=1)
        raise KeyError(
            f"pack {self.pack_id!r} has no product {key!r}"
            + (f"; did you mean {hint[0]!r}?" if hint else "")
            + f" (products: {', '.join(p.key for p in self.products)})"
        )

    def oral_products(self, *, in_regimen: bool | None = None) -> tuple[KitProduct, ...]:
        """Oral products, then the bare ingredient; ``in_regimen``: only those whose doses
        count in the drug's regimen (True) or only those that do not (False)."""
        return tuple(
            p
            for p in self.products
            if p.route in ("oral", "unknown") and (in_regimen is None or p.in_regimen == in_regimen)
        )

    def intrathecal_products(self) -> tuple[KitProduct, ...]:
        """Intrathecal products, then the bare ingredient (a pump named by its ingredient)."""
        return tuple(p for p in self.products if p.route in ("intrathecal", "unknown"))

    @property
    def dose_step(self) -> float:
        """Half the smallest strength of a solid oral product in the regimen: the grain of
        the generated oral doses (multiples of it, up to a dozen; a few far above or below).
        """
        solids = [p.strength for p in self.oral_products(in_regimen=True) if p.solid]
        if solids:
            return min(s for s in solids if s is not None) / 2
        liquids = [p.strength for p in self.oral_products(in_regimen=True) if p.strength]
        return min(liquids) * 2.5 if liquids else 1.0

    def interacting(self, classes: Iterable[str] | None = None) -> tuple[Concept, ...]:
        """A drug of each interacting class (all of them, or those named)."""
        wanted = None if classes is None else set(classes)
        return tuple(
            c for name, cs in self.interactions if wanted is None or name in wanted for c in cs
        )

    def matches(self, resource: Any, medications: Mapping[str, JSON] | None = None) -> bool:
        """Whether a MedicationRequest/Statement names this drug (any of its identity or
        family ValueSets, by code or by name), as the clinical layer reads it."""
        if not isinstance(resource, dict) or resource.get("resourceType") not in (
            "MedicationRequest",
            "MedicationStatement",
        ):
            return False
        term = self.spec.term
        med = resolve_medication(resource, dict(medications or {}), term, self.spec.identity)
        return drug_identity(med, term, self.spec.identities) is not None


def _ingredient(spec: DrugSpec, docs: Mapping[str, JSON]) -> tuple[Concept, ...]:
    concepts = _concepts(docs.get(spec.identity))
    named = [c for c in concepts if c.display.lower() == spec.name.lower()]
    rxnorm = [c for c in named if c.system == RXNORM] or [
        c for c in concepts if c.system == RXNORM and c.code not in _product_codes(spec)
    ]
    atc = [c for c in concepts if c.system == ATC]
    return tuple([*rxnorm[:1], *atc[:1]]) or concepts[:1]


def _product_codes(spec: DrugSpec) -> set[str]:
    return {code for _, code in spec.term.products}


def _build(spec: DrugSpec, folder: Path, pack_id: str) -> PackDrug:
    docs = _pack_docs(folder)
    ingredient = _ingredient(spec, docs)
    products = _products(spec)
    if ingredient:
        products += (
            KitProduct(
                key="ingredient",
                concept=Concept(ingredient[0].system, ingredient[0].code, spec.name),
                route="unknown",
                strength=None,
                per_ml=False,
                form="",
                family=spec.default_family or "",
                in_regimen=spec.in_regimen(spec.default_family),
                halves=False,
            ),
        )

    def others(valuesets: Iterable[str]) -> tuple[Concept, ...]:
        out: dict[tuple[str, str], Concept] = {}
        for vs in valuesets:
            for c in _concepts(docs.get(vs)):
                if spec.term.code_hits([(c.system, c.code, "")]) & set(spec.identities):
                    continue  # the drug itself (a family of it): not another drug
                out.setdefault((c.system, c.code), c)
        return tuple(out.values())

    interactions = tuple((c.name, others(c.valuesets)) for c in spec.interactions)
    comedications = tuple((c.name, others(c.valuesets)) for c in spec.comedications)
    condition_sets: list[tuple[str, str]] = [(DIALYSIS_VS, DIALYSIS_VS)]
    condition_sets += [(c.name, c.valueset) for c in spec.conditions]
    condition_sets += [(name, vs) for name, vs in spec.indications]
    condition_sets += [(c.name, v) for c in spec.interactions for v in c.conditions]
    conditions = tuple((name, cs) for name, vs in condition_sets if (cs := _concepts(docs.get(vs))))
    near = {c for _, vs in condition_sets for c in _concepts(docs.get(vs), excluded=True)}
    concepts: dict[str, Concept] = {}
    for doc in docs.values():
        for c in _concepts(doc):
            concepts.setdefault(c.code, c)
    return PackDrug(
        pack_id=pack_id,
        spec=spec,
        ingredient=ingredient,
        products=products,
        interactions=tuple((n, cs) for n, cs in interactions if cs),
        comedications=tuple((n, cs) for n, cs in comedications if cs),
        conditions=conditions,
        near_misses=tuple(sorted(near, key=lambda c: (c.system, c.code))),
        concepts=concepts,
    )


_DRUGS: dict[tuple[str, str], PackDrug] = {}


def pack_drug(pack: CompiledPack) -> PackDrug:
    """The drug of a compiled pack (cached by the pack's folder and digest)."""
    key = (str(pack.source_dir), pack.digest)
    if key not in _DRUGS:
        _DRUGS[key] = _build(pack.drug, Path(pack.source_dir), pack.id)
    return _DRUGS[key]


def drug_in(rules_dir: Path, pack_id: str) -> PackDrug:
    """The drug of the pack ``rules_dir/pack_id``, read without compiling its rules."""
    from cds.engine.drug import build_drug
    from cds.engine.pack import pack_folder, read_pack

    folder = pack_folder(Path(rules_dir), pack_id)
    pack, _ = read_pack(folder)
    spec, digest = build_drug(pack, folder)
    key = (str(folder), digest)
    if key not in _DRUGS:
        _DRUGS[key] = _build(spec, folder, pack.id)
    return _DRUGS[key]


def pack_ids_in(rules_dir: Path) -> list[str]:
    """The pack folders (those holding a ``pack.yaml``) under ``rules_dir``, sorted."""
    return sorted(p.name for p in Path(rules_dir).iterdir() if (p / "pack.yaml").is_file())


# ---- several packs: lookups by key, name or code --------------------------------------------


@dataclass(frozen=True, eq=False)
class Formulary:
    """Product keys, drug names and concept codes across packs (the first pack wins)."""

    drugs: tuple[PackDrug, ...]

    def product(self, key: str) -> KitProduct:
        errors = []
        for d in self.drugs:
            try:
                return d.product(key)
            except KeyError as exc:
                errors.append(str(exc.args[0]))
        raise KeyError("; ".join(errors) or f"no pack defines product {key!r}")

    def drug_named(self, name: str) -> PackDrug | None:
        return next((d for d in self.drugs if d.name.lower() == name.lower()), None)

    def concept(self, code: str) -> Concept | None:
        """A concept with this code in any pack's (or the shared) terminology."""
        for d in self.drugs:
            if code in d.concepts:
                return d.concepts[code]
        return None

    def first(self, drug: PackDrug | None) -> Formulary:
        """This formulary with ``drug`` looked up first."""
        if drug is None:
            return self
        return Formulary((drug, *(d for d in self.drugs if d is not drug)))


@cache
def formulary_in(rules_dir: Path, first: tuple[str, ...] = ()) -> Formulary:
    """Every pack under ``rules_dir``, those named in ``first`` looked up first (cached:
    a process sees each rules folder as it was when first asked)."""
    ids = pack_ids_in(rules_dir)
    ordered = [*(p for p in first if p in ids), *(p for p in ids if p not in first)]
    return Formulary(tuple(drug_in(rules_dir, p) for p in ordered))


@cache
def default_formulary() -> Formulary:
    """Every pack shipped in ``rules/`` (for builders called without a pack)."""
    return formulary_in(data_dir("rules"))
