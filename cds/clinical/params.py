"""Numbers the clinical layer itself needs, filled from the pack by the engine's loader.

The clinical layer never hard-codes a clinical threshold: look-back windows, plausibility
bounds and the weight rule arrive here from ``rules/<pack>/pack.yaml`` (``clinical:``
section), so imports still run one way (engine -> clinical) and a pack edit changes them.
The defaults below exist only so unit tests of pure arithmetic can build one; the pack
loader always passes every value explicitly.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ClinicalParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    new_start_lookback_days: float = 30  # A4: none of the drug in the last N days = new start
    chronic_min_days: float = 14  # A6: continuous scheduled oral use = chronic user
    weight_for_mg_per_kg_days: float = 30  # A3: weight must be this recent for mg/kg
    weight_for_cockcroft_gault_days: float = 90  # A5
    height_for_schwartz_days: float = 30  # A5
    adjusted_weight_above_ibw_ratio: float = 1.2  # A5: use adjusted weight above 120% IBW
    adjusted_weight_factor: float = 0.4  # A5: IBW + 0.4 x (actual - IBW)
    vitals_window_hours: float = 24  # A7
    gcs_previous_window_hours: float = 48  # A7
    temperature_window_hours: float = 24  # A6 intrathecal withdrawal signs
    creatinine_max_mg_dl: float = 25  # A5 plausibility
    creatinine_min_umol_l: float = 10  # A5 plausibility
    creatinine_umol_per_mg_dl: float = 88.4  # A5 conversion
    aki_rise_window_hours: float = 48  # KDIGO windows (thresholds are rule conditions)
    aki_ratio_window_days: float = 7
    pump_titration_lookback_days: float = 30  # A9: first intrathecal (pump) order
    inpatient_classes: tuple[str, ...] = ("IMP", "ACUTE", "NONAC", "OBSENC")
    # Added with the fact extraction (policy choices where part A gives no number):
    chronic_max_gap_days: float = 1  # A6: renewals up to this far apart still "continuous"
    dialysis_procedure_days: float = 30  # A5: a dialysis procedure this recent = on dialysis
    trimester_2_from_weeks: float = 14  # A7: gestational age < 14 weeks = first trimester
    trimester_3_from_weeks: float = 28  # A7: >= 28 weeks = third trimester
    gestation_max_weeks: float = 42  # A7: a gestational age projected past this is stale
    # A5 stale renal results (policy; the pack's rules use the same numbers): recency
    # beats rank among the renal measures
    renal_stale_hours_outpatient: float = 8760
    renal_stale_hours_inpatient: float = 72
    # A2 plausibility of patient measures (policy): outside these, a value is not used
    weight_min_kg: float = 0.5
    weight_max_kg: float = 350
    height_min_cm: float = 30
    height_max_cm: float = 250
