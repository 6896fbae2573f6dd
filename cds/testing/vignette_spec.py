"""The vignette file format, as a strict schema: a misspelled key is an error, not a no-op.

A vignette describes a clinical situation in a few lines and the exact cards it must give.
Every key is declared here; an unknown one fails loading with a "did you mean" (a typo such
as ``rules_inlcude`` would otherwise silently test nothing). Times are relative to the
vignette's ``now`` (``days_ago``, ``hours_ago``, ``start_days_ago``...), so a vignette never
goes stale.
"""

from __future__ import annotations

import difflib
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = ["VignetteSpec", "VignetteSpecError", "parse_vignette_spec"]


class VignetteSpecError(ValueError):
    """A vignette file that does not follow the schema; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class When(_Strict):
    days_ago: float = 0
    hours_ago: float = 0


class PatientSpec(_Strict):
    age: int | None = 55
    sex: str | None = "male"
    birth_date: str | None = None


class WeightSpec(When):
    kg: float
    unit: str = "kg"
    id: str | None = None


class HeightSpec(When):
    cm: float
    id: str | None = None


class CreatinineSpec(When):
    value: float
    unit: str | None = "mg/dL"


class EgfrSpec(When):
    value: float
    loinc: str = "98979-8"


class VitalSpec(When):
    kind: str
    value: float | bool


class ConditionSpec(When):
    key: str
    status: str = "active"


class ProcedureSpec(When):
    key: str
    type: Literal["Procedure", "ServiceRequest"] = "Procedure"
    status: str = "completed"
    id: str | None = None


class DosageSpec(_Strict):
    dose: float | None = None
    unit: str = "mg"
    unit_text: str | None = None  # Quantity.unit when it differs from the UCUM code
    frequency: float | None = None
    period: float = 1
    period_unit: str = "d"
    timing_code: str | None = None
    route: str | None = None
    prn: bool = False
    max_per_day: float | None = None
    sequence: int | None = None
    start_in_days: float | None = None
    end_in_days: float | None = None
    rate_per_day: float | None = None
    text: str | None = None
    event_hours_ago: float | None = None


class OrderSpec(_Strict):
    """A MedicationRequest (or, under ``statements``, a MedicationStatement)."""

    id: str
    product: str = "tab20"
    drug: str | None = None
    dose: float | None = None
    unit: str = "mg"
    unit_text: str | None = None
    frequency: float | None = None
    period: float = 1
    period_unit: str = "d"
    timing_code: str | None = None
    route: str | None = "oral"  # null: no route written
    prn: bool = False
    max_per_day: float | None = None
    start_days_ago: float | None = None
    start_in_days: float | None = None
    end_in_days: float | None = None
    rate_per_day: float | None = None
    dosages: list[DosageSpec] | None = None
    prior: str | None = None
    based_on: str | None = None  # statements: the MedicationRequest they document
    status: str | None = None
    text: str | None = None
    coded: bool = True
    no_dosage: bool = False
    refill_due_days_ago: float | None = None
    refill_due_in_days: float | None = None
    adverse_reason: bool = False


class ServiceRequestSpec(_Strict):
    """A draft ServiceRequest in ``draftOrders`` (a planned procedure, e.g. a pump removal)."""

    id: str
    service_request: str  # key of builders.PROCEDURES, or a concept code of a pack ValueSet
    status: str = "draft"


class SuggestionExpect(_Strict):
    dose: float
    unit: str = "mg"
    frequency: float | None = None
    start: str | None = None
    product: str | None = None  # RxNorm code of the product the suggestion names
    label_includes: list[str] = Field(default_factory=list)
    prn: bool | None = None


class CardExpect(_Strict):
    category: str
    indicator: Literal["info", "warning", "critical"]
    pack: str | None = None  # the pack that produced the card (several packs running)
    order: str | None = None  # the order (or statement) id the card is about
    rules_include: list[str] = Field(default_factory=list)
    rules_exclude: list[str] = Field(default_factory=list)
    suggestion: SuggestionExpect | None = None
    taper: list[list[float]] | None = None
    # a suggestion that tapers several orders: resource id -> [[dose, frequency], ...]
    tapers: dict[str, list[list[float]]] | None = None
    no_suggestion: bool = False
    summary_includes: list[str] = Field(default_factory=list)
    summary_excludes: list[str] = Field(default_factory=list)
    detail_includes: list[str] = Field(default_factory=list)


class ExpectSpec(_Strict):
    cards: list[CardExpect] = Field(default_factory=list)
    exact: bool = True
    forbid: list[str] = Field(default_factory=list)
    status: int = 200


class VignetteSpec(_Strict):
    id: str
    description: str
    covers: list[str] = Field(default_factory=list)
    part_d: int | None = None
    hook: Literal["order-select", "order-sign", "patient-view"] = "order-sign"
    now: datetime | None = None
    profile: str = "US"
    packs: list[str] | None = None  # the packs the service runs (default: the vignette's own)
    xfail: str | None = None
    request_file: str | None = None
    patient: PatientSpec = Field(default_factory=PatientSpec)
    weight: WeightSpec | None = None
    weights: list[WeightSpec] = Field(default_factory=list)  # further weights
    height: HeightSpec | None = None
    creatinine: list[CreatinineSpec] = Field(default_factory=list)
    egfr: list[EgfrSpec] = Field(default_factory=list)
    vitals: list[VitalSpec] = Field(default_factory=list)
    conditions: list[str | ConditionSpec] = Field(default_factory=list)
    procedures: list[ProcedureSpec] | None = None
    encounter: str | None = None
    active: list[OrderSpec] = Field(default_factory=list)
    statements: list[OrderSpec] = Field(default_factory=list)
    drafts: list[OrderSpec | ServiceRequestSpec] = Field(default_factory=list)
    selections: list[str] | None = None
    expect: ExpectSpec

    @model_validator(mode="before")
    @classmethod
    def _drafts_by_kind(cls, data: Any) -> Any:
        """A draft with ``service_request`` is a ServiceRequest; tell pydantic which."""
        if isinstance(data, dict) and isinstance(data.get("drafts"), list):
            drafts = []
            for d in data["drafts"]:
                if isinstance(d, dict) and "service_request" in d:
                    drafts.append(ServiceRequestSpec.model_validate(d))
                else:
                    drafts.append(d)
            data = {**data, "drafts": drafts}
        return data


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed at ``loc`` (for the "did you mean" of an unknown key)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = _model_of(field.annotation)
    return list(getattr(current, "model_fields", {}))


def _model_of(annotation: Any) -> Any:
    for arg in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
        inner = _model_of_args(arg)
        if inner is not None:
            return inner
    return None


def _model_of_args(annotation: Any) -> Any:
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def parse_vignette_spec(data: Any, *, where: str) -> VignetteSpec:
    """Validate a vignette's YAML mapping; errors name the file, the key and a suggestion."""
    try:
        return VignetteSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            hint = difflib.get_close_matches(str(loc[-1]), _known_keys(VignetteSpec, loc), n=1)
            msg = f"unknown key {loc[-1]!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
        raise VignetteSpecError(f"{where}: {path}: {msg}") from None
