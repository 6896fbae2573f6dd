"""Drug identity: what an order or statement is for (A1, part C).

Why its own module: every other step (dose, regimen, interactions) first has to know whether
a MedicationRequest is the pack's drug, which product (route, strength) it names, and which
interacting class another drug belongs to; the answer depends on three FHIR spellings of
"the medication" and on code lists (the pack's), not on dosing.

Medication shapes accepted:
- STU3/R4 ``medicationCodeableConcept`` and ``medicationReference``;
- R5 ``medication`` (a CodeableReference: ``concept`` and/or ``reference``);
- a reference to a contained Medication (``#id``) or to a prefetched Medication by id;
- Medication ``form`` (R4) or ``doseForm`` (R5); ingredient ``strength`` (R4 Ratio),
  ``strengthRatio``/``strengthQuantity`` (R5) or ``amount`` (STU3); ingredient
  ``itemCodeableConcept`` (R4) or ``item.concept`` (R5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cds.clinical.fhirdata import (
    JSON,
    as_dict,
    as_dicts,
    as_num,
    as_str,
    codings,
    concept_name,
    concept_texts,
    ref_id,
)
from cds.clinical.units import Strength, dose_unit, per_unit

if TYPE_CHECKING:
    from cds.clinical.drugspec import Comedication, InteractionClass
    from cds.clinical.terminology import Product, Terminology, ValueSet

Coding = tuple[str, str, str]


@dataclass
class MedicationConcept:
    """The medication an order or statement names, with what its Medication adds."""

    present: bool = False  # the resource names a medication at all
    codings: list[Coding] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    ingredient_codings: list[Coding] = field(default_factory=list)
    ingredient_texts: list[str] = field(default_factory=list)
    form_kind: str = "unknown"  # from the Medication's dose form
    strength: Strength | None = None  # from the Medication's ingredient
    name: str | None = None
    unresolved_reference: str | None = None  # a Medication reference we could not follow


def _form_of(medication: JSON) -> Any:
    return medication.get("form") or medication.get("doseForm")


def medication_form_kind(medication: JSON, valuesets: dict[str, ValueSet]) -> str:
    """oral / intrathecal / unknown from a Medication's dose form (codes, then words).

    Intrathecal/injectable is checked first so "intrathecal solution" is never read as an
    oral solution.
    """
    form = _form_of(medication)
    items = codings(form)
    texts = concept_texts(form)
    for kind, vs_id in (("intrathecal", "doseform-intrathecal"), ("oral", "doseform-oral")):
        vs = valuesets[vs_id]
        if vs.match_codings(items) or vs.match_text(texts):
            return kind
    return "unknown"


def text_form_kind(texts: list[str], valuesets: dict[str, ValueSet]) -> str:
    """oral / intrathecal / unknown from the words of a medication's name."""
    for kind, vs_id in (("intrathecal", "doseform-intrathecal"), ("oral", "doseform-oral")):
        if valuesets[vs_id].match_text(texts):
            return kind
    return "unknown"


def _ingredient_item(ing: JSON) -> Any:
    item = ing.get("itemCodeableConcept")
    if item is None:
        r5 = as_dict(ing.get("item"))
        if r5 is not None:
            item = r5.get("concept") or r5
    return item


def _ratio_strength(ratio: Any) -> Strength | None:
    r = as_dict(ratio)
    if r is None:
        return None
    num = as_dict(r.get("numerator"))
    if num is None:
        # R5 strengthQuantity: an amount per unit of presentation
        if "value" in r:
            num, den = r, None
        else:
            return None
    else:
        den = as_dict(r.get("denominator"))
    amount = as_num(num.get("value"))
    unit = dose_unit(num)
    if amount is None or amount <= 0 or unit is None or unit[0] != "mass":
        return None
    per_value = 1.0 if den is None else as_num(den.get("value"))
    if den is not None and "value" not in den:
        per_value = 1.0
    per = per_unit(den)
    if per_value is None or per_value <= 0 or per is None:
        return None
    return Strength(amount, unit[1], per_value, per)


def medication_strength(
    medication: JSON, valuesets: dict[str, ValueSet], identity: str | None
) -> Strength | None:
    """The drug's strength in a Medication (the ingredient the ``identity`` ValueSet names,
    or the only ingredient)."""
    ingredients = as_dicts(medication.get("ingredient"))
    if not ingredients:
        return None
    drug = valuesets.get(identity) if identity else None
    chosen = None
    for ing in ingredients:
        item = _ingredient_item(ing)
        if drug is not None and (
            drug.match_codings(codings(item)) or drug.match_text(concept_texts(item))
        ):
            chosen = ing
            break
    if chosen is None:
        if len(ingredients) != 1:
            return None
        chosen = ingredients[0]
    for key in ("strength", "strengthRatio", "strengthQuantity", "amount"):
        if key in chosen:
            return _ratio_strength(chosen[key])
    return None


