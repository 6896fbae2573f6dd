"""The invariants every rule pack must keep, each a plain function.

Each ``check_*`` function takes a request (CDS Hooks JSON), the packs (a
``PackRegistry``, a ``CompiledPack`` or a list of them) and ``now``, and raises
:class:`InvariantViolation` with a readable message naming the request's chart (see
:func:`~cds.testing.describe.describe_request`). Doses are raised, rewritten and
compared on the orders of the packs' own drugs (``cds.testing.formulary``).
"""

from __future__ import annotations

import collections
import copy
import itertools
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from cds.cards import BuiltCard, card_extension, contract_problems
from cds.engine.findings import SEVERITY_RANK
from cds.hooks.pipeline import apply_action, evaluate
from cds.hooks.recheck import accepted, edited_orders
from cds.testing import strategies as strat
from cds.testing.compare import card_key, outcome_diff, show_key
from cds.testing.describe import describe_request
from cds.testing.evaluation import Outcome, Packs, call_app, drugs_of, pack_list, quiet, run_request
from cds.testing.fhirserver import FHIR_SERVER, PrefetchServer, with_server
from cds.testing.formulary import Concept
from cds.testing.rewrites import (
    UNIT_REWRITES,
    add_interacting_drug,
    lower_renal_function,
    raise_doses,
    shuffled,
)

JSON = dict[str, Any]

__all__ = [
    "DOSE_FACTORS",
    "NO_LOOP_EXERCISED",
    "RENAL_FACTORS",
    "InvariantViolation",
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
]


class InvariantViolation(AssertionError):
    """A pack (or the code under it) broke an invariant for one request.

    ``str()`` is the readable report: the invariant, what differed, and the chart.
    ``request`` is the request itself, to save and replay with ``cds evaluate``.
    """

    def __init__(self, invariant: str, message: str, request: JSON | None = None) -> None:
        self.invariant = invariant
        self.message = message
        self.request = request
        chart = f"\n{describe_request(request)}" if request is not None else ""
        super().__init__(f"[{invariant}] {message}{chart}")


def _required_key_damaged(request: JSON) -> bool:
    """A required key is absent or failed (or, for the Patient, null): a 412 is right."""
    prefetch = request.get("prefetch") or {}
    for key in strat.REQUIRED_PREFETCH_KEYS:
        value = prefetch.get(key, "absent")
        if value == "absent" or (
            isinstance(value, dict) and value.get("resourceType") == "OperationOutcome"
        ):
            return True
    return prefetch.get("patient") is None


def _fhir_problems(resource: Any) -> list[str]:
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return ["action resource is not a FHIR resource"]
    try:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    except (ValidationError, KeyError, ValueError, TypeError) as exc:
        return [f"suggested {resource['resourceType']} fails FHIR R4B: {str(exc)[:300]}"]
    return []


def check_valid_cards(request: JSON, packs: Packs, now: datetime) -> None:
    """The service answers (200; a 412 only when a required prefetch key is missing) and
    every card meets the card contract, with R4B-valid resources in its suggestions and
    never two cards for the same rule and order."""
    name = "valid cards"
    with quiet():
        status, body = call_app(request, packs, now)
    if status != 200:
        if status == 412 and _required_key_damaged(request):
            return
        diag = body if isinstance(body, str) else json.dumps(body)[:400]
        raise InvariantViolation(name, f"HTTP {status} for a valid request: {diag}", request)
    if not isinstance(body, dict) or not isinstance(body.get("cards"), list):
        raise InvariantViolation(name, f"response is not {{'cards': [...]}}: {body!r}", request)
    problems: list[str] = []
    seen_uuids: set[str] = set()
    seen_rules: set[tuple[str, str]] = set()
    for card in body["cards"]:
        what = f"card {card.get('summary', '?')!r}"
        problems += [f"{what}: {p}" for p in contract_problems(card)]
        for s in card.get("suggestions") or []:
            for a in s.get("actions") or []:
                if "resource" in a:
                    problems += [f"{what}: {p}" for p in _fhir_problems(a["resource"])]
        ids = [card.get("uuid")] + [s.get("uuid") for s in card.get("suggestions") or []]
        for u in ids:
            if u in seen_uuids:
                problems.append(f"{what}: uuid {u} used twice")
            seen_uuids.add(str(u))
        ext = card_extension(card)
        for rule in ext.get("ruleIds") or []:
            pair = (str(ext.get("orderId", "")), rule)
            if pair in seen_rules:
                problems.append(f"{what}: rule {rule} on order {pair[0]} in two cards")
            seen_rules.add(pair)
    if problems:
        raise InvariantViolation(name, "\n".join(problems), request)


