"""The console in a real browser, as a hospital pharmacist uses it: Debian's Chromium
driven by Playwright, against a real uvicorn server (the whole app: hook API and console)
on 127.0.0.1 and a SQLite database.

The morning: weeks of history (seeded), then real hook calls over HTTP (``morning.py``:
order-select firing again on the same draft, order-sign, a sandbox-style call) and the
prescriber's feedback. Then the pharmacist works the queue by patient, searches by MRN and
name, acknowledges a patient's alerts at once, reads an alert (what the rule used, the
override reason in words), escalates it to a colleague, checks the dashboard and exports
CSV; the colleague finds it under "Escalated to me" and resolves it. An administrator
unlocks an account and resets its password. And signing in over plain HTTP on a host name
with Secure cookies says what to set instead of failing forever.

Screenshots of the main pages go to ``test-artifacts/screenshots/`` (gitignored).
Never downloads a browser: without ``/usr/bin/chromium`` the tests skip (``apt-get install
chromium``), and fail under CI=true.
"""

from __future__ import annotations

import csv
import html
import io
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cds.settings import Settings
from cds.store import users as store_users
from cds.store.db import make_engine, make_sessionmaker, upgrade
from cds.store.models import Card, Review, User
from cds.web.app import create_app
from tests.console.conftest import ADMIN_PASSWORD, ARTIFACTS, PASSWORD, SECRET, make_user
from tests.console.morning import (
    MRN_A,
    NAME_A,
    PRESCRIBER,
    SIGN,
    WARD,
    Morning,
    run_morning,
    send_feedback,
    stamp,
)
from tests.console.seed import seed_cards

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ARTIFACTS / "screenshots"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ZONE = "Europe/London"


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("/usr/bin/chromium is missing under CI=true (apt-get install chromium)")
    pytest.skip("apt-get install chromium to run")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    base: str
    port: int
    maker: sessionmaker[Session]
    morning: Morning


def _serve(settings: Settings, maker: sessionmaker[Session]) -> tuple[uvicorn.Server, int]:
    app = create_app(settings, maker=maker, announce_dev_mode=False)
    port = _free_port()
    srv = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    return srv, port


def _latest(cards: list[dict[str, Any]]) -> dict[str, Any]:
    return cards[-1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    _require_chromium()
    url = f"sqlite:///{tmp_path_factory.mktemp('browser') / 'console.db'}"
    upgrade(url)
    engine = make_engine(url)
    maker = make_sessionmaker(engine)
    now = datetime.now(UTC).replace(microsecond=0)
    seed_cards(maker, 3000, end=now - timedelta(hours=2), days=45)
    make_user(maker, "browser.pharm")
    make_user(maker, "renal.pharm")
    make_user(maker, "ada.admin", ADMIN_PASSWORD, "admin")
    make_user(maker, "locked.pharm")
    settings = Settings(
        database_url=url,
        secure_cookies=False,
        session_secret=SECRET,
        auth="off",
        site_timezone=ZONE,
    )
    srv, port = _serve(settings, maker)
    base = f"http://127.0.0.1:{port}"
    try:
        morning = run_morning(base)
        # The prescriber's answers: the renal card of the signing accepted twice (the
        # EHR sent the acceptance again, with its own time) and then overridden with the
        # card's own reason code and no words; the interaction card overridden likewise.
        renal = _latest(morning.of("A", "renal-adjustment"))
        send_feedback(
            base,
            SIGN,
            [
                {
                    "card": renal["uuid"],
                    "outcome": "accepted",
                    "acceptedSuggestions": [{"id": renal["suggestions"][0]["uuid"]}],
                    "outcomeTimestamp": stamp(3),
                },
                {
                    "card": renal["uuid"],
                    "outcome": "accepted",
                    "acceptedSuggestions": [{"id": renal["suggestions"][0]["uuid"]}],
                    "outcomeTimestamp": stamp(2),
                },
                {
                    "card": renal["uuid"],
                    "outcome": "overridden",
                    "overrideReason": {
                        "reason": {
                            "code": renal["overrideReasons"][0]["code"],
                            "system": renal["overrideReasons"][0]["system"],
                        },
                        "userComment": "Renal team aware",
                    },
                    "outcomeTimestamp": stamp(1),
                },
            ],
        )
        inter = _latest(morning.of("A", "interaction"))
        send_feedback(
            base,
            SIGN,
            [
                {
                    "card": inter["uuid"],
                    "outcome": "overridden",
                    "overrideReason": {"reason": {"code": inter["overrideReasons"][1]["code"]}},
                    "outcomeTimestamp": stamp(1),
                }
            ],
        )
        yield Server(base, port, maker, morning)
    finally:
        srv.should_exit = True
        engine.dispose()


@pytest.fixture(scope="module")
def pw() -> Iterator[Any]:
    """One Playwright driver for the module (the sync API allows one per thread)."""
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(server: Server, pw: Any) -> Iterator[Any]:
    b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
    try:
        yield b
    finally:
        b.close()


def _shot(page: Any, name: str, full_page: bool = True) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)