def resolve_medication(
    resource: JSON, medications: dict[str, JSON], term: Terminology, identity: str | None
) -> MedicationConcept:
    """Follow whichever medication spelling the resource uses (see module docstring)."""
    out = MedicationConcept()
    concept: Any = resource.get("medicationCodeableConcept")
    reference: Any = resource.get("medicationReference")
    r5 = as_dict(resource.get("medication"))
    if r5 is not None:
        if "concept" in r5 or "reference" in r5:
            concept = concept or r5.get("concept")
            reference = reference or r5.get("reference")
        elif "reference" in r5 or "coding" in r5 or "text" in r5:
            concept = concept or r5
    concept = as_dict(concept)
    reference = as_dict(reference)
    if concept is not None:
        out.codings = codings(concept)
        out.texts = concept_texts(concept)
        out.present = bool(out.codings or out.texts)
    med: JSON | None = None
    if reference is not None:
        display = as_str(reference.get("display"))
        if display:
            out.texts.append(display)
            out.present = True
        target = ref_id(reference, "Medication")
        if target is not None:
            out.present = True
            if target.startswith("#"):
                for c in as_dicts(resource.get("contained")):
                    if as_str(c.get("id")) == target[1:] and c.get("resourceType") == "Medication":
                        med = c
                        break
            else:
                med = medications.get(target)
            if med is None:
                out.unresolved_reference = target
    if med is not None:
        code = med.get("code")
        out.codings.extend(codings(code))
        out.texts.extend(concept_texts(code))
        for ing in as_dicts(med.get("ingredient")):
            item = _ingredient_item(ing)
            out.ingredient_codings.extend(codings(item))
            out.ingredient_texts.extend(concept_texts(item))
        out.form_kind = medication_form_kind(med, term.valuesets)
        out.strength = medication_strength(med, term.valuesets, identity)
        out.name = out.name or concept_name(code)
    out.name = (concept_name(concept) if concept else None) or out.name
    if out.name is None and out.texts:
        out.name = out.texts[0]
    if out.name is None and out.codings:
        out.name = out.codings[0][1]
    return out


def code_hits(med: MedicationConcept, term: Terminology) -> frozenset[str]:
    """ValueSets the medication's codes (product or ingredient) belong to."""
    return term.code_hits(med.codings + med.ingredient_codings)


def text_hits(med: MedicationConcept, term: Terminology) -> frozenset[str]:
    """ValueSets whose words appear in the medication's texts (product or ingredient)."""
    return term.text_hits(med.texts + med.ingredient_texts)


def drug_identity(
    med: MedicationConcept, term: Terminology, identities: Sequence[str]
) -> str | None:
    """ "code" when a code says the drug (any of its ``identities`` ValueSets), "name" when
    only the words do, else None."""
    if set(identities) & code_hits(med, term):
        return "code"
    if set(identities) & text_hits(med, term):
        return "name"
    return None


def product_of(med: MedicationConcept, term: Terminology) -> Product | None:
    """The product-table row for any of the medication's codes."""
    for system, code, _ in med.codings:
        product = term.products.get((system, code))
        if product is not None:
            return product
    return None


def product_kind(med: MedicationConcept, product: Product | None, term: Terminology) -> str:
    """oral / intrathecal / unknown: product table, then Medication form, then words."""
    if product is not None and product.form_kind != "unknown":
        return product.form_kind
    if med.form_kind != "unknown":
        return med.form_kind
    return text_form_kind(med.texts, term.valuesets)


def drug_classes(
    med: MedicationConcept, term: Terminology, classes: Sequence[InteractionClass]
) -> set[str]:
    """The interacting classes of another drug: by code; by name only if no code hit."""
    codes = code_hits(med, term)
    found = {c.name for c in classes if codes & set(c.valuesets)}
    if found:
        return found
    words = text_hits(med, term)
    return {c.name for c in classes if words & set(c.valuesets)}


def comedication_flags(
    med: MedicationConcept,
    term: Terminology,
    comeds: Sequence[Comedication],
    class_vs: frozenset[str],
) -> set[str]:
    """Which co-medication sets (an anticonvulsant on the list, the CNS-active drugs) a drug
    belongs to: by code; by words only when no class code could decide (a drug coded in one
    interacting class stays out of another set its words alone might name)."""
    codes = code_hits(med, term)
    out = {c.name for c in comeds if codes & set(c.valuesets)}
    if not (codes & class_vs):
        words = text_hits(med, term)
        out |= {c.name for c in comeds if words & set(c.valuesets)}
    return out
