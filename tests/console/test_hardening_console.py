"""The hardening issue, review console side, in process (SQLite). PostgreSQL variants are in
``tests/store/test_hardening_postgres.py``; the separate listener and the sign-in flood
over real HTTP in ``tests/web/test_hardening_servers.py`` and ``bench/signin_flood.py``."""

from __future__ import annotations

import base64
import csv
import io
import logging
import re
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from cds.settings import Settings
from cds.store import users as store_users
from cds.web.console import throttle
from tests.console.conftest import (
    PASSWORD,
    SECRET,
    Account,
    build_app,
    login,
    make_user,
    page_token,
)
from tests.console.seed import add_card

FORM = {"content-type": "application/x-www-form-urlencoded"}


def app_with(db_url: str, maker: sessionmaker[Session], **overrides: Any) -> Any:
    settings = Settings(
        **{
            "database_url": db_url,
            "secure_cookies": False,
            "session_secret": SECRET,
            "auth": "off",
            **overrides,
        }
    )
    return build_app(settings, maker)


@pytest.fixture
def strict_client(db_url: str, maker: sessionmaker[Session]) -> Iterator[TestClient]:
    app = app_with(db_url, maker, login_rate_per_client=3, login_rate_global=100)
    with TestClient(app, follow_redirects=False) as c:
        yield c


# ------------------------------------------------------------------ #1: sign-in bounds


def test_sign_in_attempts_past_the_per_client_rate_get_a_429_page(
    strict_client: TestClient, pharmacist: Account
) -> None:
    for _ in range(3):
        assert login(strict_client, pharmacist, password="wrong password!").status_code == 401  # type: ignore[attr-defined]
    refused = login(strict_client, pharmacist)
    assert refused.status_code == 429  # type: ignore[attr-defined]
    assert "Too many sign-in attempts" in refused.text  # type: ignore[attr-defined]
    assert int(refused.headers["retry-after"]) >= 1  # type: ignore[attr-defined]
    assert refused.headers["content-security-policy"]  # type: ignore[attr-defined]


def test_the_global_sign_in_rate_covers_every_client(
    db_url: str, maker: sessionmaker[Session], pharmacist: Account
) -> None:
    app = app_with(db_url, maker, login_rate_per_client=1000, login_rate_global=1)
    with TestClient(app, follow_redirects=False) as c:
        statuses = [login(c, Account(f"nobody{i}", "x" * 12, "pharmacist")) for i in range(5)]
    codes = [r.status_code for r in statuses]  # type: ignore[attr-defined]
    assert codes[:2] == [401, 401] and 429 in codes[2:], codes


def test_the_hashing_pool_is_bounded_and_refuses_when_full() -> None:
    pool = throttle.HashExecutor(threads=1, queue=1)
    release = threading.Event()
    results: list[Any] = []

    async def main() -> None:
        async with anyio.create_task_group() as tg:

            async def blocked() -> None:
                results.append(await pool.run(release.wait))

            tg.start_soon(blocked)
            tg.start_soon(blocked)
            await anyio.sleep(0.2)
            assert pool.in_flight == 2
            with pytest.raises(throttle.Busy):
                await pool.run(lambda: None)  # both slots taken: refused at once
            release.set()
        assert await pool.run(threading.current_thread) is not threading.current_thread()

    anyio.run(main)
    pool.shutdown()
    assert results == [True, True]


