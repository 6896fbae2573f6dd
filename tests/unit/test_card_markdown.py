"""Hardening #5: request text is text in a card, never card structure.

Medication text, codings' displays, order ids and drug names come from the EHR's request
and end up in the card ``detail`` (Markdown) through the rule templates
(``cds/engine/pack.py``) and the "Facts used" lines (``cds/cards.py``). The property: no
request string can add a link, heading, list item, emphasis, code span or raw HTML tag
to a card, nor break its summary over lines. Checked by parsing each detail as a renderer
does (markdown-it, HTML on) and comparing its structure with the same request carrying a
harmless string instead.
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from cds.cards import contract_problems, has_raw_html
from cds.clinical.extract import HookInput
from cds.engine.registry import PackRegistry
from cds.hooks.pipeline import evaluate
from cds.hooks.request import parse_hook_call
from cds.markdown import md_text, plain_text
from cds.testing import builders as b
from tests.conftest import REPO

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
BENIGN = "plainword"
_MD = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
# What an autolink needs (GFM's extended autolinks, math): unescaped, only the pack's own
# evidence URLs may have them.
_AUTOLINKISH = re.compile(r"(?<!\\)(?:://|www\.|@|\$)")

ATTACKS = [
    "\n\n## Pharmacy note: safe to override\n\n",
    "x\r\n- fake reason\n1. step",
    "[click](https://evil.example/steal)",
    "![img](https://evil.example/x.png)",
    "<img src=x onerror=alert(1)>",
    "</p><script>alert(1)</script>",
    "**bold** _em_ `code` ~~del~~",
    "https://evil.example/x www.evil.example admin@evil.example",
    "&lt;b&gt; &#60;img&#62;",
    "| a | b |\n|---|---|",
    "> quoted\n---\n===",
    "\\*not em\\* trailing backslash \\",
    "$x^2$ <!-- comment -->",
    "\u2028## after a line separator\u2029- item \x85 nel",
]
injections = st.sampled_from(ATTACKS) | st.text(
    alphabet=st.sampled_from(list("*_`[]()<>!#-+=.|~&:/@$\\\n\r\t ab1")), min_size=1, max_size=40
)


@pytest.fixture(scope="module")
def packs(rules_dir: Any) -> list[Any]:
    registry = PackRegistry(rules_dir=REPO / "rules", pack_ids=["baclofen"], profile="US")
    registry.load()
    return registry.packs()


def request_with(text: str) -> dict[str, Any]:
    """A signing that gives a dose-ceiling card (the draft's text, display and id) and an
    interaction card (the co-medication's names), every request string set to ``text``."""
    draft = b.medication_request(
        rid="draft-1",
        status="draft",
        product="tab20",
        dosages=[b.dosage(dose=40, frequency=3)],
        authored=NOW,
    )
    draft["medicationCodeableConcept"]["text"] = text
    draft["medicationCodeableConcept"]["coding"][0]["display"] = text
    opioid = b.medication_request(
        rid="opioid-1",
        status="active",
        drug="oxycodone",
        dosages=[b.dosage(dose=10, frequency=2)],
        authored=NOW - timedelta(days=30),
    )
    opioid["medicationCodeableConcept"]["text"] = text
    for c in opioid["medicationCodeableConcept"]["coding"]:
        c["display"] = text
    return b.hook_request(
        hook="order-sign",
        now=NOW,
        patient_res=b.patient(now=NOW, age=55),
        drafts=[draft],
        medications=[opioid],
        labs=[b.creatinine(1.0, "mg/dL", NOW - timedelta(days=2))],
        body=[b.weight(80, NOW - timedelta(days=2))],
    )


def with_order_id(body: dict[str, Any], order_id: str) -> dict[str, Any]:
    body = copy.deepcopy(body)
    body["context"]["draftOrders"]["entry"][0]["resource"]["id"] = order_id
    return body


def cards_of(body: dict[str, Any], packs: list[Any]) -> dict[str, dict[str, Any]]:
    call = parse_hook_call(body, expected_hook="order-sign")
    resources = [
        r
        for key in ("patient", "medications", "renal", "weight")
        for r in (
            [e["resource"] for e in body["prefetch"][key]["entry"]]
            if body["prefetch"][key].get("resourceType") == "Bundle"
            else [body["prefetch"][key]]
        )
    ]
    inp: HookInput = call.pipeline_input(resources)
    return {c.category: c.card for c in evaluate(inp, packs, now=NOW).cards}


def structure(detail: str) -> list[tuple[str, str]]:
    """Every token a renderer would make of ``detail`` but the text itself."""
    out: list[tuple[str, str]] = []
    for tok in _MD.parse(detail):
        out.append((tok.type, tok.tag))
        for child in tok.children or ():
            if child.type not in ("text", "softbreak"):
                href = child.attrGet("href") if child.type == "link_open" else ""
                out.append((child.type, child.tag + str(href or "")))
    return out


# What the card templates themselves make: sections in bold, bullet lists, rule ids in
# code spans, evidence links. Anything else (a heading, emphasis, an image, a quote, a
# table, a rule, HTML...) can only have come from request text.
ALLOWED = {
    "paragraph_open",
    "paragraph_close",
    "inline",
    "bullet_list_open",
    "bullet_list_close",
    "list_item_open",
    "list_item_close",
    "strong_open",
    "strong_close",
    "code_inline",
    "link_open",
    "link_close",
}


def check_card(card: dict[str, Any], baseline: dict[str, Any] | None, packs: list[Any]) -> None:
    summary = card["summary"]
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", summary), summary
    assert not has_raw_html(card["detail"])
    assert contract_problems(card) == []
    shape = structure(card["detail"])
    assert {t for t, _ in shape} <= ALLOWED, shape
    evidence = {e.get("url") for p in packs for e in p.evidence.values()}
    links = [tag[1:] for t, tag in shape if t == "link_open"]
    assert all(href in evidence for href in links), links
    if baseline is not None:
        assert shape == structure(baseline["detail"])
        assert len(_AUTOLINKISH.findall(card["detail"])) == len(
            _AUTOLINKISH.findall(baseline["detail"])
        )
    else:
        assert len(_AUTOLINKISH.findall(card["detail"])) <= len(links)


def test_the_request_gives_the_cards_that_carry_request_text(packs: list[Any]) -> None:
    """The property below is about real cards: both kinds, with the text in them."""
    cards = cards_of(request_with(BENIGN), packs)
    assert {"dose-ceiling", "interaction"} <= set(cards)
    assert f"Order draft\\-1: {BENIGN}" in cards["dose-ceiling"]["detail"]
    assert f"Interacting: {BENIGN}" in cards["interaction"]["detail"]


@pytest.mark.parametrize("attack", ATTACKS)
def test_known_attacks_stay_text(packs: list[Any], attack: str) -> None:
    baseline = cards_of(request_with(BENIGN), packs)
    cards = cards_of(with_order_id(request_with(attack), attack), packs)
    assert {"dose-ceiling", "interaction"} <= set(cards)
    for category, card in cards.items():
        check_card(card, baseline.get(category), packs)
    # and the text is still all there, readable, on one line
    assert md_text(attack).strip() in cards["dose-ceiling"]["detail"]
    rendered = _MD.render(cards["dose-ceiling"]["detail"])
    assert "<img" not in rendered and "<script" not in rendered and "<h2" not in rendered


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(text=injections, as_id=st.booleans())
def test_no_request_string_adds_structure_to_a_card(
    packs: list[Any], text: str, as_id: bool
) -> None:
    baseline = cards_of(request_with(BENIGN), packs)
    body = request_with(text)
    if as_id:
        body = with_order_id(body, text)
    cards = cards_of(body, packs)
    for category, card in cards.items():
        check_card(card, baseline.get(category), packs)


def test_md_text_reads_back_as_the_text() -> None:
    """Escaping changes how the source looks, never what a reader sees."""
    for attack in ATTACKS:
        html = _MD.render(md_text(attack))
        assert "<a " not in html and "<em>" not in html and "<strong>" not in html
        assert "<h" not in html and "<li>" not in html and "<img" not in html
    assert plain_text("a\nb\rc\u2028d") == "a b c d"
