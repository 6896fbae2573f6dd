"""Observations the rules need, read once into typed series (newest first).

Why: weight, height, creatinine, eGFR, vitals and scores come in many units and shapes
(BP panels, valueInteger scores, degF). Each kind is recognised by its ValueSet (LOINC, or
SNOMED/local codes for RASS), converted to one unit, dated, and kept with its id so a card
can name it. Results that are entered-in-error or cancelled, dated after ``now`` (they did
not exist at the evaluation instant), or that carry a comparator (">60" is a bound, not a
value) are not used; one whose value or unit cannot be read becomes a DataIssue.

Creatinine is kept *with* unusable values (flagged) because A5 must tell "no creatinine"
from "a creatinine we could not read" (``creatinine_unusable``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from cds.clinical.context import Context
from cds.clinical.drugspec import DrugSpec, ObservationKind
from cds.clinical.fhirdata import (
    JSON,
    as_bool,
    as_dict,
    as_dicts,
    as_num,
    as_str,
    codings,
    parse_datetime,
    period_bounds,
    resource_ref,
)
from cds.clinical.terminology import Terminology

# kind -> ValueSet id
OBS_VALUESETS: dict[str, str] = {
    "weight": "body-weight",
    "height": "body-height",
    "creatinine": "serum-creatinine",
    "crcl": "crcl-measured",
    "egfr": "egfr",
    "rr": "respiratory-rate",
    "spo2": "oxygen-saturation",
    "gcs": "glasgow-coma-score",
    "sbp": "systolic-bp",
    "bp_panel": "bp-panel",
    "temp": "body-temperature",
    "rass": "rass",
    "gestational_age": "gestational-age",
}
_IGNORED_STATUS = frozenset({"entered-in-error", "cancelled"})

# Unit factors to the canonical unit of each kind (definitions, not clinical numbers).
_KG = {"kg": 1.0, "g": 0.001, "[lb_av]": 0.45359237, "lb": 0.45359237, "lbs": 0.45359237}
_CM = {"cm": 1.0, "m": 100.0, "mm": 0.1, "[in_i]": 2.54, "in": 2.54, "inch": 2.54}
_WEEKS = {
    "wk": 1.0,
    "week": 1.0,
    "weeks": 1.0,
    "{weeks}": 1.0,
    "d": 1 / 7,
    "day": 1 / 7,
    "days": 1 / 7,
}
_CELSIUS = frozenset({"cel", "°c", "c", "degc", "deg c"})
_FAHRENHEIT = frozenset({"[degf]", "°f", "f", "degf", "deg f"})
_MG_DL = frozenset({"mg/dl"})
_MG_L = frozenset({"mg/l"})
_UMOL_L = frozenset({"umol/l", "µmol/l", "μmol/l", "micromol/l"})
_MMOL_L = frozenset({"mmol/l"})


@dataclass
class Obs:
    kind: str
    id: str
    when: datetime
    value: float | None  # canonical unit; None when unusable
    problem: str | None = None  # why unusable (creatinine; implausible measures)
    positive: bool | None = None  # screens
    raw: str | None = None  # the value as received, for a card naming an unusable one


# What a kind is called on a card, and its canonical unit.
MEASURE_NAMES: dict[str, tuple[str, str]] = {
    "weight": ("Weight", "kg"),
    "height": ("Height", "cm"),
    "creatinine": ("Creatinine", "mg/dL"),
    "crcl": ("Creatinine clearance", "mL/min"),
    "egfr": ("eGFR", "mL/min/1.73m2"),
    "rr": ("Respiratory rate", "/min"),
    "spo2": ("SpO2", "%"),
    "gcs": ("Glasgow coma score", ""),
    "sbp": ("Systolic blood pressure", "mmHg"),
    "temp": ("Temperature", "C"),
    "rass": ("RASS", ""),
    "gestational_age": ("Gestational age", "weeks"),
}
# Kinds checked for plausibility (A2): a value outside its bounds is not used.
_PLAUSIBLE_KINDS = frozenset({"weight", "height", "egfr", "crcl"})


# A pack's own kinds are read as "positive" screens or plain numbers; their names come from
# the pack (``screen:<ValueSet>`` for a condition flag's screen, the observation's name else).
PackKinds = tuple[tuple[str, str], ...]  # (kind, ValueSet id)


def pack_kinds(drug: DrugSpec) -> PackKinds:
    """The observation kinds a pack adds: its observations and its condition flags' screens."""
    kinds = [(o.name, o.valueset) for o in drug.observations]
    kinds += [(f"screen:{f.screen}", f.screen) for f in drug.conditions if f.screen]
    return tuple(dict.fromkeys(kinds))


@cache
def _code_index(term: Terminology, extra: PackKinds) -> dict[tuple[str, str], list[str]]:
    index: dict[tuple[str, str], list[str]] = {}
    for kind, vs_id in [*OBS_VALUESETS.items(), *extra]:
        for key in term.vs(vs_id).codes:
            index.setdefault(key, []).append(kind)
    return index


