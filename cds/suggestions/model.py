"""What a suggestion is: a corrected regimen, a taper, and the card suggestion built from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

EPS = 1e-9


@dataclass(frozen=True)
class Dispensed:
    """Per-administration amounts a product can give, and which product that is.

    ``product`` is the product-table row to name when the ordered product cannot give the
    amounts (``switched``); ``per_unit`` is the amount (route unit) in one unit of
    presentation, or in one mL for a liquid (``liquid``), of the product used.
    """

    product: Any = None  # terminology.Product
    switched: bool = False
    per_unit: float | None = None
    liquid: bool = False


@dataclass(frozen=True)
class DosePlan:
    """A corrected regimen for one order: per-administration dose x administrations."""

    per_admin: float  # route unit (mg oral)
    admin_per_day: int
    start: datetime | None = None  # titration: when the new dose may begin
    reasons: tuple[str, ...] = ()
    dispensed: Dispensed | None = None
    when: str | None = None  # timing.repeat.when (CV: with the evening meal)

    @property
    def daily(self) -> float:
        return self.per_admin * self.admin_per_day


@dataclass(frozen=True)
class TaperStep:
    per_admin: float
    admin_per_day: float  # 0.5: every other day
    start: datetime
    end: datetime | None  # None: the open-ended target


@dataclass(frozen=True)
class Suggestion:
    """One suggestion of a card: label, and the actions (FHIR) it carries.

    ``categories`` are the card categories the fix answers: after accepting it, none of
    them may still show a card above info on the order (Conventions, "No alert loops").
    """

    label: str
    actions: tuple[dict[str, Any], ...]
    recommended: bool
    kind: str  # dose, taper, continue, remove
    rule_ids: tuple[str, ...]
    categories: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
