"""The queue as a pharmacist works it: by patient, problems with their repeats, group
actions, escalation to someone, search, the site's time zone, every answer counted.

Through the real app (``create_app``) and a migrated database; cards are written by the
real audit path (``add_card``) or bulk-seeded the way that path writes them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cds.settings import Settings
from cds.store import console as store
from cds.store.audit import FeedbackItem, store_feedback
from cds.store.models import Card, Review, User
from tests.console.conftest import SECRET, build_app, login, make_user, page_token
from tests.console.seed import add_card, seed_cards

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
PATIENT_SECTION = re.compile(r'<section class="panel patient" aria-label="Patient ([^"]+)">')


def _problem_card(maker: sessionmaker[Session], when: datetime, **kw: object) -> str:
    """One firing of the renal problem on order ``mr-fixed`` of Patient/w-1."""
    card_id = add_card(maker, when=when, patient="Patient/w-1", **kw)  # type: ignore[arg-type]
    with maker.begin() as s:  # the same order each time (add_card makes one per card)
        card = s.get(Card, card_id)
        assert card is not None
        first = s.scalar(
            select(Card.id)
            .where(Card.patient_ref == "Patient/w-1", Card.order_id == "mr-fixed")
            .order_by(Card.created_at, Card.id)
            .limit(1)
        )
        card.order_id = "mr-fixed"
        card.problem_id = first or card.id
    return card_id


def _uid(maker: sessionmaker[Session], name: str) -> int:
    with maker() as s:
        uid = s.scalar(select(User.id).where(User.username == name))
        assert uid is not None
        return uid


def test_grouped_pages_show_every_patient_once_newest_activity_first(
    signed_in: TestClient, maker: sessionmaker[Session]
) -> None:
    seed_cards(maker, 600, end=NOW, days=20, seed=9, patients=80)
    for query in ("", "&indicator=warning", "&review_status=unreviewed&hide_dq=1"):
        seen: list[str] = []
        url = f"/review/alerts?patients=10{query}"
        while url:
            html = signed_in.get(url).text
            seen += PATIENT_SECTION.findall(html)
            m = re.search(r'href="([^"]*start=[^"]+)" rel="next"', html)
            url = m.group(1).replace("&amp;", "&") if m else ""
        with maker() as s:
            f = store.QueueFilter(
                indicator="warning" if "warning" in query else None,
                review_status="unreviewed" if "unreviewed" in query else None,
                hide_data_quality=True if "hide_dq" in query else None,
            )
            scope = store._scope(s, f)
            newest: dict[str, tuple[datetime, str]] = {}
            for ref, name, at, card_id in s.execute(
                select(Card.patient_ref, Card.patient_name, Card.created_at, Card.id).where(
                    *store._conditions(scope)
                )
            ):
                key = name or ref
                newest[key] = max(newest.get(key, (at, card_id)), (at, card_id))
        expected = sorted(newest, key=lambda k: newest[k], reverse=True)
        assert [p.replace("&#39;", "'") for p in seen] == expected, query


def test_a_problem_is_one_row_with_how_often_it_fired(
    signed_in: TestClient, maker: sessionmaker[Session]
) -> None:
    ids = [_problem_card(maker, NOW + timedelta(minutes=i)) for i in range(4)]
    html = signed_in.get("/review/alerts?patient=w-1").text
    assert html.count('<tr class="sev-critical status-unreviewed">') == 1
    assert '<strong class="fired">4×</strong>' in html
    assert f'href="/review/alerts/{ids[-1]}"' in html  # the newest firing is the link
    assert "1</strong> open problem" in html and "1</strong> new" in html
    detail = signed_in.get(f"/review/alerts/{ids[0]}").text
    assert "fired <strong>4 times</strong>" in detail
    assert "Apply to all 4 open firings of this problem" in detail


def test_a_group_action_covers_what_was_shown_and_records_each_card(
    signed_in: TestClient, maker: sessionmaker[Session], pharmacist: object
) -> None:
    ids = [_problem_card(maker, NOW + timedelta(minutes=i)) for i in range(3)]
    other_order = add_card(maker, when=NOW, patient="Patient/w-1", indicator="warning")
    # one firing already escalated: acknowledging the patient must not downgrade it
    with maker.begin() as s:
        store.add_review(
            session=s,
            card_id=ids[0],
            action="escalate",
            note="renal team",
            reviewer_id=_uid(maker, "pat.pharm"),
            now=NOW,
            escalate_to=store.Escalation(role="pharmacist"),
        )
    drawn = NOW + timedelta(minutes=10)
    late = _problem_card(maker, NOW + timedelta(minutes=30))  # arrived after the page
    response = signed_in.post(
        "/review/alerts/group",
        data={
            "csrf_token": page_token(signed_in),
            "action": "acknowledge",
            "patient": "Patient/w-1",
            "q": "indicator=critical",  # the page showed critical alerts only
            "upto": drawn.isoformat(),
        },
    )
    assert response.status_code == 303
    assert "done=acknowledge" in response.headers["location"]
    assert "n=2" in response.headers["location"]
    assert "indicator=critical" in response.headers["location"]  # back to the same view
    with maker() as s:
        status = {c.id: c.review_status for c in s.scalars(select(Card))}
        assert [status[i] for i in ids] == ["escalated", "acknowledged", "acknowledged"]
        assert status[other_order] == "unreviewed"  # filtered out of the page
        assert status[late] == "unreviewed"  # not on the page when it was drawn
        group = s.scalars(select(Review).where(Review.action == "acknowledge")).all()
        assert len(group) == 2 and len({r.batch_id for r in group}) == 1
        assert group[0].batch_id is not None
    flash = signed_in.get(response.headers["location"]).text
    assert "Acknowledged 2 alerts." in flash


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"action": "delete", "patient": "Patient/w-1"}, "Unknown group action"),
        ({"action": "acknowledge", "patient": ""}, "names no patient"),
        ({"action": "acknowledge", "patient": "x" * 600}, "names no patient"),
        ({"action": "escalate", "patient": "Patient/w-1"}, "escalate needs a note"),
        (
            {"action": "escalate", "patient": "Patient/w-1", "note": "n"},
            "choose who to escalate to",
        ),
        (
            {"action": "escalate", "patient": "Patient/w-1", "note": "n", "escalate_to": "god"},
            "choose who to escalate to",
        ),
        (
            {"action": "resolve", "patient": "Patient/w-1", "note": "x" * 4001},
            "at most 4000 characters",
        ),
        ({"action": "resolve", "patient": "Patient/w-1", "upto": "yesterday"}, "not a time"),
        (
            {"action": "resolve", "patient": "Patient/w-1", "upto": "0001-01-01T00:00:00+14:00"},
            "not a time",
        ),
        ({"do": "action=delete&order=x", "patient": "Patient/w-1"}, "Unknown group action"),
    ],
)
def test_bad_group_actions_are_a_clear_400(
    signed_in: TestClient, maker: sessionmaker[Session], data: dict[str, str], message: str
) -> None:
    _problem_card(maker, NOW)
    response = signed_in.post(
        "/review/alerts/group", data={**data, "csrf_token": page_token(signed_in)}
    )
    assert response.status_code == 400, response.text
    assert message in response.text
    with maker() as s:
        assert not s.scalars(select(Review)).all()


def test_escalated_to_me_means_my_name_or_my_role(
    client: TestClient, maker: sessionmaker[Session]
) -> None:
    alice = make_user(maker, "alice.pharm")
    make_user(maker, "bob.pharm")
    admin = make_user(maker, "ann.admin", "admin password 123", "admin")
    to_alice = add_card(maker, when=NOW, patient="Patient/e-1")
    to_role = add_card(maker, when=NOW, patient="Patient/e-2")
    to_admins = add_card(maker, when=NOW, patient="Patient/e-3")
    assert login(client, alice).status_code == 303  # type: ignore[attr-defined]
    for card_id, target in (
        (to_alice, f"user:{_uid(maker, 'alice.pharm')}"),
        (to_role, "role:pharmacist"),
        (to_admins, "role:admin"),
    ):
        response = client.post(
            f"/review/alerts/{card_id}/review",
            data={
                "action": "escalate",
                "note": "please look",
                "escalate_to": target,
                "csrf_token": page_token(client),
            },
        )
        assert response.status_code == 303
    mine = client.get("/review/alerts?escalated=me&view=cards").text
    assert to_alice in mine and to_role in mine and to_admins not in mine
    assert "2</strong> escalated to you" in mine
    client.post("/review/logout", data={"csrf_token": page_token(client)})
    bob = TestClient(client.app, follow_redirects=False)
    assert login(bob, store_account("bob.pharm")).status_code == 303  # type: ignore[attr-defined]
    theirs = bob.get("/review/alerts?escalated=me&view=cards").text
    assert to_role in theirs and to_alice not in theirs and to_admins not in theirs
    admins = TestClient(client.app, follow_redirects=False)
    assert login(admins, admin).status_code == 303  # type: ignore[attr-defined]
    theirs = admins.get("/review/alerts?escalated=me&view=cards").text
    assert to_admins in theirs and to_role not in theirs
    # Resolving clears the assignment: it leaves everybody's "escalated to me".
    response = bob.post(
        f"/review/alerts/{to_role}/review",
        data={"action": "resolve", "csrf_token": page_token(bob)},
    )
    assert response.status_code == 303
    assert to_role not in bob.get("/review/alerts?escalated=me&view=cards").text
    with maker() as s:
        card = s.get(Card, to_role)
        assert card is not None and card.escalated_to_role is None
    # A disabled account cannot be escalated to.
    with maker.begin() as s:
        user = s.scalar(select(User).where(User.username == "bob.pharm"))
        assert user is not None
        user.disabled = True
        bob_id = user.id
    response = admins.post(
        f"/review/alerts/{to_alice}/review",
        data={
            "action": "escalate",
            "note": "x",
            "escalate_to": f"user:{bob_id}",
            "csrf_token": page_token(admins),
        },
    )
    assert response.status_code == 400 and "choose who to escalate to" in response.text


def store_account(name: str) -> object:
    from tests.console.conftest import PASSWORD, Account

    return Account(name, PASSWORD, "pharmacist")


def test_search_by_mrn_name_or_id_and_no_wildcards(
    signed_in: TestClient, maker: sessionmaker[Session]
) -> None:
    seed_cards(maker, 300, end=NOW, days=10, seed=4, patients=40)
    with maker() as s:
        ref, name, mrn = s.execute(
            select(Card.patient_ref, Card.patient_name, Card.patient_mrn).limit(1)
        ).one()
    family, given = name.split(", ")
    for term in (mrn, f"{given.lower()} {family.upper()}", ref, ref.split("/")[1]):
        html = signed_in.get(f"/review/alerts?patient={term}").text
        sections = PATIENT_SECTION.findall(html)
        assert sections and all(s == name for s in sections), term
    for wild in ("%", "_", "%%", "\\"):
        html = signed_in.get("/review/alerts", params={"patient": wild}).text
        assert not PATIENT_SECTION.findall(html), wild
        assert "No alerts match" in html


def test_times_and_days_are_the_sites(maker: sessionmaker[Session], db_url: str) -> None:
    """23:30 UTC on 29 March 2026 is 00:30 BST on the 30th in London."""
    late = datetime(2026, 3, 29, 23, 30, tzinfo=UTC)
    card_id = add_card(maker, when=late, patient="Patient/tz-1")
    make_user(maker, "tz.pharm")
    for zone, day, other_day, shown in (
        ("Europe/London", "2026-03-30", "2026-03-29", "2026-03-30 00:30 BST"),
        ("UTC", "2026-03-29", "2026-03-30", "2026-03-29 23:30 UTC"),
    ):
        app = build_app(
            Settings(
                database_url=db_url,
                secure_cookies=False,
                session_secret=SECRET,
                auth="off",
                packs="",
                site_timezone=zone,
            ),
            maker,
        )
        with TestClient(app, follow_redirects=False) as c:
            assert login(c, store_account("tz.pharm")).status_code == 303  # type: ignore[attr-defined]
            assert card_id in c.get(f"/review/alerts?since={day}&until={day}").text
            assert card_id not in c.get(f"/review/alerts?since={other_day}&until={other_day}").text
            assert shown in c.get(f"/review/alerts/{card_id}").text
            board = c.get(f"/review/rules?since={day}&until={day}").text
            assert '<td class="num">1</td>' in board  # the card is in that site day
            empty = c.get(f"/review/rules?since={other_day}&until={other_day}").text
            assert "No cards in this period." in empty
    with maker() as s:
        board = store.dashboard(
            session=s,
            since=datetime(2026, 3, 30, tzinfo=ZoneInfo("Europe/London")),
            until=datetime(2026, 3, 31, tzinfo=ZoneInfo("Europe/London")),
            tz=ZoneInfo("Europe/London"),
        )
        assert [p.day.isoformat() for p in board.days] == ["2026-03-30"]


def _feedback(maker: sessionmaker[Session], card_id: str, outcome: str, minute: int, **kw: str):
    return store_feedback(
        maker=maker,
        service_id="baclofen-order-sign",
        received_at=NOW,
        items=[
            FeedbackItem(
                card_id=card_id,
                outcome=outcome,
                accepted_suggestions=[],
                override_code=kw.get("code"),
                override_system=kw.get("system"),
                override_display=kw.get("display"),
                override_comment=None,
                outcome_timestamp=NOW + timedelta(minutes=minute),
            )
        ],
    )


def test_every_answer_counts_and_reasons_are_in_the_words_offered(
    signed_in: TestClient, maker: sessionmaker[Session]
) -> None:
    """Four acceptances on three cards are four acceptances (the old dashboard said 3)."""
    ids = [add_card(maker, when=NOW, rule_id="rule-x", category="dose-ceiling") for _ in range(3)]
    for i, card_id in enumerate(ids):
        _feedback(maker, card_id, "accepted", i)
    _feedback(maker, ids[0], "accepted", 9)  # sent again, later
    # an override coded with the card's own reason code and no words
    _feedback(maker, ids[1], "overridden", 10, code="specialist-advice", system="x")
    # an override whose code the card never offered: the EHR's words, else the code
    _feedback(maker, ids[2], "overridden", 11, code="zz-unknown", display="Patient refused")
    with maker() as s:
        cards = {c.id: c for c in s.scalars(select(Card).where(Card.id.in_(ids)))}
        assert [(cards[i].accepted_n, cards[i].overridden_n) for i in ids] == [
            (2, 0),
            (1, 1),
            (1, 1),
        ]
        assert [cards[i].feedback_state for i in ids] == ["accepted", "both", "both"]
        assert cards[ids[1]].override_reason == "Dose advised by specialist"
        assert cards[ids[2]].override_reason == "Patient refused"
        assert cards[ids[1]].feedback_outcome == "overridden"  # the latest answer
        board = store.dashboard(session=s, since=NOW - timedelta(days=1), until=None)
    rule = next(r for r in board.rules if r.key == "rule-x")
    assert (rule.issued, rule.accepted, rule.overridden, rule.both) == (3, 4, 2, 2)
    assert rule.acceptance_rate == 4 / 6 and rule.with_feedback == 3
    assert dict(rule.reasons) == {"Dose advised by specialist": 1, "Patient refused": 1}
    detail = signed_in.get(f"/review/alerts/{ids[1]}").text
    assert "Reason: <strong>Dose advised by specialist</strong>" in detail
    assert "Accepted and overridden." in detail
    overridden = signed_in.get("/review/alerts?view=cards&feedback=overridden").text
    assert ids[1] in overridden and ids[2] in overridden and ids[0] not in overridden
    both = signed_in.get("/review/alerts?view=cards&feedback=both").text
    assert ids[0] not in both and ids[1] in both
    none = signed_in.get("/review/alerts?view=cards&feedback=none").text
    assert not any(i in none for i in ids)


def test_time_to_review_is_from_issue_to_the_first_action(
    maker: sessionmaker[Session], pharmacist: object
) -> None:
    uid = _uid(maker, "pat.pharm")
    waits = [5, 30, 90]
    for minutes in waits:
        card_id = add_card(maker, when=NOW, rule_id="rule-t", category="dose-ceiling")
        for later, action in ((minutes, "acknowledge"), (minutes + 600, "resolve")):
            with maker.begin() as s:
                store.add_review(
                    session=s,
                    card_id=card_id,
                    action=action,
                    note=None,
                    reviewer_id=uid,
                    now=NOW + timedelta(minutes=later),
                )
    add_card(maker, when=NOW, rule_id="rule-t", category="dose-ceiling")  # not reviewed yet
    with maker() as s:
        board = store.dashboard(session=s, since=NOW - timedelta(days=1), until=None)
    rule = next(r for r in board.rules if r.key == "rule-t")
    assert rule.reviewed == 3 and rule.median_review_minutes == 30


def test_site_timezone_must_be_a_real_zone(tmp_path: object) -> None:
    import subprocess
    import sys
    from pathlib import Path

    cds = Path(sys.executable).with_name("cds")
    result = subprocess.run(
        [str(cds), "serve", "--port", "0"],
        env={
            "PATH": "/usr/bin:/bin",
            "CDS_SITE_TIMEZONE": "Mars/Olympus_Mons",
            "CDS_AUTH": "off",
            "CDS_DATABASE_URL": f"sqlite:///{tmp_path}/tz.db",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result
    assert "CDS_SITE_TIMEZONE" in result.stderr and "IANA" in result.stderr
    assert "Traceback" not in result.stderr
