"""What the clinical layer must know of a pack's drug: identity, routes, flags, classes.

Why a typed object filled from the pack: the clinical layer reads FHIR the same way for every
drug, but *which* codes make an order the drug, which problems and procedures the rules ask
about, which other drugs interact, and which observations beyond the shared vitals a pack
reads are knowledge of one drug. They live in ``rules/<pack>/pack.yaml`` and its
``terminology/``; the engine's loader builds a :class:`DrugSpec` from them (imports still run
engine -> clinical), and every extraction step takes it as an argument.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cds.clinical.terminology import Terminology


@dataclass(frozen=True)
class ConditionFlag:
    """A problem-list question the rules ask ("epilepsy", "seizure history")."""

    name: str  # the fact field
    valueset: str
    history: bool = False  # counts whatever the clinical status
    recent_days: float | None = None  # onset (else recorded date) within this window
    screen: str | None = None  # an observation ValueSet whose positive result also counts
    screen_hours: float | None = None


@dataclass(frozen=True)
class ProcedureFlag:
    """A planned (draft, active, preparation) or recently done procedure ("pump_removal")."""

    name: str
    valueset: str
    lookback_days: float


@dataclass(frozen=True)
class InteractionClass:
    """An interacting class: drugs in any of ``valuesets`` (by code, else by name), and
    problems in ``conditions`` (alcohol-use disorder joins the sedatives)."""

    name: str
    valuesets: tuple[str, ...]
    conditions: tuple[str, ...] = ()
    condition_name: str | None = None


@dataclass(frozen=True)
class ObservationKind:
    """A pack-specific observation: a fact field holding the newest value within a window
    (or the maximum, or whether it was positive)."""

    name: str
    valueset: str
    window_hours: float
    value: str = "newest"  # newest | max | positive
    negative_codes: frozenset[str] = frozenset()
    positive_integer_min: float | None = None


@dataclass(frozen=True)
class DrugSpec:
    name: str  # card words ("baclofen")
    identity: str  # ValueSet id
    routes: dict[str, str]  # route -> unit ("oral": "mg", "intrathecal": "ug")
    term: Terminology
    conditions: tuple[ConditionFlag, ...] = ()
    procedures: tuple[ProcedureFlag, ...] = ()
    interactions: tuple[InteractionClass, ...] = ()
    comedications: dict[str, str] = field(default_factory=dict)  # flag -> ValueSet id
    observations: tuple[ObservationKind, ...] = ()
    screening_bolus: str | None = None  # ValueSet id

    @property
    def class_valuesets(self) -> frozenset[str]:
        return frozenset(v for c in self.interactions for v in c.valuesets)

    def unit_of(self, route: str) -> str:
        return self.routes.get(route, "mg")