def _kinds(concept: object, index: dict[tuple[str, str], list[str]]) -> list[str]:
    """Kinds of an observation code; reads raw codings directly (the hottest loop)."""
    if type(concept) is not dict:
        return []
    items = concept.get("coding")
    if type(items) is not list:
        return [k for s, c, _ in codings(concept) for k in index.get((s, c), ())]
    out: list[str] = []
    for c in items:
        if type(c) is dict:
            system, code = c.get("system"), c.get("code")
            if type(system) is str and type(code) is str:
                kinds = index.get((system.strip(), code.strip()))
                if kinds is not None:
                    out.extend(k for k in kinds if k not in out)
    return out


def _when(obs: JSON, ctx: Context) -> datetime | None:
    tz = ctx.tz
    for key in ("effectiveDateTime", "effectiveInstant"):
        value = parse_datetime(obs.get(key), tz)
        if value is not None:
            return value
    start, end = period_bounds(obs.get("effectivePeriod"), tz)
    return end or start or parse_datetime(obs.get("issued"), tz)


def _quantity(holder: JSON) -> tuple[float | None, str, bool]:
    """(value, lower-case unit, has comparator) of valueQuantity or valueInteger."""
    q = as_dict(holder.get("valueQuantity"))
    if q is not None:
        unit = (as_str(q.get("code")) or as_str(q.get("unit")) or "").lower()
        return as_num(q.get("value")), unit, as_str(q.get("comparator")) is not None
    return as_num(holder.get("valueInteger")), "", False


def creatinine_mg_dl(value: float, unit: str, ctx: Context) -> tuple[float | None, str | None]:
    """Creatinine in mg/dL by its unit; (None, issue code) when unusable (A5)."""
    p = ctx.params
    if unit in _MG_DL:
        mg_dl = value
    elif unit in _MG_L:
        mg_dl = value / 10
    elif unit in _UMOL_L:
        mg_dl = value / p.creatinine_umol_per_mg_dl
    elif unit in _MMOL_L:
        mg_dl = value * 1000 / p.creatinine_umol_per_mg_dl
    else:
        return None, "creatinine-unit"
    if mg_dl > p.creatinine_max_mg_dl or mg_dl * p.creatinine_umol_per_mg_dl < (
        p.creatinine_min_umol_l
    ):
        return None, "creatinine-implausible"
    return mg_dl, None


def _convert(kind: str, value: float, unit: str, ctx: Context) -> tuple[float | None, str | None]:
    if kind == "weight":
        f = _KG.get(unit)
        return (value * f, None) if f else (None, "weight unit")
    if kind == "height":
        f = _CM.get(unit)
        return (value * f, None) if f else (None, "height unit")
    if kind == "gestational_age":
        f = _WEEKS.get(unit)
        return (value * f, None) if f else (None, "gestational age unit")
    if kind == "temp":
        if unit in _CELSIUS:
            return value, None
        if unit in _FAHRENHEIT:
            return (value - 32) * 5 / 9, None
        return None, "temperature unit"
    if kind == "creatinine":
        return creatinine_mg_dl(value, unit, ctx)
    return value, None


def _positive(obs: JSON, ctx: Context, spec: ObservationKind | None = None) -> bool | None:
    """Whether a screen is positive: ``valueBoolean``; a coded answer (positive unless it is
    one of the pack's negative answers, when it lists them; else in the positive-result
    ValueSet); or a score at or above the pack's minimum."""
    flag = as_bool(obs.get("valueBoolean"))
    if flag is not None:
        return flag
    if spec is not None and spec.positive_integer_min is not None:
        score = as_num(obs.get("valueInteger"))
        if score is None:
            score = as_num((as_dict(obs.get("valueQuantity")) or {}).get("value"))
        if score is not None:
            return score >= spec.positive_integer_min
    answer = as_dict(obs.get("valueCodeableConcept"))
    if spec is not None and spec.negative_codes and answer is not None:
        codes = {c for _, c, _ in codings(answer)}
        return bool(codes) and not (codes & spec.negative_codes)
    vs = ctx.term.vs("positive-result")
    concepts = [answer] + as_dicts(obs.get("interpretation"))
    found = [c for c in concepts if c is not None]
    if not found:
        return None
    return any(vs.match_codings(codings(c)) for c in found)


