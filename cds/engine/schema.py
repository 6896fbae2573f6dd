"""The rule pack schema (pydantic): a pack is data, validated before anything runs.

Errors name the file, the rule and the field (``PackError``), so a rule author sees
"rules/baclofen/renal.yaml, rule renal-band-above: unknown fact field 'renal_valu';
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
    url: str | None = None
    grade: str | None = None  # e.g. "label", "cohort study", "expert consensus", "policy"


class OverrideReason(_Strict):
    code: str
    display: str
    system: str


class SuggestionDef(_Strict):
    kind: Literal["dose_limit", "titration_step", "taper", "none"]
    params: dict[str, Any] = Field(default_factory=dict)


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
    when_then: str | None = None  # plain-words When/Then for reviewers


class PackDef(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]*$")
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    title: str
    description: str = ""
    url: str | None = None
    drug: dict[str, Any] = Field(default_factory=dict)  # ValueSet and product-table refs
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
