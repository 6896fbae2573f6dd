"""The regimen of the pack's drug before and after signing (part A "Conventions"), and route totals.

Why: every dose rule judges the *regimen after signing*, not the draft alone. Oral orders add
up (a scheduled order plus a PRN is 100 mg/day possible, D5); a renewal replaces the order it
renews; a re-signed stop removes it. This module builds both sides once per request:

- **current** (before signing): the drug's active MedicationRequests and active home-use
  MedicationStatements. A statement that documents an active order (``basedOn``/
  ``derivedFrom`` it) is the same drug and is not counted twice. A draft that stops, cancels
  or holds an order absent from the data stands in for that order (its own dose is what was
  being taken), so a stop is still seen when the medication list was not sent.
- **after**: the current records minus every order a draft replaces (same id or the draft's
  ``priorPrescription``) and the statements based on them, plus the drafts that are not
  stopped/cancelled/held.

Intrathecal boluses are one-off doses: they keep their own ``bolus_ug`` and never enter the
regimen totals, which for an intrathecal drug are the pump's daily dose.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from cds.clinical.orders import STOP_STATUSES, MedRecord

_REL_TOL = 1e-9


@dataclass
class Regimen:
    before: list[MedRecord]  # every non-draft record of the drug (any status), deduplicated
    drafts: list[MedRecord]  # the drug's drafts in this request
    current: list[MedRecord] = field(default_factory=list)
    after: list[MedRecord] = field(default_factory=list)
    stand_ins: list[MedRecord] = field(default_factory=list)
    replaced: set[str] = field(default_factory=set)
    # per-route sums, computed once per request by the order facts (cds.clinical.order_facts)
    views: dict[str, object] = field(default_factory=dict, repr=False, compare=False)

    @property
    def history(self) -> list[MedRecord]:
        """Records that say what the patient took (for look-backs): before + stand-ins."""
        return [r for r in self.before if r.status not in ("entered-in-error", "draft")] + (
            self.stand_ins
        )


def build_regimen(before: list[MedRecord], drafts: list[MedRecord]) -> Regimen:
    reg = Regimen(before=before, drafts=drafts)
    active_requests = [r for r in before if r.kind == "request" and r.status == "active"]
    active_ids = {r.id for r in active_requests if r.id}
    statements = [
        r
        for r in before
        if r.kind == "statement" and r.status == "active" and not (r.based_on & active_ids)
    ]
    known_ids = {r.id for r in before if r.kind == "request" and r.id}
    for d in drafts:
        targets = {t for t in (d.id, d.prior_id) if t}
        if d.status in STOP_STATUSES and not (targets & known_ids):
            reg.stand_ins.append(dataclasses.replace(d, status="active", is_draft=False))
        reg.replaced |= targets
    # An order on hold that a draft resumes (or replaces) is the regimen being resumed:
    # the change is judged against it (a resume at the same dose is no change, a cut is a
    # step-down), and it makes no "new start". A hold nobody touches stays out of the
    # regimen: the patient is not taking it (Conventions: on-hold orders feed A6).
    resumed = [
        r for r in before if r.kind == "request" and r.status == "on-hold" and r.id in reg.replaced
    ]
    reg.current = active_requests + resumed + statements + reg.stand_ins
    reg.after = [
        r
        for r in reg.current
        if not (r.kind == "request" and r.id in reg.replaced)
        and not (r.kind == "statement" and r.based_on & reg.replaced)
    ] + [d for d in drafts if d.contributes]
    return reg


@dataclass
class RouteTotals:
    """Sums over one route's records; ``complete`` is False when a dose was unknown."""

    records: list[MedRecord]
    daily: float = 0.0
    first_daily: float = 0.0
    admin_per_day: float | None = None
    complete: bool = True


def totals(records: list[MedRecord], route: str) -> RouteTotals:
    """Highest-step and first-step totals of the records by ``route`` (boluses excluded)."""
    chosen = [r for r in records if r.route == route and r.dose is not None and not r.is_bolus]
    out = RouteTotals(records=chosen)
    admins = []
    for r in chosen:
        assert r.dose is not None
        if r.dose.daily is None or r.dose.first_step_daily is None:
            out.complete = False
        out.daily += r.dose.daily or 0.0
        out.first_daily += r.dose.first_step_daily or 0.0
        if r.dose.admin_per_day is not None:
            admins.append(r.dose.admin_per_day)
    out.admin_per_day = sum(admins) if admins else None
    return out


def daily_at(records: list[MedRecord], when: datetime) -> tuple[float, bool]:
    """Sum of each record's step in effect at ``when``; (total, complete)."""
    total, complete = 0.0, True
    for r in records:
        value = r.dose.daily_at(when) if r.dose is not None else None
        if value is None:
            complete = False
        else:
            total += value
    return total, complete


def compare(after: float, prior: float) -> Literal["same", "increase", "decrease"]:
    """ "same", "increase" or "decrease" with a relative tolerance for float noise."""
    if abs(after - prior) <= _REL_TOL * max(abs(after), abs(prior), 1.0):
        return "same"
    return "increase" if after > prior else "decrease"