def check_determinism(request: JSON, packs: Packs, now: datetime) -> None:
    """Twice the same request at the same instant: the same cards; the request unedited."""
    name = "determinism"
    before = copy.deepcopy(request)
    with quiet():
        first = run_request(request, packs, now)
        if request != before:
            raise InvariantViolation(name, "evaluating the request edited it", before)
        second = run_request(request, packs, now)
    diff = outcome_diff(first, second, "first run", "second run")
    if diff:
        raise InvariantViolation(name, diff, request)


def check_prefetch_equivalence(
    request: JSON, packs: Packs, now: datetime, *, fetch_keys: Iterable[str] | None = None
) -> None:
    """The same data as prefetch or fetched from the FHIR server: the same cards.

    The server is an ``httpx.MockTransport`` serving, for each of the service's prefetch
    queries, exactly what the request prefetched (see :class:`PrefetchServer`); the real
    fallback against a real FHIR server is covered by ``tests/hooks``. ``fetch_keys``: the
    keys to remove from the prefetch and fetch instead (default: all of them).
    """
    name = "prefetch = fetched"
    server = PrefetchServer(request, now, packs)
    keys = list(fetch_keys) if fetch_keys is not None else list(strat.PREFETCH_KEYS)
    with quiet():
        given = run_request(
            with_server(request), packs, now, client=server.client(), allowlist=[FHIR_SERVER]
        )
        fetched = run_request(
            with_server(request, drop=keys),
            packs,
            now,
            client=server.client(),
            allowlist=[FHIR_SERVER],
        )
    diff = outcome_diff(given, fetched, "prefetched", f"fetched {', '.join(sorted(keys))}")
    if diff:
        raise InvariantViolation(name, diff, request)


def check_unit_invariance(request: JSON, packs: Packs, now: datetime) -> None:
    """Doses in mg vs ug/mcg, creatinine in mg/dL vs umol/L, schedules as code vs repeat:
    each rewrite of the request gives the same cards."""
    name = "unit invariance"
    drugs = drugs_of(packs)
    with quiet():
        base = run_request(request, packs, now)
        for what, rewrite in UNIT_REWRITES:
            other = rewrite(request, drugs)
            if other == request:
                continue
            diff = outcome_diff(base, run_request(other, packs, now), "as written", what)
            if diff:
                raise InvariantViolation(name, diff, request)


def _by_order(out: Outcome, category: str) -> dict[str, int]:
    ranks: dict[str, int] = {}
    for c in out.cards:
        if c.category == category:
            ranks[c.order_id] = max(ranks.get(c.order_id, 0), SEVERITY_RANK[c.card["indicator"]])
    return ranks


def _monotone(name: str, request: JSON, steps: list[tuple[str, Outcome]], category: str) -> None:
    """Along a ladder of ever stronger changes, no card of ``category`` is lost or lowered."""
    names = {v: k for k, v in SEVERITY_RANK.items()}
    for (what_b, before), (what_a, after) in itertools.pairwise(steps):
        if before.status != 200 or after.status != 200:
            continue
        b, a = _by_order(before, category), _by_order(after, category)
        for order, rank in b.items():
            if a.get(order, 0) < rank:
                lost = names.get(a.get(order, 0), "no card")
                raise InvariantViolation(
                    name,
                    f"{what_b} -> {what_a}: the {category} card on {order} went from "
                    f"{names[rank]} to {lost}\n"
                    + (outcome_diff(before, after, what_b, what_a) or ""),
                    request,
                )


DOSE_FACTORS = (1.25, 1.5, 2.0, 3.0, 4.0)
RENAL_FACTORS = (1.25, 1.5, 2.0, 3.0, 5.0)


