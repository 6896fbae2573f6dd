"""Fixes as real FHIR: one planner per suggestion kind, a dose chooser, and rendering.

- ``dose``: the one corrected dose every fired dose rule allows (A3-A5);
- ``taper``: reverse titration from the dose taken now (A6);
- ``dispense``: which amounts a product can give, and which product to name when the
  ordered one cannot (A5 "dispensable");
- ``render``: the corrected MedicationRequest, the taper, "continue", and their labels.

Pure functions of facts and findings; the re-check that every suggestion passes before it
is offered (no alert loops) is ``cds.hooks.recheck``.
"""

from cds.suggestions.dispense import Dispenser, DispensingPolicy
from cds.suggestions.dose import dose_plan, ordered_admins
from cds.suggestions.model import Dispensed, DosePlan, Suggestion, TaperStep
from cds.suggestions.render import (
    continue_resource,
    dose_resource,
    dose_words,
    fmt_dose,
    freq_words,
    product_note,
    supplement_resource,
    taper_resource,
)
from cds.suggestions.taper import describe_taper, taper_for, taper_steps

__all__ = [
    "Dispensed",
    "Dispenser",
    "DispensingPolicy",
    "DosePlan",
    "Suggestion",
    "TaperStep",
    "continue_resource",
    "supplement_resource",
    "describe_taper",
    "dose_plan",
    "dose_resource",
    "dose_words",
    "fmt_dose",
    "freq_words",
    "ordered_admins",
    "product_note",
    "taper_for",
    "taper_resource",
    "taper_steps",
]
