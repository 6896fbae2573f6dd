"""What every extraction step needs for one evaluation: the instant, params, the drug.

Why a context object: the clinical layer must be a pure function of (request, now, params),
so nothing reads the clock or a global; and data problems found deep inside a parser are
collected in one place, as :class:`DataIssue` facts, instead of raising.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from cds.clinical.drugspec import DrugSpec
from cds.clinical.facts import DataIssue
from cds.clinical.fhirdata import JSON
from cds.clinical.params import ClinicalParams
from cds.clinical.terminology import Terminology


@dataclass
class Context:
    now: datetime
    params: ClinicalParams
    drug: DrugSpec
    patient_id: str
    medications: dict[str, JSON] = field(default_factory=dict)  # Medication by id
    issues: list[DataIssue] = field(default_factory=list)
    _seen: set[tuple[str, str, str]] = field(default_factory=set)

    @property
    def term(self) -> Terminology:
        """The pack's terminology: the shared ValueSets plus its own."""
        return self.drug.term

    @property
    def tz(self) -> tzinfo:
        tz = self.now.tzinfo
        assert tz is not None, "now must be timezone-aware"
        return tz

    def issue(
        self,
        code: str,
        detail: str,
        *,
        ref: str | None = None,
        order_id: str = "",
        measure: str | None = None,
        value_text: str | None = None,
    ) -> None:
        """Record a data problem once (same code, resource and order)."""
        key = (code, ref or detail, order_id)
        if key in self._seen:
            return
        self._seen.add(key)
        self.issues.append(
            DataIssue(
                issue=code,
                detail=detail,
                order_id=order_id,
                measure=measure,
                value_text=value_text,
                resource_ref=ref,
            )
        )
