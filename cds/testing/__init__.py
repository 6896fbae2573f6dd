"""The public testing kit for rule authors (documented in ``rules/README.md``).

- ``cds.testing.strategies``: hypothesis strategies for valid FHIR R4 resources and whole
  CDS Hooks requests (``hook_requests``), and the ``ci``/``deep`` settings profiles;
- ``cds.testing.formulary``: what the strategies generate for a pack's drug, read from the
  pack (``PackDrug``: products, ingredient, routes, interacting classes, problems);
- ``cds.testing.invariants``: the invariants every pack must keep (``check_*``), the card
  normaliser (``card_key``) and the property runner behind ``cds rules test --properties``
  (split by job: ``evaluation``, ``compare``, ``rewrites``, ``fhirserver``, ``checks``,
  ``describe``, ``runner``);
- ``cds.testing.vignettes``: clinical vignettes (``cds rules test``);
- ``cds.testing.builders``: compact builders of FHIR resources and requests.

Names are imported lazily: ``import cds.testing`` stays cheap (the vignette runner and
the CLI import it), and hypothesis or the web app load only when used.
"""

from __future__ import annotations

import importlib
from typing import Any

_STRATEGIES = (
    "DEFAULT_NOW", "active_settings", "conditions", "creatinines", "crcl_measured",
    "dosages", "dose_quantities", "drug_of", "drug_requests", "drug_statements", "egfrs",
    "encounters", "hook_requests", "interacting_requests", "patient_data", "patients",
    "tapers", "timings", "vitals",
)  # fmt: skip
_FORMULARY = ("KitProduct", "PackDrug", "drug_in", "pack_drug")
_INVARIANTS = (
    "INVARIANTS", "InvariantViolation", "card_key", "card_keys", "check_determinism",
    "check_dose_monotonicity", "check_interaction_monotonicity", "check_order_independence",
    "check_prefetch_equivalence", "check_renal_monotonicity", "check_suggestions_safe",
    "check_unit_invariance", "check_valid_cards", "describe_request", "registry_for",
    "run_properties", "run_property", "run_request",
)  # fmt: skip
_VIGNETTES = ("load_vignettes", "run_vignette")
_EXPORTS: dict[str, str] = {
    **{n: "cds.testing.strategies" for n in _STRATEGIES},
    **{n: "cds.testing.invariants" for n in _INVARIANTS},
    **{n: "cds.testing.vignettes" for n in _VIGNETTES},
    **{n: "cds.testing.formulary" for n in _FORMULARY},
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cds.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