def check_dose_monotonicity(
    request: JSON, packs: Packs, now: datetime, *, factors: Sequence[float] = DOSE_FACTORS
) -> None:
    """Every dose of the packs' drugs times each of ``factors`` (a ladder of raises, each
    > 1): no step loses a dose-ceiling card or lowers its severity."""
    drugs = drugs_of(packs)
    with quiet():
        steps = [("as written", run_request(request, packs, now))]
        for f in sorted(factors):
            raised = raise_doses(request, f, drugs)
            steps.append((f"doses x {f:g}", run_request(raised, packs, now)))
    _monotone("monotonic in dose", request, steps, "dose-ceiling")


def check_renal_monotonicity(
    request: JSON, packs: Packs, now: datetime, *, factors: Sequence[float] = RENAL_FACTORS
) -> None:
    """Creatinine times each of ``factors`` (> 1), eGFR/CrCl divided by it: no step loses
    a renal-adjustment card or lowers its severity. Requests with no renal result are
    skipped, and so are steps that would make a creatinine implausible."""
    with quiet():
        steps = [("as written", run_request(request, packs, now))]
        for f in sorted(factors):
            worse = lower_renal_function(request, f)
            if worse is None:
                break
            steps.append((f"renal function / {f:g}", run_request(worse, packs, now)))
    _monotone("monotonic in renal function", request, steps, "renal-adjustment")


def _identity(c: BuiltCard) -> tuple[str, str, str]:
    return c.order_id, c.category, c.group


def check_interaction_monotonicity(
    request: JSON, packs: Packs, now: datetime, *, drug: str | Concept | None = None
) -> None:
    """Adding an order for an interacting ``drug`` removes no card (by order, category and
    interacting class), unless an interaction card on that order, at least as severe, now
    carries it (a reason that moves into the interaction card).

    ``drug``: a Concept (the property runner samples one from each of the pack's
    interacting-class ValueSets), a name ``builders.medication_concept`` knows, or None
    for the first drug of the first pack's first class."""
    name = "monotonic in interactions"
    if drug is None:
        concepts = [c for d in drugs_of(packs) for c in d.interacting()]
        if not concepts:
            return  # a pack with no interacting class: nothing to add
        drug = concepts[0]
    what = drug if isinstance(drug, str) else f"{drug.display} ({drug.code})"
    with quiet():
        before = run_request(request, packs, now)
        after = run_request(add_interacting_drug(request, drug), packs, now)
    if before.status != 200 or after.status != 200:
        return
    kept = {_identity(c) for c in after.cards}
    # A reason the interaction card now carries is not lost: a side-effect rule that holds
    # only with no CNS depressant in the regimen (A7, chronic lung disease) gives
    # way to the interaction card on the same order, at least as severe, which names it.
    carried = {
        c.order_id: SEVERITY_RANK[c.card["indicator"]]
        for c in sorted(after.cards, key=lambda c: SEVERITY_RANK[c.card["indicator"]])
        if c.category == "interaction"
    }
    lost = [
        c
        for c in before.cards
        if _identity(c) not in kept
        and not (
            c.category != "interaction"
            and carried.get(c.order_id, 0) >= SEVERITY_RANK[c.card["indicator"]]
        )
    ]
    if lost:
        raise InvariantViolation(
            name,
            f"adding {what} removed: " + "; ".join(show_key(card_key(c)) for c in lost),
            request,
        )


