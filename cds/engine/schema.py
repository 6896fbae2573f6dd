"""The rule pack schema (pydantic): a pack is data, validated before anything runs.

Errors name the file, the rule and the field (``PackError``), so a rule author sees
"rules/<pack>/a5-renal.yaml, rule renal-band-above: unknown fact field 'renal_valu';
did you mean 'renal_value'?" rather than a traceback.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

Category = Literal[
    "dose-ceiling",
    "titration-rate",
    "renal-adjustment",
    "withdrawal-risk",
    "side-effect",
    "interaction",
    "data-quality",
]
CATEGORIES: tuple[str, ...] = get_args(Category)  # the alert-category CodeSystem's codes
HOOKS = ("order-select", "order-sign", "patient-view")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Evidence(_Strict):
    id: str
    citation: str
    short: str | None = None  # a link label: "US labels", "Vlavonou 2014"
    url: str | None = None
    grade: str | None = None  # e.g. "label", "cohort study", "expert consensus", "policy"


class OverrideReason(_Strict):
    code: str
    display: str
    system: str


class SuggestionDef(_Strict):
    kind: Literal[
        "dose_limit",
        "titration_step",
        "titration_rate",
        "schedule",
        "labelled_start",
        "supplement_limit",
        "taper",
        "remove_draft",
        "none",
    ]
    params: dict[str, Any] = Field(default_factory=dict)


# Each suggestion kind's parameters, checked once the pack's references are resolved: a typo
# ("dialy_max") or a missing number fails ``cds rules check``, not a request at 3 a.m.
class DoseLimitParams(_Strict):
    daily_max: float | None = None
    daily_max_new_start: float | None = None
    daily_max_per_kg: float | None = None
    fraction_of_ordered: float | None = None
    single_max: float | None = None
    daily_max_field: str | None = None  # a (derived) fact field holding the daily limit
    admins_per_day: int | None = Field(default=None, ge=1)  # at most this many a day
    admins_fixed: int | None = Field(default=None, ge=1)  # exactly this many a day
    min_per_admin: float | None = None  # never suggest less a dose: fewer administrations


class TitrationRateParams(_Strict):
    """Too fast: the dose per administration may rise ``step_per_admin`` (when ``one_step``
    fired), and the dose so chosen starts ``interval_days`` x ceil(rise / ``per_interval``)
    after the current regimen began (or now, if later)."""

    step_per_admin: float = Field(gt=0)
    per_interval: float = Field(gt=0)
    interval_days: float = Field(gt=0)
    one_step: bool = False


class ScheduleParams(_Strict):
    """The same daily dose at another number of administrations (``when``: a FHIR
    timing.repeat.when code such as CV, with the evening meal)."""

    admins_per_day: int = Field(ge=1)
    when: str | None = None


class LabelledStartParams(_Strict):
    """A new start as the label's schedule: one order with sequenced instructions, each
    step [from_day, dose per administration, administrations a day], stopping at the
    ordered daily dose; ``per_kg`` rows scale the dose by the body weight."""

    steps: list[tuple[float, float, int]] = Field(min_length=1)
    when: str | None = None


class SupplementLimitParams(_Strict):
    """A post-dialysis supplement above its limit is cut to the largest dispensable amount
    at or under ``single_max``; the maintenance dosage is kept."""

    single_max: float = Field(gt=0)


class TitrationStepParams(_Strict):
    step_per_admin: float
    min_interval_days: float
    adult_age: float
    min_interval_days_paediatric: float | None = None
    start_per_admin: float | None = None
    start_admin_per_day: int | None = None


class TaperParams(_Strict):
    """A linear taper (``step_per_admin`` down to ``floor_per_admin``, then one
    administration a day fewer), or with ``rungs`` a ladder: every administration one rung
    down, then one administration fewer, then ``low_step`` down to ``low_floor`` (then
    every other day) while the taper is shorter than ``min_days``."""

    step_per_admin: float = 0
    interval_days: float = Field(gt=0)
    floor_per_admin: float = 0
    rungs: list[float] = Field(default_factory=list)
    family_rungs: dict[str, list[float]] = Field(default_factory=dict)
    liquid_fractions: list[float] = Field(default_factory=list)
    low_step: float | None = None
    low_floor: float | None = None
    min_days: float = 0


class NoParams(_Strict):
    pass


class DispensingDef(_Strict):
    """A pack's dispensing policy (``tables.dispensing``): what a suggested dose may be."""

    # suggested amounts are multiples of this (route unit); None: the amounts the products
    # of the ordered family and kind can give (units x strength, liquids by the mL step)
    rounding: float | None = Field(default=None, gt=0)
    switch_within: Literal["form", "family"] = "form"  # which products a switch may name
    scored_halves_only: bool = False  # a fraction of a unit only for a scored product
    prefer: Literal["largest_strength", "fewest_units"] = "largest_strength"
    unit_fractions: list[float] = Field(min_length=1)  # [1, 0.5]: whole or half units
    liquid_step_ml: float = Field(gt=0)
    max_units: float | None = None  # units of presentation per administration