def _sign_in(page: Any, base: str, username: str, password: str = PASSWORD) -> None:
    page.goto(f"{base}/review/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]:has-text('Sign in')")


def _watch(page: Any) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    return errors


def _patient(page: Any, name: str) -> Any:
    return page.locator("section.patient", has=page.locator("h2", has_text=name))


def test_a_pharmacists_morning(server: Server, browser: Any) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1366, "height": 900}, accept_downloads=True)
    page = context.new_page()
    errors = _watch(page)

    # Anonymous: the queue sends us to the sign-in page.
    page.goto(f"{server.base}/review/alerts")
    expect(page).to_have_url(f"{server.base}/review/login?next=%2Freview%2Falerts")
    expect(page.locator(".login-warning")).to_have_count(0)  # 127.0.0.1: cookies work
    _shot(page, "login")
    page.fill("input[name=username]", "browser.pharm")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]:has-text('Sign in')")
    expect(page.locator("h1")).to_have_text("Alert queue")

    # --- the queue, by patient: name, MRN, ward, open problems, repeats collapsed -----
    okafor = _patient(page, NAME_A)
    expect(okafor).to_have_count(1)
    expect(okafor.locator(".patient-id")).to_contain_text(f"MRN {MRN_A}")
    expect(okafor.locator(".patient-id")).to_contain_text(WARD)
    expect(okafor.locator(".count-open")).to_contain_text("3 open problems")
    order = okafor.locator(".order")
    expect(order).to_have_count(1)  # one draft order, selected three times and signed
    expect(order.locator("h3")).to_have_text(
        "baclofen 20 MG Oral Tablet: 20 mg 3 times a day, oral"
    )
    expect(order.locator(".order-head")).to_contain_text(f"Prescriber: {PRESCRIBER}")
    rows = order.locator("table.problems tbody tr")
    expect(rows).to_have_count(3)  # 12 cards: 3 problems that fired 4 times each
    for i in range(3):
        expect(rows.nth(i).locator(".fired")).to_have_text("4×")
    expect(rows.first).to_have_class(re.compile(r"\bsev-critical\b"))  # most severe first
    answered = okafor.locator("tr", has_text="neurotoxicity")
    expect(answered.locator(".pill-both")).to_contain_text("accepted 2 · overridden 1")
    expect(answered.locator(".reason")).to_have_text("“Not applicable to this patient”")
    daniel = _patient(page, "X, Daniel")
    expect(daniel.locator("tr.dq")).to_have_count(1)  # the data-quality alert, muted, last
    expect(daniel.locator("table.problems tbody tr").last).to_have_class(re.compile(r"\bdq\b"))
    _shot(page, "queue-grouped", full_page=False)
    okafor.screenshot(path=str(SHOTS / "queue-patient.png"))

    # --- search by MRN, by name (any order, any case), by patient id ---------------------
    for term in (MRN_A, "adaeze okafor", "OKAFOR", "okafor-1"):
        page.fill("input[name=patient]", term)
        page.click("button:has-text('Apply filters')")
        expect(page.locator("section.patient")).to_have_count(1)
        expect(page.locator("section.patient h2")).to_have_text(NAME_A)
    page.fill("input[name=patient]", "Daniel")
    page.click("button:has-text('Apply filters')")
    expect(page.locator("section.patient h2")).to_have_text("X, Daniel")

    # --- overridden: a real filter (every card overridden at least once) --------------
    page.goto(f"{server.base}/review/alerts?patient={MRN_A}&feedback=overridden")
    problems = page.locator("section.patient table.problems tbody tr")
    expect(problems).to_have_count(2)  # the renal and the interaction problems
    expect(page.locator("section.patient")).to_contain_text("“Disagree with the evidence”")

    # --- acknowledge the whole patient at once: one review row per card ----------------
    page.goto(f"{server.base}/review/alerts?patient={MRN_A}")
    _patient(page, NAME_A).locator("button:has-text('Acknowledge all shown')").click()
    expect(page.locator(".flash-ok")).to_have_text("Acknowledged 12 alerts.")
    expect(_patient(page, NAME_A).locator(".count-new")).to_have_count(0)
    expect(_patient(page, NAME_A).locator(".count-open")).to_contain_text("3 open problems")
    with server.maker() as s:
        cards = s.scalars(select(Card).where(Card.patient_mrn == MRN_A)).all()
        assert len(cards) == 12 and {c.review_status for c in cards} == {"acknowledged"}
        reviews = s.scalars(select(Review).where(Review.card_id.in_([c.id for c in cards]))).all()
        assert len(reviews) == 12 and len({r.batch_id for r in reviews}) == 1
        assert all(c.review_minutes is not None for c in cards)

    # --- the alert: what the rule used leads; facts folded; reason in words -------------
    _patient(page, NAME_A).locator("a", has_text="neurotoxicity").click()
    expect(page.locator("h1.alert-title")).to_contain_text("neurotoxicity")
    lead = page.locator("section.lead")
    expect(lead.locator("h2")).to_have_text("What the rule used")
    renal_row = lead.locator("table.kv tr", has_text="Cockcroft-Gault")
    expect(renal_row).to_contain_text("from creatinine 1.9 mg/dL")
    expect(renal_row).to_contain_text("weight 58 kg")
    yesterday = (datetime.now(UTC) - timedelta(days=1)).astimezone(_zone()).date().isoformat()
    expect(renal_row).to_contain_text(f"dated {yesterday}")
    expect(lead.locator("table.kv")).to_contain_text("60 mg/day")
    facts = page.locator("details.all-facts")
    expect(facts).not_to_have_attribute("open", "")
    expect(facts.locator("table").first).to_be_hidden()  # folded, no script needed
    expect(page.locator(".flash-warn", has_text="Accepted and overridden")).to_be_visible()
    expect(page.locator(".flash-info")).to_contain_text("fired 4 times")
    feedback = page.locator("section", has=page.locator("h2", has_text="What the prescriber did"))
    expect(feedback).to_contain_text("Reason: Not applicable to this patient")
    expect(feedback.locator(".pill-accepted")).to_have_count(2)
    expect(page.locator(".meanings")).to_contain_text("It stays on the patient's open problems")
    expect(page.locator(".who-what")).to_contain_text(f"{NAME_A} · MRN {MRN_A} · {WARD}")
    expect(page.locator(".who-what")).to_contain_text(PRESCRIBER)
    _shot(page, "detail")

    # --- escalate it to a named colleague (every open firing of the problem) -----------
    page.fill("textarea[name=note]", "CrCl 22: please review the dose with the renal team.")
    page.select_option("select[name=escalate_to]", label="renal.pharm (pharmacist)")
    expect(page.locator("input[name=repeats]")).to_be_checked()
    page.click("button[value=escalate]")
    expect(page.locator(".flash-ok")).to_have_text("Escalated.")
    expect(page.locator(".alert-head .status")).to_have_text("escalated to renal.pharm")
    expect(page.locator("ol.history li").last).to_contain_text(
        "Escalated to renal.pharm by browser.pharm"
    )
    detail_url = page.url.split("?")[0]

    # --- the interaction alert names the other active medicine --------------------------
    page.goto(f"{server.base}/review/alerts?patient={MRN_A}")
    _patient(page, NAME_A).locator("a", has_text="oxycodone").click()
    expect(page.locator("section.lead table.kv")).to_contain_text("Other active medicines")
    expect(page.locator("section.lead table.kv")).to_contain_text("oxycodone")

    # --- the sandbox call's data problem is shown with the call -------------------------
    page.goto(f"{server.base}/review/alerts?patient=Daniel")
    page.locator("tr.dq a").click()
    issues = page.locator("section", has=page.locator("h2", has_text="Data problems in this call"))
    expect(issues).to_contain_text("[stone_av]")

    # --- the dashboard: every answer counted, rates, repeats, time to review -----------
    with server.maker() as s:
        renal_rule = s.get(Card, _latest(server.morning.of("A", "renal-adjustment"))["uuid"])
        assert renal_rule is not None
        renal_rule_id = renal_rule.primary_rule
    page.click("nav.mainnav >> text=Rules")
    expect(page.locator("h1")).to_have_text("Rules dashboard")
    assert page.locator("svg.chart").count() == 3
    assert page.locator("svg.chart polyline").count() >= 1
    _shot(page, "dashboard")
    page.goto(f"{server.base}/review/rules?rule={renal_rule_id}")
    row = page.locator("table.stats").first.locator("tbody tr").first
    cells = [c.strip() for c in row.locator("td").all_inner_texts()]
    # cards, repeats, acceptances (2 events on one card), overrides, with their rates
    assert cells[2:6] == ["4", "3 (75%)", "2 (67%)", "1 (33%)"], cells
    assert cells[7] == "1"  # the card both accepted and overridden
    assert cells[8] != "–"  # reviewed: time to review is measured
    assert "Not applicable to this patient" in cells[9]

    # --- export: the reviewer, note, reason, prescriber, drug and dose, name and MRN ----
    page.goto(f"{server.base}/review/alerts?patient={MRN_A}")
    with page.expect_download() as info:
        page.click("a:has-text('Export CSV')")
    text = Path(info.value.path()).read_text(encoding="utf-8")
    rows_csv = list(csv.DictReader(io.StringIO(text)))
    assert len(rows_csv) == 12
    assert {r["patient_name"] for r in rows_csv} == {NAME_A}
    assert {r["patient_mrn"] for r in rows_csv} == {MRN_A}
    assert {r["location"] for r in rows_csv} == {WARD}
    assert {r["prescriber"] for r in rows_csv} == {PRESCRIBER}
    assert {r["drug_and_dose"] for r in rows_csv} == {
        "baclofen 20 MG Oral Tablet: 20 mg 3 times a day, oral"
    }
    assert {r["reviewer"] for r in rows_csv} == {"browser.pharm"}
    escalated = [r for r in rows_csv if r["review_status"] == "escalated"]
    assert len(escalated) == 4 and {r["escalated_to"] for r in escalated} == {"renal.pharm"}
    assert {r["review_note"] for r in escalated} == {
        "CrCl 22: please review the dose with the renal team."
    }
    reasons = {r["override_reason"] for r in rows_csv} - {""}
    assert reasons == {"Not applicable to this patient", "Disagree with the evidence"}
    assert sum(int(r["accepted_count"]) for r in rows_csv) == 2
    assert sum(1 for r in rows_csv if r["repeat_of"]) == 9  # 3 problems: 3 repeats each
    assert all(r["created_at_local"].endswith(("GMT", "BST")) for r in rows_csv)
    sheet = context.new_page()
    sheet.set_content(_csv_page(text))
    _shot(sheet, "export", full_page=False)
    sheet.close()

    # --- the colleague: "Escalated to me", then resolve every firing --------------------
    colleague = browser.new_context(viewport={"width": 1366, "height": 900})
    other = colleague.new_page()
    other_errors = _watch(other)
    _sign_in(other, server.base, "renal.pharm")
    expect(other.locator(".stat-escalated")).to_contain_text("4 escalated to you")
    other.click(".stat-escalated")
    expect(other.locator("section.patient")).to_have_count(1)
    expect(other.locator("section.patient table.problems tbody tr")).to_have_count(1)
    expect(other.locator("section.patient .fired")).to_have_text("4×")
    other.goto(detail_url)
    other.fill("textarea[name=note]", "Reduced to 5 mg three times daily with the ward.")
    other.click("button[value=resolve]")
    expect(other.locator(".alert-head .status")).to_have_text("resolved")
    other.goto(f"{server.base}/review/alerts?escalated=me")
    expect(other.locator(".empty")).to_contain_text("No alerts match")
    assert not other_errors, other_errors
    colleague.close()
    page.goto(f"{server.base}/review/alerts?patient={MRN_A}")
    expect(_patient(page, NAME_A).locator(".count-open")).to_contain_text("2 open problems")

    # --- a tablet in portrait: the grouped queue still reads ---------------------------
    tablet = browser.new_context(viewport={"width": 768, "height": 1024})
    tablet.add_cookies(context.cookies())
    tpage = tablet.new_page()
    tpage.goto(f"{server.base}/review/alerts")
    expect(tpage.locator("h1")).to_have_text("Alert queue")
    _shot(tpage, "queue-tablet", full_page=False)
    tablet.close()

    # --- every card, the audit view, still pages by keyset -----------------------------
    page.goto(f"{server.base}/review/alerts?view=cards")
    assert page.locator("table.queue tbody tr").count() == 50
    expect(page.locator("table.queue thead")).to_contain_text("Prescriber's answer")
    _shot(page, "queue-audit", full_page=False)

    # Sign out: the queue is out of reach again.
    page.click("button:has-text('Sign out')")
    expect(page.locator(".flash-ok")).to_contain_text("signed out")
    page.goto(f"{server.base}/review/alerts")
    expect(page).to_have_url(re.compile(r"/review/login"))
    assert not errors, errors
    context.close()