def test_sign_in_runs_on_the_hashing_pool_not_the_shared_threads(
    client: TestClient, pharmacist: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    real = store_users.authenticate

    def spy(**kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real(**kwargs)

    monkeypatch.setattr(store_users, "authenticate", spy)
    assert login(client, pharmacist).status_code == 303  # type: ignore[attr-defined]
    assert threads and all(t.startswith("cds-hash") for t in threads), threads


def test_a_full_hashing_pool_answers_429(
    client: TestClient, pharmacist: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = client.app.state.hash_executor  # type: ignore[attr-defined]
    monkeypatch.setattr(pool, "_slots", threading.BoundedSemaphore(1))
    pool._slots.acquire()  # every slot taken
    refused = login(client, pharmacist)
    assert refused.status_code == 429  # type: ignore[attr-defined]
    assert refused.headers["retry-after"]  # type: ignore[attr-defined]


def test_console_pages_are_served_while_every_hook_api_thread_is_busy(
    signed_in: TestClient,
) -> None:
    """The console's blocking handlers have threads of their own."""
    holders: list[object] = []

    async def take_all_shared_threads() -> None:
        limiter = anyio.to_thread.current_default_thread_limiter()
        while limiter.available_tokens:
            holder = object()
            await limiter.acquire_on_behalf_of(holder)
            holders.append(holder)

    async def give_back() -> None:
        limiter = anyio.to_thread.current_default_thread_limiter()
        for holder in holders:
            limiter.release_on_behalf_of(holder)

    portal = signed_in.portal  # type: ignore[attr-defined]
    portal.call(take_all_shared_threads)
    try:
        assert holders
        assert signed_in.get("/review/alerts").status_code == 200
        assert signed_in.get("/review/rules").status_code == 200
    finally:
        portal.call(give_back)


def test_rate_limiter_buckets() -> None:
    now = [0.0]
    limiter = throttle.RateLimiter(per_key_per_minute=2, global_per_second=10, clock=lambda: now[0])
    assert limiter.check("a") == 0 and limiter.check("a") == 0
    wait = limiter.check("a")
    assert 0 < wait <= 30
    assert limiter.check("b") == 0  # another client is not held back by "a"
    now[0] += 30
    assert limiter.check("a") == 0
    assert throttle.retry_after(0.2) == "1" and throttle.retry_after(2.1) == "3"


# ------------------------------------------------------------------ #7 and #11: bodies


def test_an_anonymous_post_is_refused_before_its_body_is_read(client: TestClient) -> None:
    sent: list[int] = []

    def body() -> Iterator[bytes]:
        for i in range(1000):  # 10 MB if anyone reads it
            sent.append(i)
            yield b"a" * 10_000

    resp = client.post("/review/alerts/some-card/review", content=body(), headers=FORM)
    assert resp.status_code == 303 and "/review/login" in resp.headers["location"]
    assert len(sent) <= 1, len(sent)


def test_multipart_is_refused_before_it_is_read(client: TestClient) -> None:
    sent: list[int] = []

    def body() -> Iterator[bytes]:
        for i in range(1000):
            sent.append(i)
            yield b"--x\r\n" + b"a" * 10_000

    for headers in (
        {"content-type": "multipart/form-data; boundary=x"},
        {"content-type": "multipart/form-data"},  # no boundary
    ):
        resp = client.post("/review/login", content=body(), headers=headers)
        assert resp.status_code == 415, resp.text
        assert "file uploads are not accepted" in resp.text
    assert len(sent) <= 2


def test_malformed_anonymous_forms_are_4xx_pages_never_a_500(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    cases = {
        "1,001 fields": ("&".join(f"f{i}=v" for i in range(1001)), FORM, 400),
        "a 2 MB field": ("username=" + "a" * 2_000_000, FORM, 413),
        "multipart without boundary": ("x", {"content-type": "multipart/form-data"}, 415),
        "declared length over the cap": ("a=b", {**FORM, "content-length": "99999999"}, 413),
        "not UTF-8": (b"username=%ff%fe", FORM, 400),
    }
    for name, (body, headers, status) in cases.items():
        resp = client.post("/review/login", content=body, headers=headers)
        assert resp.status_code == status, (name, resp.status_code)
        assert "<html" in resp.text and "Traceback" not in resp.text
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_nul_in_a_form_is_refused(signed_in: TestClient, maker: sessionmaker[Session]) -> None:
    card = add_card(maker)
    token = page_token(signed_in)
    resp = signed_in.post(
        f"/review/alerts/{card}/review",
        data={"action": "annotate", "note": "a\x00b", "csrf_token": token},
    )
    assert resp.status_code == 400


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "query",
    [
        "until=9999-12-31",
        "since=0001-01-01&until=9999-12-31",
        f"before={_cursor('9999-12-31T23:59:59-01:00|x')}",
        f"after={_cursor('0001-01-01T00:00:00+14:00|x')}",
        f"before={_cursor('2026-11-20T12:00:00+00:00|a' + chr(0) + 'b')}",
        f"before={_cursor('2026-11-20T12:00:00+00:00|' + 'x' * 5000)}",
        "rule=%00&patient=Patient%2F%00",
        "indicator=%00critical",
        # the console as a pharmacist uses it (migration 0006): new filters and views
        f"start={_cursor('9999-12-31T23:59:59-01:00|x')}",
        f"start={_cursor('0001-01-01T00:00:00+14:00|' + 'y' * 5000)}",
        "patients=-5&per_page=0&view=%00cards",
        "view=cards&feedback=%00overridden&source=%ff&pack=%00",
        "patient=%25%25%25&hide_dq=%00&escalated=you",
        "patient=" + "x" * 600 + "&run=" + "r" * 600,
        "patient=%E2%80%AE%F0%9F%92%8A&feedback=both&escalated=me",
        "rule=" + "r" * 300 + "&threshold=999999999999999999999&min_cards=-1",
    ],
)
def test_crafted_queue_queries_are_a_page_not_a_500(
    signed_in: TestClient, maker: sessionmaker[Session], query: str
) -> None:
    add_card(maker)
    for path in ("/review/alerts", "/review/alerts.csv", "/review/rules"):
        resp = signed_in.get(f"{path}?{query}")
        assert resp.status_code == 200, (path, query, resp.text[:300])


# ------------------------------------------------------------------ #12: CSV formulas


def test_the_csv_export_neutralises_formulas_after_any_separator(
    signed_in: TestClient, maker: sessionmaker[Session]
) -> None:
    add_card(maker, summary="x;=cmd|' /C calc'!A0, +1|@SUM(A1)\t-2", patient="p;=1")
    text = signed_in.get("/review/alerts.csv").text
    lines = text.splitlines()
    assert all(line.startswith('"') for line in lines)  # every field quoted
    row = list(csv.DictReader(io.StringIO(text)))[0]
    for column in ("summary", "patient"):
        for piece in re.split(r"[,;|\t\r\n]", row[column]):
            assert not piece.lstrip().startswith(("=", "+", "-", "@")), (column, piece)


# ------------------------------------------------------------------ #13: atomic lockout


def _burst(maker: sessionmaker[Session], username: str, passwords: list[str]) -> list[str]:
    barrier = threading.Barrier(len(passwords))
    outcomes: list[str] = [""] * len(passwords)

    def attempt(i: int) -> None:
        barrier.wait()
        outcomes[i] = store_users.authenticate(
            maker=maker, username=username, password=passwords[i]
        ).outcome

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(len(passwords))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return outcomes


def test_a_parallel_burst_verifies_at_most_max_failures(
    maker: sessionmaker[Session], pharmacist: Account
) -> None:
    outcomes = _burst(maker, pharmacist.username, ["wrong password!"] * 10)
    assert outcomes.count("invalid") == store_users.MAX_FAILURES, outcomes
    assert outcomes.count("locked") == 10 - store_users.MAX_FAILURES
    right = store_users.authenticate(
        maker=maker, username=pharmacist.username, password=pharmacist.password
    )
    assert right.outcome == "locked"


def test_unknown_usernames_lock_like_real_ones(maker: sessionmaker[Session]) -> None:
    outcomes = [
        store_users.authenticate(maker=maker, username="nobody", password="x" * 12).outcome
        for _ in range(store_users.MAX_FAILURES + 2)
    ]
    assert outcomes == ["invalid"] * store_users.MAX_FAILURES + ["locked", "locked"]
    burst = _burst(maker, "nobody-else", ["x" * 12] * 8)
    assert burst.count("invalid") == store_users.MAX_FAILURES


# ------------------------------------------------------------------ #18: usernames


def test_usernames_differing_by_case_are_one_account(
    client: TestClient, maker: sessionmaker[Session]
) -> None:
    make_user(maker, "alice")
    with pytest.raises(store_users.UserError, match="already exists"), maker.begin() as s:
        store_users.create_user(session=s, username="Alice", password=PASSWORD, role="admin")
    assert login(client, Account("ALICE", PASSWORD, "pharmacist")).status_code == 303  # type: ignore[attr-defined]
