"""Invariants every rule pack must keep, as plain functions and as a CLI report.

A rule author who edits a pack wants to know, within a minute, what the edit broke. The
vignettes (``cds rules test``) check chosen situations; the invariants here check
*properties* over thousands of generated charts (``cds rules test --properties``):

=============================  =============================================================
invariant                      what it means
=============================  =============================================================
valid cards                    no generated request makes the service fail (5xx, or a 4xx
                               for a valid request), and every card meets the card contract
                               (``cds.cards.contract_problems``) with valid FHIR in its
                               suggestions
determinism                    the same request at the same instant gives the same cards
                               (uuids aside), and evaluating never edits the request
prefetch = fetched             the same data sent as prefetch or read from the FHIR server
                               gives the same cards
unit invariance                a dose in mg or ug/mcg, a creatinine in mg/dL or umol/L
                               (x 88.4), a schedule as ``timing.code`` or ``timing.repeat``:
                               the same cards
monotonic in dose              a higher dose never removes a dose-ceiling card or lowers
                               its severity
monotonic in renal function    worse renal function never removes a renal card or lowers
                               its severity
monotonic in interactions      adding an interacting drug never removes a card
safe suggestions               accepting a suggestion the pack makes (before the service's
                               own re-check) fires none of the rules behind it and raises
                               no card of its category on that order
no alert loops                 accepting any suggestion the service offers leaves no card
                               above info in its category on that order, and raises no new
                               or worse card (every category; production re-check included)
order independence             shuffling prefetch resources or draft orders changes nothing
=============================  =============================================================

The requests are generated for the pack under test: its products, routes, interacting
classes and problems (``cds.testing.formulary``); a run in which no example held an
order of the pack's drug fails.

This module gathers the kit's public names; each job lives in its own module:

- ``cds.testing.evaluation``: running a request as the service does (:func:`run_request`,
  :func:`call_app`, :func:`registry_for`);
- ``cds.testing.compare``: the card normaliser (:func:`card_key`) and differences;
- ``cds.testing.rewrites``: request surgery (doses in ug, creatinine in umol/L, raised
  doses, worse kidneys, an added interacting drug, shuffles);
- ``cds.testing.fhirserver``: a FHIR server serving a request's own prefetch;
- ``cds.testing.checks``: the ``check_*`` functions and :class:`InvariantViolation`;
- ``cds.testing.describe``: a request in readable lines (:func:`describe_request`);
- ``cds.testing.runner``: :data:`INVARIANTS`, :func:`run_property` and the CLI report.

Each ``check_*`` function takes a request (CDS Hooks JSON), the packs (a ``PackRegistry``,
a ``CompiledPack`` or a list of them) and ``now``, and raises :class:`InvariantViolation`
with a readable message naming the request's chart. Use them from your own hypothesis
tests with ``cds.testing.strategies``, or run them all with :func:`run_properties` /
``cds rules test --properties``.

Requests run through the same steps as ``POST /cds-services/{id}`` (request validation,
prefetch resolution, ``cds.hooks.pipeline.evaluate``) in process; the "valid cards"
invariant goes through the real FastAPI app so that a crash shows as the 500 an EHR would
get. Cards are compared with one normaliser, :func:`card_key`: (order id, category,
indicator, sorted rule ids, suggestions without uuids, doses in mg and schedules as
administrations per day).
"""

from __future__ import annotations

from cds.testing.checks import (
    DOSE_FACTORS,
    NO_LOOP_EXERCISED,
    RENAL_FACTORS,
    InvariantViolation,
    check_determinism,
    check_dose_monotonicity,
    check_interaction_monotonicity,
    check_no_alert_loops,
    check_order_independence,
    check_prefetch_equivalence,
    check_renal_monotonicity,
    check_suggestions_safe,
    check_unit_invariance,
    check_valid_cards,
)
from cds.testing.compare import CardKey, card_key, card_keys, outcome_diff, show_key
from cds.testing.describe import describe_request
from cds.testing.evaluation import (
    Outcome,
    Packs,
    call_app,
    drugs_of,
    hook_input,
    pack_list,
    registry_for,
    run_request,
    service_for,
)
from cds.testing.fhirserver import FHIR_SERVER, PrefetchServer, with_server
from cds.testing.rewrites import (
    MAX_CREATININE_MG_DL,
    UNIT_REWRITES,
    add_interacting_drug,
    creatinine_in_other_unit,
    doses_in_micrograms,
    drug_orders,
    lower_renal_function,
    raise_doses,
    shuffled,
    timing_in_other_form,
)
from cds.testing.runner import (
    INVARIANTS,
    SHRINK_SECONDS,
    Invariant,
    PropertyResult,
    pack_profiles,
    run_properties,
    run_properties_cli,
    run_property,
    save_failure,
)

__all__ = [
    "DOSE_FACTORS",
    "FHIR_SERVER",
    "INVARIANTS",
    "MAX_CREATININE_MG_DL",
    "NO_LOOP_EXERCISED",
    "RENAL_FACTORS",
    "SHRINK_SECONDS",
    "UNIT_REWRITES",
    "CardKey",
    "Invariant",
    "InvariantViolation",
    "Outcome",
    "Packs",
    "PrefetchServer",
    "PropertyResult",
    "add_interacting_drug",
    "call_app",
    "card_key",
    "card_keys",
    "check_determinism",
    "check_dose_monotonicity",
    "check_interaction_monotonicity",
    "check_no_alert_loops",
    "check_order_independence",
    "check_prefetch_equivalence",
    "check_renal_monotonicity",
    "check_suggestions_safe",
    "check_unit_invariance",
    "check_valid_cards",
    "creatinine_in_other_unit",
    "describe_request",
    "doses_in_micrograms",
    "drug_orders",
    "drugs_of",
    "hook_input",
    "lower_renal_function",
    "outcome_diff",
    "pack_list",
    "pack_profiles",
    "raise_doses",
    "registry_for",
    "run_properties",
    "run_properties_cli",
    "run_property",
    "run_request",
    "save_failure",
    "service_for",
    "show_key",
    "shuffled",
    "timing_in_other_form",
    "with_server",
]