def _zone() -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(ZONE)


def _csv_page(text: str) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    keep = [
        "created_at_local",
        "patient_name",
        "patient_mrn",
        "drug_and_dose",
        "prescriber",
        "rule",
        "override_reason",
        "review_status",
        "reviewer",
        "review_note",
    ]
    idx = [rows[0].index(k) for k in keep]
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(r[i])}</td>" for i in idx) + "</tr>" for r in rows[1:]
    )
    head = "".join(f"<th>{k}</th>" for k in keep)
    return (
        "<style>body{font:13px system-ui;margin:12px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccd;padding:3px 6px;text-align:left}th{background:#eef}</style>"
        f"<p>cds-alerts.csv (the export, {len(rows) - 1} rows; columns abridged)</p>"
        f"<table><tr>{head}</tr>{body}</table>"
    )


def test_an_admin_unlocks_an_account_and_resets_its_password(server: Server, browser: Any) -> None:
    from playwright.sync_api import expect

    for _ in range(store_users.MAX_FAILURES):
        store_users.authenticate(
            maker=server.maker, username="locked.pharm", password="not the password"
        )
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    errors = _watch(page)
    _sign_in(page, server.base, "ada.admin", ADMIN_PASSWORD)
    page.click("nav.mainnav >> text=Users")
    row = page.locator("tr", has_text="locked.pharm")
    expect(row).to_contain_text("locked until")
    row.locator("button:has-text('Unlock')").click()
    expect(page.locator(".flash-ok")).to_have_text("Account unlocked.")
    expect(page.locator("tr", has_text="locked.pharm")).to_contain_text("active")
    # A forgotten password: a temporary one, typed twice (a mismatch is refused).
    row = page.locator("tr", has_text="locked.pharm")
    row.locator("summary:has-text('Set a new password')").click()
    row.locator("input[name=password]").fill("temporary pass 2026")
    row.locator("input[name=confirm]").fill("temporary pass 2027")
    row.locator("button:has-text('Set password')").click()
    expect(page.locator(".flash-error")).to_contain_text("the two passwords differ")
    row = page.locator("tr", has_text="locked.pharm")
    row.locator("input[name=password]").fill("temporary pass 2026")
    row.locator("input[name=confirm]").fill("temporary pass 2026")
    row.locator("button:has-text('Set password')").click()
    expect(page.locator(".flash-ok")).to_contain_text("Password set")
    _shot(page, "users")
    errors.clear()  # the refused mismatch was a 400 on purpose

    # The owner signs in with it and changes it to their own.
    owner = browser.new_context(viewport={"width": 1366, "height": 900})
    mine = owner.new_page()
    _sign_in(mine, server.base, "locked.pharm", "temporary pass 2026")
    expect(mine.locator("h1")).to_have_text("Alert queue")
    mine.click("a.who-name")
    mine.fill("input[name=current]", "temporary pass 2026")
    mine.fill("input[name=password]", "my own passphrase 7")
    mine.fill("input[name=confirm]", "my own passphrase 7")
    mine.click("button:has-text('Change password')")
    expect(mine.locator(".flash-ok")).to_have_text("Password changed.")
    mine.goto(f"{server.base}/review/alerts")  # still signed in
    expect(mine.locator("h1")).to_have_text("Alert queue")
    owner.close()
    assert (
        store_users.authenticate(
            maker=server.maker, username="locked.pharm", password="my own passphrase 7"
        ).outcome
        == "ok"
    )
    assert (
        store_users.authenticate(
            maker=server.maker, username="locked.pharm", password=PASSWORD
        ).outcome
        == "invalid"
    )
    assert not errors, errors
    context.close()


