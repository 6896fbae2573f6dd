"""Presentation helpers: labels, facts tables, resource lines, markdown safety."""

from __future__ import annotations

from cds.web.console.present import (
    card_view,
    fact_sections,
    humanize,
    render_markdown,
    resource_lines,
)


def test_humanize() -> None:
    assert humanize("weight_kg") == "Weight (kg)"
    assert humanize("creatinine_mg_dl") == "Creatinine (mg/dL)"
    assert humanize("hookInstance") == "hookInstance"
    assert humanize("egfr_for_beers") == "eGFR for beers"
    assert humanize("daily") == "Daily dose (highest step)"


def test_markdown_never_renders_raw_html_or_script_links() -> None:
    html = str(render_markdown("**a** <i>b</i> [x](javascript:alert(1)) ![i](http://t/x.png)"))
    assert "<strong>a</strong>" in html
    assert "<i>" not in html and "&lt;i&gt;" in html
    assert "javascript:" not in html.replace("[x](javascript:alert(1))", "")
    assert "<img" not in html
    assert str(render_markdown(None)) == ""


def test_facts_are_grouped_into_readable_sections() -> None:
    sections = fact_sections(
        {
            "kind": "order",
            "order_id": "mr-1",
            "daily": 90.0,
            "age": 80,
            "epilepsy": True,
            "renal_value": 38.0,
            "renal_measure": {"value": 38, "date": "2026-11-01T08:00:00Z"},
            "spo2": 92.0,
            "drug_names": "oxycodone",
            "mystery": [1, 2],
        }
    )
    titles = [s.title for s in sections]
    assert titles == [
        "Order",
        "Patient",
        "Renal function",
        "Observations",
        "Interaction",
        "Conditions",
        "Other facts",
        "Context",
    ]
    renal = dict(sections[2].rows)
    assert renal["Renal measure › Date"] == "2026-11-01 08:00 UTC"
    assert dict(sections[0].rows)["Daily dose (highest step)"] == "90"
    assert dict(sections[6].rows)["Mystery"] == "1, 2"
    assert fact_sections(None) == []


def test_resource_lines_for_a_taper() -> None:
    lines = dict(
        resource_lines(
            {
                "resourceType": "MedicationRequest",
                "id": "mr-9",
                "status": "draft",
                "medicationCodeableConcept": {"coding": [{"display": "baclofen"}]},
                "dosageInstruction": [
                    {
                        "sequence": 1,
                        "text": "20 mg tds for 3 days",
                        "timing": {
                            "repeat": {
                                "frequency": 3,
                                "period": 1,
                                "periodUnit": "d",
                                "boundsDuration": {"value": 3, "unit": "days"},
                            }
                        },
                    },
                    {"sequence": 2, "doseAndRate": [{"doseQuantity": {"value": 10, "unit": "mg"}}]},
                ],
            }
        )
    )
    assert lines["Resource"] == "MedicationRequest/mr-9"
    assert lines["Medication"] == "baclofen"
    assert lines["Dosage 1"] == "20 mg tds for 3 days · 3 × per 1 d, for 3 days"
    assert lines["Dosage 2"] == "10 mg"
    assert resource_lines(None) == []


def test_card_view_tolerates_odd_cards() -> None:
    view = card_view(
        {
            "summary": "s",
            "indicator": "info",
            "suggestions": ["junk", {}],
            "links": [
                {"label": "bad", "url": "javascript:x"},
                {"label": "ok", "url": "https://example.org"},
            ],
            "extension": {"ns": {"ruleIds": ["r1"], "packId": "p"}},
        }
    )
    assert view.links == [("ok", "https://example.org")]
    assert view.extension == [("Rule IDs", "r1")]
    assert len(view.suggestions) == 1
