"""Dose normalisation (A2): a list of Dosage elements -> daily doses in one unit.

Why this shape: every dose rule compares a daily total or a single administration in mg
(oral) or ug (intrathecal), while prescribers write mL, tablets, mcg, rates, ranges,
abbreviations and PRN maxima. This module turns one order's ``dosageInstruction`` (or a
statement's ``dosage``) into :class:`OrderDose`: concurrent instructions summed, sequenced
instructions kept as steps, and a reason instead of a number whenever the dose cannot be
known (unknown unit, unknown strength, no frequency). It never guesses.

Rules implemented (A2):
- administrations/day: ``timing.repeat`` (``frequencyMax`` over ``frequency``, per
  ``period``/``periodUnit``), else the number of ``when`` values, else of ``timeOfDay``,
  else ``timing.code`` (table in ``fhir/codesystems``);
- ``doseRange`` uses its high value; ``rateQuantity``/``rateRatio``/``rateRange`` give the
  daily dose directly (a pump);
- PRN: ``maxDosePerPeriod`` normalised to 24 h, else dose x maximum frequency, else unknown
  (contributes nothing, ``prn_max_unknown``);
- intrathecal dose with no timing and no rate: a bolus when the order is marked as a
  screening bolus (``bolus_marked``), else a pump dose whose daily amount is unknown (A6
  revision: "a dose with no timing on an active pump order is a data-quality warning, not a
  bolus");
- STU3 ``dose[x]``/``rate[x]`` directly on Dosage and R5 ``asNeeded``/``asNeededFor`` and
  list-valued ``maxDosePerPeriod`` are read too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any

from cds.clinical.facts import DosageStep
from cds.clinical.fhirdata import (
    JSON,
    as_bool,
    as_dict,
    as_dicts,
    as_list,
    as_num,
    as_str,
    codings,
    period_bounds,
)
from cds.clinical.units import (
    PER_DAY,
    Strength,
    convert_mass,
    count_word,
    dose_unit,
    duration_days,
    split_rate_unit,
    time_unit,
    unit_of,
)

if TYPE_CHECKING:
    from cds.clinical.terminology import Terminology

_DOSE_KEYS = ("doseQuantity", "doseRange", "doseSimpleQuantity")
_RATE_KEYS = ("rateQuantity", "rateRatio", "rateRange")


@dataclass
class _Instruction:
    sequence: int | None
    prn: bool
    daily: float | None = None  # contribution (PRN: maximum possible; unknown PRN: 0)
    admins: float | None = None
    single: float | None = None
    problem: str | None = None
    prn_max_unknown: bool = False
    bolus: bool = False
    start: datetime | None = None
    end: datetime | None = None
    interval_hours: float | None = None  # spacing of its administrations, when stated
    times: tuple[float, ...] = ()  # timing.repeat.timeOfDay as hours after midnight


@dataclass
class OrderDose:
    """One order's doses in the route's unit (mg oral, ug intrathecal)."""

    steps: list[DosageStep] = field(default_factory=list)
    computable: bool = False
    problem: str | None = None
    daily: float | None = None  # highest step
    first_step_daily: float | None = None
    admin_per_day: float | None = None  # first step
    single_max: float | None = None
    single_min: float | None = None
    prn: bool = False
    prn_only: bool = False
    prn_max_unknown: bool = False
    is_taper: bool = False  # sequenced instructions (steps in time)
    bolus: float | None = None  # an intrathecal bolus, ug
    unit_written: str | None = None
    strength_per_ml: float | None = None
    max_interval_hours: float | None = None  # longest gap between scheduled doses (1st step)
    # post-dialysis supplements (kept apart from the maintenance dose the steps hold)
    supplement_single_max: float | None = None
    supplement_per_week: float | None = None

    @property
    def tapering(self) -> bool:
        """Steps in time that never rise and end lower than they start (a wean)."""
        dailies = [s.daily for s in self.steps]
        if len(dailies) < 2 or any(d is None for d in dailies):
            return False
        known = [d for d in dailies if d is not None]
        return all(b <= a for a, b in zip(known, known[1:], strict=False)) and known[-1] < known[0]

    def daily_at(self, when: datetime) -> float | None:
        """Daily dose of the step in effect at ``when`` (first step if none is dated)."""
        if not self.steps:
            return None
        chosen = self.steps[0]
        for step in self.steps:
            if step.start is not None and step.start <= when:
                chosen = step
        return chosen.daily


def _written_unit(q: JSON, presentation_codes: frozenset[tuple[str, str]]) -> str | None:
    """The unit a prescriber wrote, as a suggestion should echo it: a coded unit of
    presentation (SNOMED 732936001 |Tablet|) is kept as its words ("Tablet"), not its code,
    so the corrected dose is counted in tablets again rather than turned into mg."""
    written = unit_of(q)
    kind = dose_unit(q, presentation_codes)
    if kind is not None and kind[0] == "count" and written and count_word(written) is None:
        words = as_str(q.get("unit"))
        if words and count_word(words) is not None:
            return words
        return "{" + kind[1] + "}" if kind[1] and count_word(kind[1]) else written
    return written


def _sequence(dosage: JSON) -> int | None:
    value = as_num(dosage.get("sequence"))
    if value is None:
        return None
    return int(value) if value == int(value) else None


def is_prn(dosage: JSON) -> bool:
    """PRN in any spelling: asNeededBoolean, asNeededCodeableConcept (R4), asNeeded/For (R5)."""
    if as_bool(dosage.get("asNeededBoolean")) or as_dict(dosage.get("asNeededCodeableConcept")):
        return True
    r5 = dosage.get("asNeeded")
    if as_bool(r5) or as_dict(r5):
        return True
    return bool(as_list(dosage.get("asNeededFor")))


def admins_per_day(timing: Any, term: Terminology) -> tuple[float | None, str | None]:
    """Administrations per day of a Timing (maximum when a range is given).

    Returns (value, None), (None, problem) when the timing is present but unreadable, or
    (None, None) when there is no timing that gives a frequency at all.
    """
    t = as_dict(timing)
    if t is None:
        return None, None
    repeat = as_dict(t.get("repeat"))
    if repeat is not None:
        freq = as_num(repeat.get("frequencyMax"))
        if freq is None:
            freq = as_num(repeat.get("frequency"))
        has_period = "period" in repeat or "periodUnit" in repeat
        if has_period:
            period = as_num(repeat.get("period"))
            unit_text = as_str(repeat.get("periodUnit"))
            unit = time_unit(unit_text) if unit_text else None
            if period is None or period <= 0 or unit is None:
                return None, "timing.repeat period/periodUnit unreadable"
            if freq is None:
                freq = 1.0
            if freq <= 0:
                return None, "timing.repeat frequency not positive"
            return freq * PER_DAY[unit] / period, None
        when = [w for w in as_list(repeat.get("when")) if isinstance(w, str)]
        if when:
            return float(len(when)), None
        times = [w for w in as_list(repeat.get("timeOfDay")) if isinstance(w, str)]
        if times:
            return float(len(times)), None
        if freq is not None and as_dict(t.get("code")) is None:
            return None, "timing.repeat frequency without a period"
    code = as_dict(t.get("code"))
    if code is not None:
        for system, value, _ in codings(code):
            if system in term.timing_systems:
                per_day = term.timing_per_day.get(value.upper())
                if per_day is not None:
                    return per_day, None
        text = as_str(code.get("text"))
        if text is not None and text.upper() in term.timing_per_day:
            return term.timing_per_day[text.upper()], None
        return None, "timing.code not recognised"
    return None, None


def _amount(
    quantity: JSON,
    strength: Strength | None,
    target: str,
    presentation_codes: frozenset[tuple[str, str]] = frozenset(),
) -> tuple[float | None, str | None]:
    """One administration's amount in ``target`` (mg or ug), or a problem."""
    value = as_num(quantity.get("value"))
    if value is None:
        return None, "dose value missing or not a number"
    if value <= 0:
        return None, "dose value not positive"
    unit = dose_unit(quantity, presentation_codes)
    written = unit_of(quantity) or "no unit"
    if unit is None:
        return None, f"dose unit '{written}' not recognised"
    kind, name = unit
    if kind == "mass":
        return convert_mass(value, name, target), None
    if strength is None:
        return None, f"dose in '{written}' but the product strength is unknown"
    if kind == "volume" and strength.per != "mL":
        return None, f"dose in '{written}' but the product is not a liquid (strength per unit)"
    if kind == "count" and strength.per == "mL":
        return None, f"dose in '{written}' but the product is a liquid (strength per mL)"
    mass = value * strength.amount / strength.per_value
    return convert_mass(mass, strength.unit, target), None