SUGGESTION_PARAMS: dict[str, type[_Strict]] = {
    "dose_limit": DoseLimitParams,
    "titration_step": TitrationStepParams,
    "titration_rate": TitrationRateParams,
    "schedule": ScheduleParams,
    "labelled_start": LabelledStartParams,
    "supplement_limit": SupplementLimitParams,
    "taper": TaperParams,
    "remove_draft": NoParams,
    "none": NoParams,
}


class ForEach(_Strict):
    table: str
    where: str | None = None  # only rows that have this key


class RuleDef(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$")
    title: str
    category: Category
    severity: str  # info|warning|critical, or "@row.x"
    fact: Literal["order", "interaction", "data_issue"] = "order"
    hooks: list[Literal["order-select", "order-sign", "patient-view"]] = Field(
        default=["order-select", "order-sign"]
    )
    profiles: list[str] | None = None  # None: every profile
    for_each: ForEach | None = None
    when: Any
    unless: list[Any] = Field(default_factory=list)
    vars: dict[str, Any] = Field(default_factory=dict)
    summary: str = Field(min_length=1)
    detail: str = Field(min_length=1)
    evidence: list[str] = Field(min_length=1)
    suggestion: SuggestionDef | None = None
    override_reasons: list[str] = Field(default_factory=list)
    group: str | None = None  # a fact field that splits cards (interactions: drug_class)
    # plain-words "When ..., then <severity>." for reviewers, as each CQL file of the HL7
    # opioid content opens with one: required, so no rule ships unexplained
    when_then: str = Field(min_length=10)
    # Drop this finding when the order's new dose is not below the dose suggestion that the
    # named category would offer for the dose before the change (A6: a step-down to the
    # renal suggestion as offered is not abrupt). Decided after the engine, by the pipeline.
    unless_offered: Category | None = None
    # The rule stays silent when this other pack runs in the same service: it owns the
    # card for the pair (two packs' drugs together: one card, the owning pack's).
    unless_pack: str | None = None
    # A reason, not a card of its own, when the order already has a card of this category
    # at least as severe: it joins the most severe one (Beers "CNS-active burden")
    join_worst: bool = False
    never_alone: bool = False  # with join_worst: dropped when there is no card to join


class FamilyDef(_Strict):
    """A product family (immediate release, once daily, a prodrug): the product table says
    which products belong (extension ``product-family``), or ``valueset`` does."""

    valueset: str | None = None  # codes (or words) naming the family; also names the drug
    in_regimen: bool = True  # False: its doses never add to the drug's (a different ingredient)
    default: bool = False  # the family of an order that names only the ingredient


class IndicationDef(_Strict):
    """An indication, in priority order: the order's reason first, then the problem list."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    valueset: str


class SupplementDef(_Strict):
    """What marks a dosage as a supplement after each dialysis session (kept apart from the
    maintenance dose): a weekly timing with at most ``max_per_week`` administrations, or a
    timing code, as-needed reason, additional instruction or text in ``valueset``."""

    valueset: str
    max_per_week: float = 4


class TitrationRateDef(_Strict):
    """A linear titration allowance: the regimen may rise ``per_interval`` for each full
    ``interval_days`` since the current regimen began (``rate_excess`` measures the excess)."""

    per_interval: float = Field(gt=0)
    interval_days: float = Field(gt=0)


class DrugDef(_Strict):
    """What makes an order the pack's drug, and how it is given (``pack.yaml`` ``drug:``)."""

    name: str = Field(min_length=1)  # the drug in card words, never a code
    identity: str  # id of the ValueSet whose codes (or words) name the drug
    products: str | None = None  # product table: a Bundle of Medications (pack-relative)
    routes: dict[Literal["oral", "intrathecal"], Literal["mg", "ug"]] = Field(min_length=1)
    screening_bolus: str | None = None  # ValueSet of what marks an intrathecal bolus
    families: dict[str, FamilyDef] = Field(default_factory=dict)
    indications: list[IndicationDef] = Field(default_factory=list)
    indication_default: str = "other"
    supplement: SupplementDef | None = None
    # Dose schedules by day of therapy (day 0 = the first dose): [[from_day, max_daily], ...]
    # ``above_<name>`` facts measure how far an order's steps run above one.
    schedules: dict[str, list[tuple[float, float]]] = Field(default_factory=dict)
    titration_rate: TitrationRateDef | None = None


class ConditionDef(_Strict):
    """A problem-list flag the rules read (a fact field of every order)."""

    valueset: str
    history: bool = False  # counts whatever the clinical status (a resolved stroke)
    recent_days: float | None = None  # onset (else recorded date) within this window
    screen: str | None = None  # an observation ValueSet whose positive result also counts
    screen_hours: float | None = None
    procedure_days: float | None = None  # a Procedure this recent (or in progress) counts too
    onset_field: str | None = None  # also a fact field: days since its newest onset


class ProcedureDef(_Strict):
    """A planned or recent procedure the rules read (``pump_removal``)."""

    valueset: str
    lookback_days: float  # a done procedure this recent still counts


class InteractionClassDef(_Strict):
    """One interacting class: drugs of these ValueSets, or these conditions (alcohol)."""

    valuesets: list[str] = Field(min_length=1)
    conditions: list[str] = Field(default_factory=list)
    condition_name: str | None = None  # how the card names a condition member


class ComedicationDef(_Strict):
    """A flag of the other drugs after signing (an anticonvulsant on the list), or with
    ``count`` the number of distinct other drugs in any of the ValueSets (CNS-active)."""

    valueset: str | None = None
    valuesets: list[str] = Field(default_factory=list)
    count: bool = False
    drafts_only: bool = False  # only the drafts of this request count


class ObservationDef(_Strict):
    """A pack-specific observation the rules read: the newest value within a window."""

    valueset: str
    window_hours: float
    value: Literal["newest", "max", "positive"] = "newest"
    negative_codes: list[str] = Field(default_factory=list)  # answers that are negative
    positive_integer_min: float | None = None  # a score at or above this is positive


class PrefetchDef(_Strict):
    """One prefetch key: a FHIR search or read (``search``), or observations by the codes of
    ValueSets (``observations``: the codes the rules read are the codes fetched)."""

    search: str | None = None
    observations: list[str] = Field(default_factory=list)
    since_days: int | None = None
    count: int = Field(default=100, ge=1, le=1000)
    required: bool = False


class DerivedDef(_Strict):
    """A fact field computed from others before the engine runs (see engine/derived.py)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    kind: Literal["order", "interaction"] = "order"
    value: Any


class PackDef(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]*$")
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    title: str
    description: str = ""
    url: str | None = None
    drug: DrugDef
    terminology: list[str] = Field(default_factory=list)  # the pack's own ValueSet files
    conditions: dict[str, ConditionDef] = Field(default_factory=dict)
    procedures: dict[str, ProcedureDef] = Field(default_factory=dict)
    interactions: dict[str, InteractionClassDef] = Field(default_factory=dict)
    comedications: dict[str, ComedicationDef] = Field(default_factory=dict)
    observations: dict[str, ObservationDef] = Field(default_factory=dict)
    prefetch: dict[str, PrefetchDef] = Field(default_factory=dict)
    derived: list[DerivedDef] = Field(default_factory=list)
    # service ids EHRs were registered with before the medication-safety services
    service_aliases: dict[str, Literal["order-select", "order-sign", "patient-view"]] = Field(
        default_factory=dict
    )
    profiles: dict[str, dict[str, Any]]
    default_profile: str = "US"
    tables: dict[str, Any] = Field(default_factory=dict)
    clinical: dict[str, Any] = Field(default_factory=dict)
    evidence: list[Evidence]
    override_reasons: dict[str, OverrideReason] = Field(default_factory=dict)
    default_override_reasons: list[str] = Field(default_factory=list)
    include: list[str] = Field(default_factory=list)
    rules: list[RuleDef] = Field(default_factory=list)

    @field_validator("profiles")
    @classmethod
    def _profiles_nonempty(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if not v:
            raise ValueError("a pack needs at least one profile")
        return v
