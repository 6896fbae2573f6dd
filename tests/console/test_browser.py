"""The console in a real browser: Debian's Chromium driven by Playwright, against a real
uvicorn server on 127.0.0.1 and a seeded SQLite database.

Flow: sign in, filter the queue, open a critical alert, acknowledge it, see the history,
open the rules dashboard and its charts, sign out. Screenshots of the main pages go to
``test-artifacts/screenshots/`` (gitignored) for people to look at.

Never downloads a browser: without ``/usr/bin/chromium`` the test skips (``apt-get install
chromium``), and fails under CI=true.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import uvicorn

from cds.settings import Settings
from cds.store.db import make_engine, make_sessionmaker, upgrade
from tests.console.conftest import ARTIFACTS, SECRET, build_app, make_user
from tests.console.seed import add_card, seed_cards

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ARTIFACTS / "screenshots"
CRITICAL_SUMMARY = (
    "Baclofen 60 mg/day with eGFR 24 mL/min: stop or reduce to 5 mg three times daily"
)
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


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
    username: str
    password: str
    critical_id: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    _require_chromium()
    url = f"sqlite:///{tmp_path_factory.mktemp('browser') / 'console.db'}"
    upgrade(url)
    engine = make_engine(url)
    maker = make_sessionmaker(engine)
    now = datetime.now(UTC).replace(microsecond=0)
    seed_cards(maker, 3000, end=now - timedelta(hours=1), days=45)
    critical_id = add_card(
        maker,
        summary=CRITICAL_SUMMARY,
        when=now - timedelta(minutes=5),
        patient="Patient/browser-critical",
        extra_rules=[("baclofen-renal-egfr-30-59", "warning")],
    )
    account = make_user(maker, "browser.pharm")
    settings = Settings(
        database_url=url, secure_cookies=False, session_secret=SECRET, auth="off", packs=""
    )
    app = build_app(settings, maker)
    port = _free_port()
    srv = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield Server(f"http://127.0.0.1:{port}", account.username, account.password, critical_id)
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        engine.dispose()


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        try:
            yield b
        finally:
            b.close()


def _shot(page: object, name: str, full_page: bool = True) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)  # type: ignore[attr-defined]


def test_review_flow(server: Server, browser: object) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1366, "height": 900})  # type: ignore[attr-defined]
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)

    # Anonymous: the queue sends us to the sign-in page.
    page.goto(f"{server.base}/review/alerts")
    expect(page).to_have_url(f"{server.base}/review/login?next=%2Freview%2Falerts")
    _shot(page, "login")

    page.fill("input[name=username]", server.username)
    page.fill("input[name=password]", server.password)
    page.click("button[type=submit]:has-text('Sign in')")
    expect(page.locator("h1")).to_have_text("Alert queue")
    assert page.locator("table.queue tbody tr").count() == 50
    _shot(page, "queue", full_page=False)

    # Filter: critical and unreviewed.
    page.select_option("select[name=indicator]", "critical")
    page.select_option("select[name=review_status]", "unreviewed")
    page.click("button:has-text('Apply filters')")
    expect(page).to_have_url(re.compile(r"indicator=critical.*review_status=unreviewed"))
    badges = page.locator("table.queue tbody .badge").all_inner_texts()
    assert badges and {b.strip().lower() for b in badges} == {"critical"}
    first = page.locator("table.queue tbody tr").first
    expect(first).to_have_class(re.compile(r"\bsev-critical\b.*\bstatus-unreviewed\b"))
    _shot(page, "queue-filtered", full_page=False)

    # Open the critical alert (newest critical card).
    page.click(f"text={CRITICAL_SUMMARY}")
    expect(page.locator("h1.alert-title")).to_have_text(CRITICAL_SUMMARY)
    expect(page.locator(".alert-head .status")).to_have_text("unreviewed")
    assert page.locator("text=Facts it used").count() == 1
    assert page.locator("text=baclofen-renal-egfr-30-59").count() >= 1
    _shot(page, "detail")

    # Acknowledge with a note; the history shows it.
    page.fill("textarea[name=note]", "Called the ward; dose held pending renal review.")
    page.click("button[value=acknowledge]")
    expect(page.locator(".flash-ok")).to_contain_text("Acknowledged")
    expect(page.locator(".alert-head .status")).to_have_text("acknowledged")
    history = page.locator("ol.history li").first
    expect(history).to_contain_text("Acknowledged by browser.pharm")
    expect(history).to_contain_text("dose held pending renal review")
    _shot(page, "detail-acknowledged")

    # The dashboard and its two charts.
    page.click("nav.mainnav >> text=Rules")
    expect(page.locator("h1")).to_have_text("Rules dashboard")
    assert page.locator("svg.chart").count() == 2
    assert page.locator("svg.chart rect").count() > 10
    _shot(page, "dashboard")

    # A tablet in portrait: the queue still reads (rows stack).
    tablet = browser.new_context(viewport={"width": 768, "height": 1024})  # type: ignore[attr-defined]
    tablet.add_cookies(context.cookies())
    tpage = tablet.new_page()
    tpage.goto(f"{server.base}/review/alerts?indicator=critical")
    expect(tpage.locator("h1")).to_have_text("Alert queue")
    _shot(tpage, "queue-tablet", full_page=False)
    tablet.close()

    # Sign out: the queue is out of reach again.
    page.click("button:has-text('Sign out')")
    expect(page.locator(".flash-ok")).to_contain_text("signed out")
    page.goto(f"{server.base}/review/alerts")
    expect(page).to_have_url(re.compile(r"/review/login"))
    assert not errors, errors
    context.close()