def _dose_quantity(holder: JSON) -> JSON | None:
    """The dose Quantity of a doseAndRate entry or an STU3 Dosage (range: its high)."""
    for key in _DOSE_KEYS:
        value = as_dict(holder.get(key))
        if value is None:
            continue
        if key == "doseRange":
            return as_dict(value.get("high")) or {}
        return value
    return None


def _rate_daily(
    holder: JSON,
    strength: Strength | None,
    target: str,
    codes: frozenset[tuple[str, str]] = frozenset(),
) -> tuple[float | None, str | None, bool]:
    """(daily amount, problem, rate present) from rateQuantity/rateRatio/rateRange."""
    q = as_dict(holder.get("rateQuantity"))
    rng = as_dict(holder.get("rateRange"))
    if q is None and rng is not None:
        q = as_dict(rng.get("high")) or {}
    if q is not None:
        value = as_num(q.get("value"))
        unit_text = unit_of(q)
        if value is None or value <= 0 or unit_text is None:
            return None, "rate value or unit missing", True
        split = split_rate_unit(unit_text)
        if split is None:
            return None, "rate unit not recognised", True
        num_text, per = split
        amount, problem = _amount({"value": value, "code": num_text}, strength, target, codes)
        if amount is None:
            return None, problem, True
        return amount * PER_DAY[per], None, True
    ratio = as_dict(holder.get("rateRatio"))
    if ratio is not None:
        num = as_dict(ratio.get("numerator"))
        days = duration_days(ratio.get("denominator"))
        if num is None or days is None:
            return None, "rateRatio numerator or time denominator unreadable", True
        amount, problem = _amount(num, strength, target, codes)
        if amount is None:
            return None, problem, True
        return amount / days, None, True
    return None, None, False


