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

    # suggested amounts are multiples of this (route unit); None: the amounts the products
    # of the ordered family and kind can give
    rounding: float | None = 2.5
    unit_fractions: tuple[float, ...] = (1.0, 0.5)  # whole or half units of a solid form
    liquid_step_ml: float = 0.5
    max_units: float | None = None  # units of presentation per administration
    switch_within: str = "form"  # "form": same dose form; "family": same family and kind
    scored_halves_only: bool = False  # fractions of a unit only for a scored product
    prefer: str = "largest_strength"  # or "fewest_units" when another product is named


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

    def _fraction(self, product: object | None) -> float:
        smallest = min(self.policy.unit_fractions)
        if self.policy.scored_halves_only and getattr(product, "scored", None) is not True:
            return max(1.0, smallest)
        return smallest

    def can_give(
        self, amount: float, per_unit: float, liquid: bool, product: object | None = None
    ) -> bool:
        if amount <= EPS:
            return False
        if liquid:
            return _is_multiple(amount / per_unit, self.policy.liquid_step_ml)
        units = amount / per_unit
        if self.policy.max_units is not None and units > self.policy.max_units + EPS:
            return False
        return _is_multiple(units, self._fraction(product))

    def _options(
        self, product: object | None, family: str | None, liquid: bool, route_unit: str
    ) -> list[tuple[float, object]]:
        """Other products a switch may name, with their amount per unit (or per mL)."""
        form = getattr(product, "form", None)
        kind = getattr(product, "form_kind", None)
        fam = getattr(product, "family", None) or family
        options = []
        for p in self.products:
            if p is product or getattr(p, "strength", None) is None:
                continue
            if self.policy.switch_within == "family":
                if (getattr(p, "family", None) or None) != (fam or None):
                    continue
            else:
                if form and getattr(p, "form", None) != form:
                    continue
                if kind and getattr(p, "form_kind", None) != kind:
                    continue
            got = _per_unit(p.strength, route_unit)  # type: ignore[attr-defined]
            if got is None or got[1] != liquid:
                continue
            options.append((got[0], p))
        return options

    def choose(
        self,
        *,
        product: object | None,
        strength: Strength | None,
        route_unit: str,
        amounts: Sequence[float],
        family: str | None = None,
    ) -> Dispensed | None:
        """The ordered product if it can give every amount, else another product that can
        (same dose form, or same family and kind, per the policy; the largest strength, or
        the fewest units); ``None`` when none can. An order whose strength is unknown (an
        ingredient written in mg) is not judged: the pharmacy picks."""
        ordered = _per_unit(strength, route_unit)
        if ordered is None:
            return Dispensed()
        per_unit, liquid = ordered
        if all(self.can_give(a, per_unit, liquid, product) for a in amounts):
            return Dispensed(product=product, switched=False, per_unit=per_unit, liquid=liquid)
        options = self._options(product, family, liquid, route_unit)
        if self.policy.prefer == "fewest_units":
            # fewest units a dose (a part unit counts as one), whole units before split
            # ones, then the largest strength
            def key(o: tuple[float, object]) -> tuple[float, bool, float]:
                units = [a / o[0] for a in amounts]
                split = any(abs(u - round(u)) > 1e-6 for u in units)
                return (sum(math.ceil(u - 1e-6) for u in units), split, -o[0])

            options.sort(key=key)
        else:
            options.sort(key=lambda o: -o[0])
        for amount, p in options:
            if all(self.can_give(a, amount, liquid, p) for a in amounts):
                return Dispensed(product=p, switched=True, per_unit=amount, liquid=liquid)
        return None

    def floor_amount(
        self,
        x: float,
        *,
        product: object | None = None,
        strength: Strength | None = None,
        family: str | None = None,
        route_unit: str = "mg",
    ) -> float:
        """The largest dispensable amount not above ``x``: a multiple of the policy's
        rounding, or (no rounding) an amount one product of the ordered family and kind
        can give (units x strength within the fractions and the unit cap; liquids by step)."""
        if self.policy.rounding is not None:
            return self.round_down(x)
        ordered = _per_unit(strength, route_unit)
        liquid = ordered[1] if ordered is not None else False
        candidates = [(ordered[0], product)] if ordered is not None else []
        candidates += self._options(product, family, liquid, route_unit)
        best = 0.0
        for per_unit, p in candidates:
            if per_unit <= 0:
                continue
            step = per_unit * (self.policy.liquid_step_ml if liquid else self._fraction(p))
            n = math.floor(x / step + EPS)
            if not liquid and self.policy.max_units is not None:
                n = min(n, math.floor(self.policy.max_units * per_unit / step + EPS))
            if n >= 1:
                best = max(best, n * step)
        return best

    def round_down(self, x: float) -> float:
        """``x`` rounded down to the policy's multiple (never below 0)."""
        step = self.policy.rounding
        if step is None:
            return self.floor_amount(x)
        return max(0.0, math.floor(x / step + EPS) * step)
