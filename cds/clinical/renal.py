"""Renal function for A5: which value, computed how, from which results.

Why exactly as written: the renal bands compare an unrounded number with pack thresholds, so
the formulas here are the published ones with no intermediate rounding (70 M, 70 kg,
150 umol/L gives CrCl 40.1, not the 40.0 a rounded creatinine would give).

Choice (the first available):
1. measured creatinine clearance (LOINC 2164-2) no older than the newest creatinine;
2. age >= 18: Cockcroft-Gault from the newest usable creatinine and a weight from the last
   ``weight_for_cockcroft_gault_days`` (adjusted weight when height is known and the actual
   weight exceeds ``adjusted_weight_above_ibw_ratio`` x Devine IBW);
3. a reported eGFR no older than the newest creatinine (any age), else one computed from the
   newest creatinine: CKD-EPI 2021 (age >= 18) or bedside Schwartz (under 18, height from the
   last ``height_for_schwartz_days``); failing that, an older reported eGFR.
Recency beats rank: a measure whose input is stale (older than the pack's stale limit,
outpatient or inpatient) ranks after every measure whose input is not.
Sex missing or neither male nor female: both ways, the lower value.

Decision recorded: "reported eGFR, else computed" is read with the freshness rule of step 1,
so a years-old reported eGFR never outranks an eGFR computed from yesterday's creatinine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from cds.clinical.facts import RenalMeasure
from cds.clinical.observations import Obs
from cds.clinical.params import ClinicalParams

# Published formula constants (Devine 1974; CKD-EPI 2021, Inker NEJM 2021; Schwartz 2009).
DEVINE_BASE_KG = {"male": 50.0, "female": 45.5}
DEVINE_KG_PER_INCH = 2.3
DEVINE_FROM_INCHES = 60.0
CM_PER_INCH = 2.54
CG_AGE_FROM = 140.0
CG_DIVISOR = 72.0
CG_FEMALE = 0.85
CKD_EPI = {  # sex: (kappa, alpha, sex factor)
    "female": (0.7, -0.241, 1.012),
    "male": (0.9, -0.302, 1.0),
}
CKD_EPI_K = 142.0
CKD_EPI_HIGH_EXP = -1.200
CKD_EPI_AGE_BASE = 0.9938
SCHWARTZ_K = 0.413


def devine_ibw(height_cm: float, sex: str) -> float:
    """Ideal body weight (kg), Devine: base + 2.3 kg per inch over 60 inches."""
    inches = height_cm / CM_PER_INCH
    return DEVINE_BASE_KG[sex] + DEVINE_KG_PER_INCH * (inches - DEVINE_FROM_INCHES)


def dosing_weight(
    actual_kg: float, height_cm: float | None, sex: str, params: ClinicalParams
) -> tuple[float, Literal["actual", "adjusted"]]:
    """(weight, "actual"|"adjusted") for Cockcroft-Gault (A5 policy)."""
    if height_cm is None:
        return actual_kg, "actual"
    ibw = devine_ibw(height_cm, sex)
    if actual_kg > params.adjusted_weight_above_ibw_ratio * ibw:
        return ibw + params.adjusted_weight_factor * (actual_kg - ibw), "adjusted"
    return actual_kg, "actual"


def cockcroft_gault(age: float, weight_kg: float, scr_mg_dl: float, sex: str) -> float:
    """CrCl (mL/min) = (140 - age) x weight / (72 x SCr), x 0.85 if female."""
    value = (CG_AGE_FROM - age) * weight_kg / (CG_DIVISOR * scr_mg_dl)
    return value * CG_FEMALE if sex == "female" else value


def ckd_epi_2021(age: float, scr_mg_dl: float, sex: str) -> float:
    """Race-free CKD-EPI 2021 eGFR (mL/min/1.73 m2)."""
    kappa, alpha, factor = CKD_EPI[sex]
    ratio = scr_mg_dl / kappa
    return (
        CKD_EPI_K
        * min(ratio, 1.0) ** alpha
        * max(ratio, 1.0) ** CKD_EPI_HIGH_EXP
        * CKD_EPI_AGE_BASE**age
        * factor
    )


def bedside_schwartz(height_cm: float, scr_mg_dl: float) -> float:
    """Bedside Schwartz eGFR (mL/min/1.73 m2) = 0.413 x height (cm) / SCr."""
    return SCHWARTZ_K * height_cm / scr_mg_dl


SexUsed = Literal["male", "female", "lower-of-both"]
ReportedKind = Literal["crcl_measured", "egfr_reported"]


def _sexes(sex: str) -> tuple[list[str], SexUsed]:
    if sex == "male":
        return ["male"], "male"
    if sex == "female":
        return ["female"], "female"
    return ["male", "female"], "lower-of-both"


@dataclass
class RenalInputs:
    age: int | None
    sex: str
    inpatient: bool
    creatinine: list[Obs]  # newest first, usable and unusable
    crcl: list[Obs]
    egfr: list[Obs]
    weight: list[Obs]
    height: list[Obs]


@dataclass
class RenalResult:
    measure: RenalMeasure | None = None
    egfr_for_beers: float | None = None
    needed_missing_height: bool = False
    rise_48h: float | None = None
    ratio_7d: float | None = None
    unusable_newer: list[Obs] = field(default_factory=list)  # unusable creatinines that win


def _newest(series: list[Obs]) -> Obs | None:
    return next((o for o in series if o.value is not None), None)


def _cg(
    inp: RenalInputs, scr: Obs, weight: Obs, height: Obs | None, params: ClinicalParams
) -> RenalMeasure:
    assert inp.age is not None and scr.value is not None and weight.value is not None
    sexes, label = _sexes(inp.sex)
    best: tuple[float, float, Literal["actual", "adjusted"]] | None = None
    for sex in sexes:
        w, kind = dosing_weight(weight.value, height.value if height else None, sex, params)
        value = cockcroft_gault(inp.age, w, scr.value, sex)
        if best is None or value < best[0]:
            best = (value, w, kind)
    assert best is not None
    ids = [scr.id, weight.id] + ([height.id] if height and best[2] == "adjusted" else [])
    return RenalMeasure(
        kind="crcl_cockcroft_gault",
        value=best[0],
        unit="mL/min",
        effective=scr.when,
        weight_kg=best[1],
        weight_kind=best[2],
        creatinine_mg_dl=scr.value,
        sex_used=label,
        source_ids=ids,
    )


def _ckd_epi(inp: RenalInputs, scr: Obs) -> RenalMeasure:
    assert inp.age is not None and scr.value is not None
    sexes, label = _sexes(inp.sex)
    value = min(ckd_epi_2021(inp.age, scr.value, s) for s in sexes)
    return RenalMeasure(
        kind="egfr_ckd_epi_2021",
        value=value,
        unit="mL/min/1.73m2",
        effective=scr.when,
        creatinine_mg_dl=scr.value,
        sex_used=label,
        source_ids=[scr.id],
    )


def _reported(kind: ReportedKind, obs: Obs, unit: str) -> RenalMeasure:
    assert obs.value is not None
    return RenalMeasure(
        kind=kind,
        value=obs.value,
        unit=unit,
        effective=obs.when,
        source_ids=[obs.id],
    )


def compute_renal(inp: RenalInputs, now: datetime, params: ClinicalParams) -> RenalResult:
    out = RenalResult()
    scr = _newest(inp.creatinine)
    for o in inp.creatinine:
        if o.value is not None:
            break
        out.unusable_newer.append(o)
    crcl = _newest(inp.crcl)
    egfr = _newest(inp.egfr)
    weight = _newest(inp.weight)
    if weight is not None and weight.when < now - timedelta(
        days=params.weight_for_cockcroft_gault_days
    ):
        weight = None
    height_any = _newest(inp.height)
    height_recent = height_any
    if height_recent is not None and height_recent.when < now - timedelta(
        days=params.height_for_schwartz_days
    ):
        height_recent = None
    adult = inp.age is not None and inp.age >= 18
    egfr_fresh = egfr is not None and (scr is None or egfr.when >= scr.when)
    ckd_epi = _ckd_epi(inp, scr) if scr is not None and adult else None
    cg = _cg(inp, scr, weight, height_any, params) if scr and adult and weight else None

    # Candidates in A5 rank order, each with the time of the input it rests on.
    ranked: list[tuple[RenalMeasure, datetime]] = []
    if crcl is not None and (scr is None or crcl.when >= scr.when):
        ranked.append((_reported("crcl_measured", crcl, "mL/min"), crcl.when))
    if cg is not None:
        ranked.append((cg, cg.effective))
    if egfr is not None and egfr_fresh:
        ranked.append((_reported("egfr_reported", egfr, "mL/min/1.73m2"), egfr.when))
    if ckd_epi is not None:
        ranked.append((ckd_epi, ckd_epi.effective))
    if scr is not None and inp.age is not None and not adult and height_recent is not None:
        assert scr.value is not None and height_recent.value is not None
        schwartz = RenalMeasure(
            kind="egfr_schwartz",
            value=bedside_schwartz(height_recent.value, scr.value),
            unit="mL/min/1.73m2",
            effective=scr.when,
            creatinine_mg_dl=scr.value,
            source_ids=[scr.id, height_recent.id],
        )
        ranked.append((schwartz, scr.when))
    if egfr is not None and not egfr_fresh:
        ranked.append((_reported("egfr_reported", egfr, "mL/min/1.73m2"), egfr.when))
    if crcl is not None and scr is not None and crcl.when < scr.when:
        ranked.append((_reported("crcl_measured", crcl, "mL/min"), crcl.when))
    # Recency beats rank (A5 revision, policy): a measure whose input is stale ranks after
    # every measure whose input is not (a fresh reported eGFR before a Cockcroft-Gault from a
    # 13-month-old creatinine). The sort is stable, so rank decides within each group.
    stale_hours = (
        params.renal_stale_hours_inpatient if inp.inpatient else params.renal_stale_hours_outpatient
    )
    ranked.sort(key=lambda m: (now - m[1]) / timedelta(hours=1) > stale_hours)
    if ranked:
        out.measure = ranked[0][0]
    elif scr is not None and inp.age is not None and not adult:
        out.needed_missing_height = True

    for candidate in (
        egfr.value if egfr is not None and egfr_fresh else None,
        ckd_epi.value if ckd_epi else None,
        egfr.value if egfr is not None else None,
        crcl.value if crcl is not None else None,
        cg.value if cg else None,
    ):
        if candidate is not None:
            out.egfr_for_beers = candidate
            break

    if scr is not None:
        assert scr.value is not None
        before = [o for o in inp.creatinine if o.value is not None and o.when < scr.when]
        win48 = [
            o.value
            for o in before
            if o.when >= scr.when - timedelta(hours=params.aki_rise_window_hours)
        ]
        win7 = [
            o.value
            for o in before
            if o.when >= scr.when - timedelta(days=params.aki_ratio_window_days)
        ]
        if win48:
            out.rise_48h = scr.value - min(v for v in win48 if v is not None)
        if win7:
            out.ratio_7d = scr.value / min(v for v in win7 if v is not None)
    return out