def _max_per_day(
    dosage: JSON,
    strength: Strength | None,
    target: str,
    codes: frozenset[tuple[str, str]] = frozenset(),
) -> float | None:
    """maxDosePerPeriod normalised to 24 h (R5 lists: the tightest)."""
    best = None
    for ratio in as_dicts(dosage.get("maxDosePerPeriod")):
        num = as_dict(ratio.get("numerator"))
        days = duration_days(ratio.get("denominator"))
        if num is None or days is None:
            continue
        amount, _ = _amount(num, strength, target, codes)
        if amount is None:
            continue
        per_day = amount / days
        best = per_day if best is None else min(best, per_day)
    return best


def _instruction(
    dosage: JSON,
    *,
    strength: Strength | None,
    target: str,
    intrathecal: bool,
    term: Terminology,
    tz: tzinfo,
    bolus_marked: bool = False,
) -> tuple[_Instruction, str | None]:
    out = _Instruction(sequence=_sequence(dosage), prn=is_prn(dosage))
    timing = as_dict(dosage.get("timing"))
    if timing is not None:
        repeat = as_dict(timing.get("repeat"))
        if repeat is not None:
            out.start, out.end = period_bounds(repeat.get("boundsPeriod"), tz)
    out.interval_hours, out.times = _spacing(timing)
    holders = as_dicts(dosage.get("doseAndRate")) or [dosage]
    single = None
    unit_written = None
    problem = None
    rate_daily = None
    rate_present = False
    for holder in holders:
        q = _dose_quantity(holder)
        if q is not None and single is None and problem is None:
            unit_written = _written_unit(q, term.presentation_codes)
            single, problem = _amount(q, strength, target, term.presentation_codes)
        r_daily, r_problem, r_present = _rate_daily(
            holder, strength, target, term.presentation_codes
        )
        if r_present and not rate_present:
            rate_present, rate_daily = True, r_daily
            if r_problem and problem is None:
                problem = r_problem
    out.single = single
    if rate_present:
        out.daily = rate_daily
        out.problem = problem if rate_daily is None else None
        return out, unit_written
    admins, timing_problem = admins_per_day(timing, term)
    if out.prn:
        cap = _max_per_day(dosage, strength, target, term.presentation_codes)
        if cap is not None:
            out.daily = cap
            out.admins = admins if admins is not None else (cap / single if single else None)
        elif single is not None and admins is not None:
            out.daily, out.admins = single * admins, admins
        elif problem is not None:
            out.problem = problem
        else:
            out.daily, out.admins, out.prn_max_unknown = 0.0, None, True
        return out, unit_written
    if problem is not None:
        out.problem = problem
    elif single is None:
        out.problem = "no dose"
    elif admins is None and timing_problem is None and intrathecal and bolus_marked:
        out.bolus, out.daily, out.admins = True, single, 1.0
    elif admins is None and timing_problem is None and intrathecal:
        out.problem = "intrathecal dose with no timing or rate (not marked as a screening bolus)"
    elif admins is None:
        out.problem = timing_problem or "no frequency"
    else:
        out.daily, out.admins = single * admins, admins
    return out, unit_written


