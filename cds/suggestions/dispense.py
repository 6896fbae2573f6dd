"""The dose chooser: which amounts a product can actually give (A5 "dispensable").

Why: a suggestion a pharmacy cannot fill is not a fix. "2.5 mg three times daily" on a 20 mg
tablet order is an eighth of a tablet. A pack's dispensing policy says what counts (whole
or half tablets, liquids in 0.5 mL steps, at most N units a dose); when the ordered product
cannot give an amount, the chooser names the product of the same dose form with the largest
strength that can (2.5 mg: half of a 5 mg tablet). Numbers come from the pack; products from
its product table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cds.clinical.units import Strength, convert_mass
from cds.suggestions.model import EPS, Dispensed


@dataclass(frozen=True)
class DispensingPolicy:
    """What a dose must be to be dispensable (from the pack's ``dispensing`` table)."""

    rounding: float = 2.5  # suggested amounts are multiples of this (route unit)
    unit_fractions: tuple[float, ...] = (1.0, 0.5)  # whole or half units of a solid form
    liquid_step_ml: float = 0.5
    max_units: float | None = None  # units of presentation per administration


def _per_unit(strength: Strength | None, target: str) -> tuple[float, bool] | None:
    """(amount per unit or per mL in ``target``, liquid?) of a strength."""
    if strength is None or strength.per_value <= 0:
        return None
    amount = convert_mass(strength.amount / strength.per_value, strength.unit, target)
    return amount, strength.per == "mL"


def _is_multiple(x: float, step: float) -> bool:
    if step <= 0:
        return False
    q = x / step
    return abs(q - round(q)) < 1e-6 and round(q) >= 1


class Dispenser:
    """Chooses a product that can give every amount of a suggestion."""

    def __init__(self, policy: DispensingPolicy, products: Iterable[object]) -> None:
        self.policy = policy
        self.products = list(products)

    def can_give(self, amount: float, per_unit: float, liquid: bool) -> bool:
        if amount <= EPS:
            return False
        if liquid:
            return _is_multiple(amount / per_unit, self.policy.liquid_step_ml)
        units = amount / per_unit
        if self.policy.max_units is not None and units > self.policy.max_units + EPS:
            return False
        smallest = min(self.policy.unit_fractions)
        return _is_multiple(units, smallest)

    def choose(
        self,
        *,
        product: object | None,
        strength: Strength | None,
        route_unit: str,
        amounts: Sequence[float],
    ) -> Dispensed | None:
        """The ordered product if it can give every amount, else the same-form product with
        the largest strength that can; ``None`` when none can. An order whose strength is
        unknown (an ingredient written in mg) is not judged: the pharmacy picks."""
        ordered = _per_unit(strength, route_unit)
        if ordered is None:
            return Dispensed()
        per_unit, liquid = ordered
        if all(self.can_give(a, per_unit, liquid) for a in amounts):
            return Dispensed(product=product, switched=False, per_unit=per_unit, liquid=liquid)
        form = getattr(product, "form", None)
        kind = getattr(product, "form_kind", None)
        options = []
        for p in self.products:
            if p is product or getattr(p, "strength", None) is None:
                continue
            if form and getattr(p, "form", None) != form:
                continue
            if kind and getattr(p, "form_kind", None) != kind:
                continue
            got = _per_unit(p.strength, route_unit)  # type: ignore[attr-defined]
            if got is None or got[1] != liquid:
                continue
            options.append((got[0], p))
        for amount, p in sorted(options, key=lambda o: -o[0]):
            if all(self.can_give(a, amount, liquid) for a in amounts):
                return Dispensed(product=p, switched=True, per_unit=amount, liquid=liquid)
        return None

    def round_down(self, x: float) -> float:
        """``x`` rounded down to the policy's multiple (never below 0)."""
        step = self.policy.rounding
        return max(0.0, math.floor(x / step + EPS) * step)