def read_observations(resources: list[JSON], ctx: Context) -> dict[str, list[Obs]]:
    """Every usable (and every unusable creatinine) observation by kind, newest first."""
    extra = pack_kinds(ctx.drug)
    index = _code_index(ctx.term, extra)
    specs = {o.name: o for o in ctx.drug.observations}
    out: dict[str, list[Obs]] = {kind: [] for kind in [*OBS_VALUESETS, *(k for k, _ in extra)]}
    for res in resources:
        kinds = _kinds(res.get("code"), index)
        components = as_dicts(res.get("component")) if "bp_panel" in kinds or not kinds else []
        if not kinds and not components:
            continue
        status = (as_str(res.get("status")) or "").lower()
        if status in _IGNORED_STATUS:
            continue
        when = _when(res, ctx)
        ref = resource_ref(res)
        if when is None:
            name = MEASURE_NAMES.get(kinds[0], (kinds[0], ""))[0] if kinds else "Observation"
            ctx.issue(
                "measure-unreadable",
                f"{name} ({ref}) has no readable effective time: not used",
                ref=ref,
                measure=name,
                value_text="with no date",
            )
            continue
        if when > ctx.now:
            continue
        rid = as_str(res.get("id")) or ref
        for kind in kinds:
            if kind == "bp_panel":
                continue
            spec = specs.get(kind)
            if kind.startswith("screen:") or (spec is not None and spec.value == "positive"):
                out[kind].append(Obs(kind, rid, when, None, positive=_positive(res, ctx, spec)))
                continue
            _read_value(kind, res, rid, ref, when, ctx, out)
        for comp in components:
            for kind in _kinds(comp.get("code"), index):
                if kind == "sbp":
                    _read_value(kind, comp, rid, ref, when, ctx, out)
    for series in out.values():
        series.sort(key=_newest_then_worst, reverse=True)
    return out


# Kinds where a LOWER value is the more concerning one (the rest: higher is worse).
_LOW_IS_WORSE = frozenset({"rr", "spo2", "gcs", "rass", "sbp", "egfr", "crcl"})


def _newest_then_worst(o: Obs) -> tuple[datetime, float, str]:
    """Sort key: newest first; of results at the same instant, the more concerning one
    first (the safer reading), then by id, so the answer never depends on input order."""
    worse = float("-inf") if o.value is None else (-o.value if o.kind in _LOW_IS_WORSE else o.value)
    return (o.when, worse, o.id)


def _read_value(
    kind: str,
    holder: JSON,
    rid: str,
    ref: str,
    when: datetime,
    ctx: Context,
    out: dict[str, list[Obs]],
) -> None:
    value, unit, comparator = _quantity(holder)
    name = MEASURE_NAMES.get(kind, (kind, ""))[0]
    if value is None:
        if as_dict(holder.get("dataAbsentReason")) is None:
            ctx.issue(
                "measure-unreadable",
                f"{name} ({ref}) has no numeric value: not used",
                ref=ref,
                measure=name,
                value_text="with no value",
            )
        return
    if comparator:
        return
    raw = f"{fmt_value(value)} {unit}".strip()
    converted, problem = _convert(kind, value, unit, ctx)
    if converted is None:
        if kind == "creatinine":
            out[kind].append(Obs(kind, rid, when, None, problem=problem, raw=raw))
        else:
            ctx.issue(
                "measure-unreadable",
                f"{name} {raw} ({ref}): the {problem} is not recognised: not used",
                ref=ref,
                measure=name,
                value_text=raw,
            )
        return
    if kind in _PLAUSIBLE_KINDS and not _plausible(kind, converted, ctx):
        out[kind].append(Obs(kind, rid, when, None, problem="implausible", raw=raw))
        return
    out[kind].append(Obs(kind, rid, when, converted))


def _plausible(kind: str, value: float, ctx: Context) -> bool:
    """A2 plausibility (policy bounds from the pack): a typo must never drive a check."""
    p = ctx.params
    if kind == "weight":
        return p.weight_min_kg <= value <= p.weight_max_kg
    if kind == "height":
        return p.height_min_cm <= value <= p.height_max_cm
    return value > 0  # renal values (eGFR, measured creatinine clearance)


def fmt_value(value: float) -> str:
    """A received value as a person would write it (800, 0.5, -5), for cards."""
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    if abs(value) >= 1e6:
        return f"{value:.3g}"
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return text or "0"


def report_implausible(series: list[Obs], ctx: Context) -> None:
    """One data issue per implausible value newer than the newest plausible one (older ones
    changed nothing); the issue says which older value, if any, was used instead."""
    used = next((o for o in series if o.value is not None), None)
    for o in series:
        if o.problem != "implausible":
            continue
        if used is not None and o.when <= used.when:
            continue
        name, unit = MEASURE_NAMES.get(o.kind, (o.kind, ""))
        instead = (
            f"; the {name.lower()} of {used.when.date().isoformat()} "
            f"({fmt_value(used.value)} {unit}) was used instead"
            if used is not None and used.value is not None
            else "; no other value was used"
        )
        ctx.issue(
            "measure-implausible",
            f"{name} {o.raw} (Observation/{o.id}, {o.when.date().isoformat()}) is outside the "
            f"plausible range: not used{instead}",
            ref=f"Observation/{o.id}",
            measure=name,
            value_text=o.raw,
        )


def newest_within(series: list[Obs], now: datetime, hours: float) -> Obs | None:
    """The newest usable value no older than ``hours``."""
    since = now - timedelta(hours=hours)
    for o in series:
        if o.value is not None or o.positive is not None:
            return o if o.when >= since else None
    return None