def _spacing(timing: JSON | None) -> tuple[float | None, tuple[float, ...]]:
    """(hours between administrations when the timing states it, timeOfDay in hours)."""
    if timing is None:
        return None, ()
    repeat = as_dict(timing.get("repeat")) or {}
    times = []
    for t in as_list(repeat.get("timeOfDay")):
        if isinstance(t, str) and len(t) >= 5 and t[2] == ":":
            try:
                times.append(int(t[:2]) + int(t[3:5]) / 60)
            except ValueError:
                continue
    period, unit = as_num(repeat.get("period")), as_str(repeat.get("periodUnit"))
    freq = as_num(repeat.get("frequency")) or 1
    hours = None
    if period and unit and time_unit(unit) in ("h", "min", "d") and freq > 0:
        hours = period * 24 / PER_DAY[time_unit(unit) or "d"] / freq
    return hours, tuple(sorted(set(times)))


def longest_interval(members: list[_Instruction]) -> float | None:
    """Longest gap between scheduled administrations in a day: from timeOfDay (counting the
    wrap to the next day), else the stated spacing (q8h), else 24 h / administrations."""
    scheduled = [m for m in members if not m.prn and m.admins]
    if not scheduled:
        return None
    if all(m.times for m in scheduled):
        times = sorted({t for m in scheduled for t in m.times})
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        gaps.append(24 - times[-1] + times[0])
        return max(gaps)
    if len(scheduled) == 1 and scheduled[0].interval_hours:
        return scheduled[0].interval_hours
    total = sum(m.admins or 0 for m in scheduled)
    return 24 / total if total > 0 else None


