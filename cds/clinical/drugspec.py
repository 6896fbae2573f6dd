"""What the clinical layer must know of a pack's drug: identity, routes, flags, classes.

Why a typed object filled from the pack: the clinical layer reads FHIR the same way for every
drug, but *which* codes make an order the drug, which problems and procedures the rules ask
about, which other drugs interact, and which observations beyond the shared vitals a pack
reads are knowledge of one drug. They live in ``rules/<pack>/pack.yaml`` and its
``terminology/``; the engine's loader builds a :class:`DrugSpec` from them (imports still run
engine -> clinical), and every extraction step takes it as an argument.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    procedure_days: float | None = None  # a Procedure this recent (or in progress) counts
    onset_field: str | None = None  # days since the newest onset, as a fact field


@dataclass(frozen=True)
class Family:
    """A product family: whether its doses count in the drug's regimen."""

    name: str
    valueset: str | None = None
    in_regimen: bool = True
    default: bool = False


@dataclass(frozen=True)
class Comedication:
    """A flag of the other drugs after signing (or, ``count``, how many distinct ones)."""

    name: str
    valuesets: tuple[str, ...]
    count: bool = False
    drafts_only: bool = False


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
    name: str  # the drug in card words (pack.yaml drug.name)
    identity: str  # ValueSet id
    routes: dict[str, str]  # route -> unit ("oral": "mg", "intrathecal": "ug")
    term: Terminology
    conditions: tuple[ConditionFlag, ...] = ()
    procedures: tuple[ProcedureFlag, ...] = ()
    interactions: tuple[InteractionClass, ...] = ()
    comedications: tuple[Comedication, ...] = ()
    observations: tuple[ObservationKind, ...] = ()
    screening_bolus: str | None = None  # ValueSet id
    families: tuple[Family, ...] = ()
    indications: tuple[tuple[str, str], ...] = ()  # (name, ValueSet id), in priority order
    indication_default: str = "other"
    supplement_valueset: str | None = None
    supplement_max_per_week: float = 4
    # name -> ((from_day, max_daily), ...) sorted by day (day 0 = the first dose)
    schedules: tuple[tuple[str, tuple[tuple[float, float], ...]], ...] = ()
    titration_rate: tuple[float, float] | None = None  # (per interval, interval days)

    @property
    def identities(self) -> tuple[str, ...]:
        """Every ValueSet that names the drug: its identity and its families' sets."""
        return (self.identity, *(f.valueset for f in self.families if f.valueset))

    def family(self, name: str | None) -> Family | None:
        return next((f for f in self.families if f.name == name), None)

    def in_regimen(self, family: str | None) -> bool:
        f = self.family(family)
        return f is None or f.in_regimen

    @property
    def default_family(self) -> str | None:
        return next((f.name for f in self.families if f.default), None)

    @property
    def class_valuesets(self) -> frozenset[str]:
        return frozenset(v for c in self.interactions for v in c.valuesets)

    def unit_of(self, route: str) -> str:
        return self.routes.get(route, "mg")
