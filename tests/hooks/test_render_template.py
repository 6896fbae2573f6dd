"""render_template: every token the service's templates may use, and what is refused."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone

import pytest

from cds.hooks.prefetch import render_template

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CONTEXT = {"userId": "Practitioner/prac-1", "patientId": "pat-1", "encounterId": "enc-9"}


def render(template: str, context: Mapping[str, object] | None = None, **kw: str) -> str | None:
    return render_template(template, CONTEXT if context is None else context, now=NOW, **kw)


def test_context_fields() -> None:
    assert render("Patient/{{context.patientId}}") == "Patient/pat-1"
    assert render("Encounter/{{ context.encounterId }}") == "Encounter/enc-9"
    assert (
        render("MedicationRequest?patient={{context.patientId}}&encounter={{context.encounterId}}")
        == "MedicationRequest?patient=pat-1&encounter=enc-9"
    )


def test_no_tokens_is_unchanged() -> None:
    assert (
        render("Observation?code=http://loinc.org|2160-0")
        == "Observation?code=http://loinc.org|2160-0"
    )


def test_values_are_percent_encoded() -> None:
    """An id cannot add path segments, parameters or fragments to the query."""
    context = {"patientId": "a b/../x?y=1&z#f"}
    assert (
        render("Patient/{{context.patientId}}", context) == "Patient/a%20b%2F..%2Fx%3Fy%3D1%26z%23f"
    )


def test_non_string_scalars() -> None:
    assert render("X?n={{context.n}}&b={{context.b}}", {"n": 3, "b": True}) == "X?n=3&b=true"


@pytest.mark.parametrize("context", [{}, {"patientId": None}, {"patientId": ""}])
def test_missing_context_field_gives_none(context: dict[str, object]) -> None:
    assert render("Patient/{{context.patientId}}", context) is None


def test_missing_encounter_only_affects_its_template() -> None:
    context = {"patientId": "pat-1"}
    assert render("Encounter/{{context.encounterId}}", context) is None
    assert render("Patient/{{context.patientId}}", context) == "Patient/pat-1"


def test_nested_context_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="first-level"):
        render("X?{{context.draftOrders.entry}}", {"draftOrders": {"entry": []}})


def test_structured_context_values_are_refused() -> None:
    with pytest.raises(ValueError, match="not a simple value"):
        render("X?{{context.draftOrders}}", {"draftOrders": {"resourceType": "Bundle"}})


def test_unknown_token_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown prefetch token"):
        render("X?{{patientId}}")


@pytest.mark.parametrize(
    ("user_id", "token", "expected"),
    [
        ("Practitioner/prac-1", "userPractitionerId", "prac-1"),
        ("PractitionerRole/role-2", "userPractitionerRoleId", "role-2"),
        ("Patient/pat-3", "userPatientId", "pat-3"),
        ("RelatedPerson/rp-4", "userRelatedPersonId", "rp-4"),
        ("https://ehr.example/fhir/Practitioner/prac-5", "userPractitionerId", "prac-5"),
    ],
)
def test_user_tokens(user_id: str, token: str, expected: str) -> None:
    assert render(f"X?u={{{{{token}}}}}", {"userId": user_id}) == f"X?u={expected}"


@pytest.mark.parametrize(
    "token", ["userPractitionerRoleId", "userPatientId", "userRelatedPersonId"]
)
def test_user_token_of_another_type_is_missing(token: str) -> None:
    assert render(f"X?u={{{{{token}}}}}", {"userId": "Practitioner/prac-1"}) is None


def test_user_practitioner_id_argument_wins() -> None:
    assert render("X?u={{userPractitionerId}}", {}, user_practitioner_id="p 9") == "X?u=p%209"


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("{{today()}}", "2026-11-20"),
        ("{{today() - 90 days}}", "2026-08-22"),
        ("{{today()-1 day}}", "2026-11-19"),
        ("{{ today() + 3 days }}", "2026-11-23"),
        ("{{today() - 365 days}}", "2025-11-20"),
    ],
)
def test_today_tokens(token: str, expected: str) -> None:
    assert render(f"Observation?date=ge{token}") == f"Observation?date=ge{expected}"


def test_today_is_the_utc_date() -> None:
    late_in_new_york = datetime(2026, 11, 20, 22, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert render_template("{{today()}}", {}, now=late_in_new_york) == "2026-11-21"
    assert render_template("{{today()}}", {}, now=datetime(2026, 1, 1, 0, 5)) == "2026-01-01"


def test_today_with_other_units_is_refused() -> None:
    with pytest.raises(ValueError):
        render("X?date=ge{{today() - 3 months}}")