def _step(sequence: int | None, members: list[_Instruction]) -> tuple[DosageStep, str | None]:
    problems = [m.problem for m in members if m.problem]
    singles = [m.single for m in members if m.single is not None]
    admins = [m.admins for m in members if m.admins is not None]
    starts = [m.start for m in members if m.start is not None]
    ends = [m.end for m in members if m.end is not None]
    daily = None if problems else sum(m.daily or 0.0 for m in members)
    return (
        DosageStep(
            sequence=sequence,
            daily=daily,
            admin_per_day=sum(admins) if admins else None,
            single_max=max(singles) if singles else None,
            single_min=min(singles) if singles else None,
            start=min(starts) if starts else None,
            end=max(ends) if ends else None,
        ),
        problems[0] if problems else None,
    )


def parse_dosage(
    dosages: list[Any],
    *,
    strength: Strength | None,
    intrathecal: bool,
    term: Terminology,
    tz: tzinfo,
    bolus_marked: bool = False,
    unit: str | None = None,
    is_supplement: Callable[[JSON], bool] | None = None,
) -> OrderDose:
    """Normalise an order's Dosage list to ``unit`` (the pack's unit for the route; default
    ug intrathecal, mg otherwise); see the module docstring for the rules."""
    target = unit or ("ug" if intrathecal else "mg")
    out = OrderDose()
    if strength is not None and strength.per == "mL":
        out.strength_per_ml = convert_mass(
            strength.amount / strength.per_value, strength.unit, target
        )
    instructions: list[_Instruction] = []
    supplements: list[_Instruction] = []
    for dosage in dosages:
        if not isinstance(dosage, dict):
            continue
        supplement = is_supplement is not None and is_supplement(dosage)
        inst, unit_written = _instruction(
            dosage,
            strength=strength,
            target=target,
            intrathecal=intrathecal,
            term=term,
            tz=tz,
            bolus_marked=bolus_marked,
        )
        out.unit_written = out.unit_written or unit_written
        (supplements if supplement else instructions).append(inst)
    if supplements:
        # after each dialysis session: judged per dose, never part of the maintenance dose
        singles = [i.single for i in supplements if i.single is not None]
        out.supplement_single_max = max(singles) if singles else None
        per_day = sum(i.admins or 0.0 for i in supplements)
        out.supplement_per_week = per_day * 7 if per_day else None
    if not instructions and supplements:
        # only doses after dialysis sessions: no maintenance dose (0 mg/day between them)
        instructions.append(_Instruction(sequence=None, prn=False, daily=0.0, admins=0.0))
    if not instructions:
        out.problem = "no dosage instruction"
        return out
    out.prn = any(i.prn for i in instructions)
    out.prn_only = all(i.prn for i in instructions)
    out.prn_max_unknown = any(i.prn_max_unknown for i in instructions)
    sequences = sorted({i.sequence for i in instructions if i.sequence is not None})
    unsequenced = [i for i in instructions if i.sequence is None]
    if len(sequences) <= 1:
        groups = [(sequences[0] if sequences else None, instructions)]
    else:
        # Unsequenced instructions run alongside every step (concurrent, A2).
        groups = [
            (s, [i for i in instructions if i.sequence == s] + unsequenced) for s in sequences
        ]
    out.is_taper = len(groups) > 1
    problems = []
    for seq, members in groups:
        step, problem = _step(seq, members)
        out.steps.append(step)
        if problem:
            problems.append(problem)
    out.problem = problems[0] if problems else None
    out.computable = not problems
    first = out.steps[0]
    out.max_interval_hours = longest_interval(groups[0][1])
    out.first_step_daily = first.daily
    out.admin_per_day = first.admin_per_day
    if out.computable:
        out.daily = max(s.daily for s in out.steps if s.daily is not None)
    singles_max = [s.single_max for s in out.steps if s.single_max is not None]
    singles_min = [s.single_min for s in out.steps if s.single_min is not None]
    out.single_max = max(singles_max) if singles_max else None
    out.single_min = min(singles_min) if singles_min else None
    if len(instructions) == 1 and instructions[0].bolus:
        out.bolus = instructions[0].single
    return out