def check_suggestions_safe(request: JSON, packs: Packs, now: datetime) -> None:
    """Accepting any suggestion (all its actions, as ``apply_action`` does) and evaluating
    again fires none of the rules behind it, and gives no card of the same category at a
    higher severity on that order.

    Checked on the suggestions the *pack* makes, before the pipeline's own re-check drops
    unsafe ones (``evaluate(recheck=False)``): in production an unsafe suggestion is not
    an alert loop but a card that silently lost its fix, which the author must still know.
    """
    name = "safe suggestions"
    plist = pack_list(packs)
    with quiet():
        out = run_request(request, plist, now, recheck=False)
        if out.status != 200 or out.hook_input is None:
            return
        for card in out.cards:
            for s in card.suggestions:
                trial = out.hook_input
                for action in s.actions:
                    trial = apply_action(trial, action)
                if trial.hook == "patient-view":
                    trial = replace(trial, hook="order-sign")
                after = evaluate(trial, plist, now=now, recheck=False)
                rank = SEVERITY_RANK[card.card["indicator"]]
                edited = set(edited_orders(s, card.order_id))
                mine = [f for f in after.findings if f.order_id in edited]
                refired = sorted({f.rule_id for f in mine if f.rule_id in s.rule_ids})
                worse = sorted(
                    {
                        f"{f.rule_id} ({f.severity})"
                        for f in mine
                        if f.category == card.category and f.rank > rank
                    }
                )
                if refired or worse:
                    raise InvariantViolation(
                        name,
                        f"accepting '{s.label}' on the {card.category} {card.card['indicator']}"
                        f" card of {card.order_id}"
                        + (f" fires its own rules again: {', '.join(refired)}" if refired else "")
                        + (f"; raises {card.category}: {', '.join(worse)}" if worse else ""),
                        request,
                    )


# Categories whose offered suggestions ``check_no_alert_loops`` accepted (a test reads it to
# prove the generated requests exercised every category, so the property cannot pass empty).
NO_LOOP_EXERCISED: collections.Counter[str] = collections.Counter()


def check_no_alert_loops(request: JSON, packs: Packs, now: datetime) -> None:
    """Accepting any suggestion the service offers (all its actions) and evaluating again
    leaves, on that order, no card above info in the card's category, and no card above info
    that was not there before (or was less severe): "no alert loops", every category.

    Checked on what production offers (the re-check and its repairs included), at the level
    of the cards an EHR would show; cards the fix has nothing to do with (an interaction
    beside a renal fix) may stay. A removed duplicate order is judged on every order.
    """
    name = "no alert loops"
    plist = pack_list(packs)
    with quiet():
        out = run_request(request, plist, now)
        if out.status != 200 or out.hook_input is None:
            return
        for card in out.cards:
            for s in card.suggestions:
                removes = any(a.get("type") == "delete" for a in s.actions)
                # the card's order and every other order the fix edits (a taper of several)
                scope = None if removes else set(edited_orders(s, card.order_id))
                was: dict[tuple[str, str, str], int] = {}
                for c in out.cards:
                    if scope is None or c.order_id in scope:
                        key = (c.order_id if scope else "", c.category, c.group)
                        was[key] = max(was.get(key, 0), SEVERITY_RANK[c.card["indicator"]])
                after = evaluate(accepted(out.hook_input, s), plist, now=now)
                NO_LOOP_EXERCISED[card.category] += 1
                bad = []
                for c in after.cards:
                    rank = SEVERITY_RANK[c.card["indicator"]]
                    if rank <= SEVERITY_RANK["info"] or (
                        scope is not None and c.order_id not in scope
                    ):
                        continue
                    key = (c.order_id if scope else "", c.category, c.group)
                    if c.category == card.category and (
                        c.order_id == card.order_id or (scope is not None and c.order_id in scope)
                    ):
                        bad.append(
                            f"{c.category} {c.card['indicator']} remains on {c.order_id} "
                            f"({c.card['summary']})"
                        )
                    elif rank > was.get(key, 0):
                        bad.append(
                            f"{c.category} {c.card['indicator']} appears on {c.order_id} "
                            f"({c.card['summary']})"
                        )
                if bad:
                    raise InvariantViolation(
                        name,
                        f"accepting '{s.label}' on the {card.category} {card.card['indicator']} "
                        f"card of {card.order_id}: " + "; ".join(bad),
                        request,
                    )


def check_order_independence(request: JSON, packs: Packs, now: datetime, *, seed: int = 0) -> None:
    """Prefetch Bundle entries and draft orders shuffled (``random.Random(seed)``): the
    same cards."""
    name = "order independence"
    with quiet():
        base = run_request(request, packs, now)
        other = run_request(shuffled(request, random.Random(seed)), packs, now)
    diff = outcome_diff(base, other, "as sent", f"shuffled (seed {seed})")
    if diff:
        raise InvariantViolation(name, diff, request)