def test_plain_http_on_a_host_name_says_what_to_set(tmp_path: Path, pw: Any) -> None:
    """Secure cookies (the default) over plain HTTP on a host name: the browser drops the
    sign-in cookie, so the page says so and what to set, before and after trying."""
    from playwright.sync_api import expect

    url = f"sqlite:///{tmp_path / 'secure.db'}"
    upgrade(url)
    engine = make_engine(url)
    maker = make_sessionmaker(engine)
    make_user(maker, "http.pharm")
    srv, port = _serve(
        Settings(database_url=url, session_secret=SECRET, auth="off", packs=""), maker
    )
    b = pw.chromium.launch(
        executable_path=str(CHROMIUM),
        headless=True,
        args=[*LAUNCH_ARGS, "--host-resolver-rules=MAP console.test 127.0.0.1"],
    )
    try:
        page = b.new_page()
        page.goto(f"http://console.test:{port}/review/login")
        warning = page.locator(".login-warning")
        expect(warning).to_contain_text("CDS_SECURE_COOKIES=false")
        expect(warning).to_contain_text("HTTPS")
        _shot(page, "login-plain-http")
        page.fill("input[name=username]", "http.pharm")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]:has-text('Sign in')")
        expect(page.locator("h1")).to_have_text("Sign-in form expired")
        expect(page.locator("main")).to_contain_text("CDS_SECURE_COOKIES=false")
        # The same server on 127.0.0.1: the browser keeps Secure cookies there.
        page.goto(f"http://127.0.0.1:{port}/review/login")
        expect(page.locator(".login-warning")).to_have_count(0)
        page.fill("input[name=username]", "http.pharm")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]:has-text('Sign in')")
        expect(page.locator("h1")).to_have_text("Alert queue")
    finally:
        b.close()
        srv.should_exit = True
        engine.dispose()
    with maker() as s:
        assert s.scalar(select(User.failed_attempts).where(User.username == "http.pharm")) == 0
