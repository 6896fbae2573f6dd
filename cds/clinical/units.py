"""Unit arithmetic for doses, rates and lab values (UCUM plus the common non-UCUM spellings).

Why here and not in a data file: these are definitions of units (1 mg = 1000 ug), not
clinical judgement. Conversions multiply by an exact integer ratio and divide last, so the
same dose written in mg, ug or mcg gives the same number to the last bit or two, and a
conversion is only ever done when the unit is recognised: an unknown unit is a problem for
the caller to report, never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cds.clinical.fhirdata import as_dict, as_num, as_str


@dataclass(frozen=True)
class Strength:
    """Amount of drug per unit of presentation: ``amount`` ``unit`` per ``per_value`` ``per``.

    ``unit`` is a mass unit (g, mg, ug); ``per`` is "mL", "tablet", "packet" or "each"
    (a unit of presentation not named, which serves tablets and packets).
    """

    amount: float
    unit: str
    per_value: float
    per: str


# Mass units in micrograms (exact integers).
_MASS_UG: dict[str, int] = {"g": 1_000_000, "mg": 1_000, "ug": 1}
_MASS_ALIASES = {
    "g": "g", "gram": "g", "grams": "g", "gm": "g",
    "mg": "mg", "milligram": "mg", "milligrams": "mg", "mgs": "mg",
    "ug": "ug", "mcg": "ug", "µg": "ug", "μg": "ug", "microgram": "ug", "micrograms": "ug",
    "mcgs": "ug",
}  # fmt: skip
_VOLUME_ALIASES = {
    "ml": "mL",
    "milliliter": "mL",
    "milliliters": "mL",
    "millilitre": "mL",
    "millilitres": "mL",
    "cc": "mL",
}
# Words for one unit of the product's presentation (A2 "count units"). A UCUM annotation's
# text is free, so ``{pill}``, ``{Tablet}``, ``{tabs}`` and ``{tab(s)}`` are all read by
# dropping the braces, a plural "s" and "(s)"; an annotation that names a mass or a volume
# (``{mg}``) is not a count.
_COUNT_WORDS = {
    "tablet": "tablet", "tab": "tablet", "tbl": "tablet", "tbl.": "tablet", "pill": "tablet",
    "caplet": "tablet", "capsule": "tablet", "cap": "tablet", "packet": "packet",
    "sachet": "packet", "pkt": "packet", "granule packet": "packet",
    "each": "each", "unit of presentation": "each",
}  # fmt: skip
# "each": a unit of presentation not named (a strength denominator of "1" or none).
_EACH_ALIASES = {"1", "{each}", "each", "{unit}", "unit", "{dose}"}

# Time units in seconds (FHIR UnitsOfTime and UCUM; mo and a as UCUM means).
_TIME_S: dict[str, float] = {
    "s": 1, "min": 60, "h": 3600, "d": 86400, "wk": 604800,
    "mo": 2_629_800, "a": 31_557_600,
}  # fmt: skip
_TIME_ALIASES = {
    "s": "s", "sec": "s", "second": "s", "seconds": "s",
    "min": "min", "minute": "min", "minutes": "min",
    "h": "h", "hr": "h", "hrs": "h", "hour": "h", "hours": "h",
    "d": "d", "day": "d", "days": "d", "24.h": "d", "(24.h)": "d", "24h": "d",
    "wk": "wk", "week": "wk", "weeks": "wk",
    "mo": "mo", "month": "mo", "months": "mo",
    "a": "a", "yr": "a", "year": "a", "years": "a",
}  # fmt: skip
# Administrations per day for one administration every 1 <unit>: 86400 / seconds, kept
# exact for the common units so that Q6H (period 6 h) gives exactly 4.
PER_DAY: dict[str, float] = {
    "s": 86400, "min": 1440, "h": 24, "d": 1, "wk": 1 / 7,
    "mo": 86400 / 2_629_800, "a": 86400 / 31_557_600,
}  # fmt: skip


def unit_of(quantity: Any) -> str | None:
    """The unit string of a Quantity: its UCUM ``code`` when given, else its ``unit`` text."""
    q = as_dict(quantity)
    if q is None:
        return None
    return as_str(q.get("code")) or as_str(q.get("unit"))


def _units_of(q: dict[str, Any]) -> list[str]:
    return [u for u in (as_str(q.get("code")), as_str(q.get("unit"))) if u]


def mass_unit(text: str) -> str | None:
    return _MASS_ALIASES.get(text.strip().lower())


def time_unit(text: str) -> str | None:
    return _TIME_ALIASES.get(text.strip().lower())


def count_word(text: str) -> str | None:
    """The unit of presentation a count unit names ("tablet", "packet", "each"), or None."""
    key = text.strip().lower()
    if key.startswith("{") and key.endswith("}"):
        key = key[1:-1].strip()
    key = key.removesuffix("(s)").strip()
    if key in _COUNT_WORDS:
        return _COUNT_WORDS[key]
    if key.endswith("s") and key[:-1] in _COUNT_WORDS:
        return _COUNT_WORDS[key[:-1]]
    return None


def dose_unit(
    quantity: dict[str, Any], presentation_codes: frozenset[tuple[str, str]] = frozenset()
) -> tuple[str, str] | None:
    """Classify a dose Quantity's unit: ("mass", g|mg|ug), ("volume", mL) or ("count", ...).

    The code is tried first, then the unit text (EHRs often send "mcg" only as text). A count
    is one unit of the product's presentation: a UCUM annotation or a word (``{pill}``,
    ``{tablet}``, "tablet(s)", "TAB"), UCUM ``1`` (unity, with or without words), or a coded
    unit of presentation (``presentation_codes``: SNOMED CT 732936001 |Tablet| and the like,
    kept in a ValueSet).
    """
    system = as_str(quantity.get("system"))
    code = as_str(quantity.get("code"))
    if system and code and (system.strip(), code.strip()) in presentation_codes:
        return "count", "each"
    for text in _units_of(quantity):
        key = text.strip().lower()
        if key in _MASS_ALIASES:
            return "mass", _MASS_ALIASES[key]
        if key in _VOLUME_ALIASES:
            return "volume", "mL"
        word = count_word(key)
        if word is not None:
            return "count", word
    if any(u.strip() == "1" for u in _units_of(quantity)):
        return "count", "each"
    return None


def per_unit(quantity: Any) -> str | None:
    """The denominator kind of a strength: mL, tablet, packet or each."""
    q = as_dict(quantity)
    if q is None:
        return "each"
    units = _units_of(q)
    if not units:
        return "each"
    for text in units:
        key = text.strip().lower()
        if key in _VOLUME_ALIASES:
            return "mL"
        if key in _EACH_ALIASES:
            return "each"
        word = count_word(key)
        if word is not None:
            return word
    return None


def convert_mass(value: float, unit: str, target: str) -> float:
    """Exact-ratio mass conversion between g, mg and ug."""
    if unit == target:
        return value
    return value * _MASS_UG[unit] / _MASS_UG[target]


def duration_days(quantity: Any) -> float | None:
    """A time Quantity (value + unit) in days, or None."""
    q = as_dict(quantity)
    if q is None:
        return None
    value = as_num(q.get("value"))
    if value is None or value <= 0:
        return None
    for text in _units_of(q):
        unit = time_unit(text)
        if unit is not None:
            return value / PER_DAY[unit]
    return None


def split_rate_unit(text: str) -> tuple[str, str] | None:
    """Split a rate unit such as "ug/d", "mg/(24.h)", "mcg/day", "mL/h" into (num, per-time).

    Returns the numerator unit text and the canonical time unit, or None.
    """
    if "/" not in text:
        return None
    num, _, den = text.partition("/")
    unit = time_unit(den)
    if unit is None:
        return None
    return num.strip(), unit
