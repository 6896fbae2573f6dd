"""Shadow packs in process (the sidecar's worker on a thread, as an app given its own
sessionmaker runs it): cards stored apart and never answered, errors and timeouts
contained, a full queue dropping instead of waiting, broken shadow packs refused, what
prescribers did with the live cards, and the console's rule-changes page."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from cds.hooks.compare import CardView, compare
from cds.hooks.shadow import Sidecar, SidecarConfig, hand_off
from cds.settings import Settings
from cds.store.db import make_engine, make_sessionmaker, upgrade
from cds.store.models import Card
from cds.store.models_replay import HookRequest, ShadowCard, ShadowEvaluation
from cds.store.shadow import shadow_summary
from cds.web.app import create_app
from tests.conftest import FIXED_NOW, PACK_VERSION, REPO
from tests.packcopy import (
    CANDIDATE_VERSION,
    US_CEILING_60,
    US_CEILING_80,
    changed_pack,
    renewal,
)

SIGN = "/cds-services/medication-safety-order-sign"


@pytest.fixture
def maker(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path / 'shadow.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def shadow_dir(tmp_path: Path) -> Path:
    return changed_pack(tmp_path, [(US_CEILING_80, US_CEILING_60)])


def _app(maker: sessionmaker[Session], **settings: Any) -> Any:
    url = str(maker.kw["bind"].url)
    base = {"database_url": url, "auth": "off", "secure_cookies": False, "session_secret": "s" * 32}
    return create_app(Settings(**{**base, **settings}), clock=lambda: FIXED_NOW, maker=maker)


def _rows(maker: sessionmaker[Session], model: Any) -> list[Any]:
    with maker() as s:
        return list(s.scalars(select(model)))


# ---- the comparison -------------------------------------------------------------------------


def _view(order: str, indicator: str, *rules: str, category: str = "dose-ceiling") -> CardView:
    return CardView("baclofen", order, category, "", indicator, rules[0], tuple(rules))


def test_compare_names_each_kind_of_change() -> None:
    before = [
        _view("a", "warning", "ceiling"),
        _view("b", "warning", "ceiling"),
        _view("c", "warning", "ceiling"),
        _view("d", "info", "child"),
        _view("e", "warning", "cap"),
    ]
    after = [
        _view("b", "critical", "ceiling"),
        _view("c", "warning", "ceiling", "cap"),
        _view("d", "info", "child"),
        _view("e", "warning", "cap"),
        _view("e", "warning", "renal", category="renal-adjustment"),
    ]
    got = {(c.key[1], c.key[2]): (c.kind, c.rule_id, c.direction) for c in compare(before, after)}
    assert got == {
        ("a", "dose-ceiling"): ("disappear", "ceiling", -1),
        ("b", "dose-ceiling"): ("severity", "ceiling", 1),
        ("c", "dose-ceiling"): ("rules", "ceiling", 0),
        ("d", "dose-ceiling"): ("same", "child", 0),
        ("e", "dose-ceiling"): ("same", "cap", 0),
        ("e", "renal-adjustment"): ("appear", "renal", 1),
    }


# ---- shadow mode over the app ---------------------------------------------------------------


def test_shadow_cards_are_stored_apart_and_never_answered(
    maker: sessionmaker[Session], shadow_dir: Path
) -> None:
    plain = _app(maker)
    with TestClient(plain) as client:
        expected = {d: client.post(SIGN, json=renewal(20, d)).json() for d in (4, 5)}
    with maker.begin() as s:  # start from an empty audit trail
        from sqlalchemy import delete

        from cds.store.models import CardRule, Invocation

        s.execute(delete(CardRule))
        s.execute(delete(Card))
        s.execute(delete(Invocation))

    app = _app(maker, shadow_packs=f"baclofen={shadow_dir}")
    with TestClient(app) as client:
        at80 = client.post(SIGN, json=renewal(20, 4))
        at100 = client.post(SIGN, json=renewal(20, 5))
        assert app.state.sidecar.wait_idle()
        # the EHR gets exactly the live answer: no 60 mg/day card, the 100 mg card says 80
        assert at80.json()["cards"] == [] == expected[4]["cards"]
        [live] = at100.json()["cards"]
        assert "exceeds the 80 mg/day" in live["summary"]
        assert [c["summary"] for c in expected[5]["cards"]] == [live["summary"]]
        assert app.state.sidecar.mode == "thread"

        evaluations = _rows(maker, ShadowEvaluation)
        assert len(evaluations) == 2 and {e.status for e in evaluations} == {"ok"}
        assert {(e.pack_version, e.live_version) for e in evaluations} == {
            (CANDIDATE_VERSION, PACK_VERSION)
        }
        rows = {r.change: r for r in _rows(maker, ShadowCard)}
        assert set(rows) == {"appear", "same"}
        appear, same = rows["appear"], rows["same"]
        assert appear.rule_id == "oral-daily-above-ceiling-us" and appear.live_card_id is None
        assert "exceeds the 60 mg/day" in appear.summary and appear.indicator == "warning"
        assert appear.card_json["summary"] == appear.summary  # the would-be card itself
        assert same.live_card_id == live["uuid"] and "60 mg/day" in same.summary
        # shadow cards are not audit cards: the live card is the only card issued
        assert [c.id for c in _rows(maker, Card)] == [live["uuid"]]
        assert _rows(maker, HookRequest) == []  # CDS_KEEP_REQUESTS_DAYS=0 keeps nothing

        # what the prescriber did with the live card on the same call
        feedback = client.post(
            f"{SIGN}/feedback",
            json={
                "feedback": [
                    {
                        "card": live["uuid"],
                        "outcome": "overridden",
                        "outcomeTimestamp": FIXED_NOW.isoformat(),
                        "overrideReason": {
                            "reason": live["overrideReasons"][0],
                            "userComment": "titrating under specialist care",
                        },
                    }
                ]
            },
        )
        assert feedback.status_code == 200, feedback.text
    with maker() as s:
        [summary] = shadow_summary(session=s)
    assert (summary.pack_id, summary.pack_version) == ("baclofen", CANDIDATE_VERSION)
    assert summary.evaluations == 2 and summary.changed_calls == 1 and summary.errors == 0
    [rule] = summary.rules
    assert (rule.rule_id, rule.would_be, rule.appear, rule.same) == (
        "oral-daily-above-ceiling-us",
        2,
        1,
        1,
    )
    assert (rule.live_cards, rule.live_overridden, rule.live_accepted) == (1, 1, 0)

    # the rule-changes page shows it to a pharmacist
    from tests.console.conftest import login, make_user

    account = make_user(maker, "shadow.pharm")
    with TestClient(_app(maker), follow_redirects=False) as client:
        assert login(client, account).status_code == 303  # type: ignore[attr-defined]
        since = (FIXED_NOW - timedelta(days=2)).date().isoformat()
        page = client.get(f"/review/rule-changes?since={since}&until={since[:8]}30")
        assert page.status_code == 200
        assert f"baclofen {CANDIDATE_VERSION} in shadow (live: {PACK_VERSION})" in page.text
        assert "oral-daily-above-ceiling-us" in page.text
        assert 'aria-current="page">Rule changes' in page.text
        assert str(escape("No replay yet")) in page.text
        # anonymous: the console's sign-in, as every console page
    with TestClient(_app(maker), follow_redirects=False) as anonymous:
        assert anonymous.get("/review/rule-changes").status_code in (302, 303)


def test_shadow_errors_and_timeouts_are_contained(
    maker: sessionmaker[Session], shadow_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    app = _app(maker, shadow_packs=f"baclofen={shadow_dir}")
    with TestClient(app) as client:
        worker = app.state.sidecar.worker
        pack = worker.shadow["baclofen"]

        secret = "-".join(("Jane", "Doe"))  # the source line the traceback shows has no name

        def boom(facts: Any) -> Any:
            raise RuntimeError(f"patient {secret}, 70 kg")  # never logged or stored

        monkeypatch.setattr(pack, "evaluate", boom)
        resp = client.post(SIGN, json=renewal(20, 5))
        assert resp.status_code == 200 and len(resp.json()["cards"]) == 1
        assert app.state.sidecar.wait_idle()

        def slow(facts: Any) -> Any:
            time.sleep(0.05)
            return []

        monkeypatch.setattr(pack, "evaluate", slow)
        worker.config = replace(worker.config, budget_seconds=0.01)
        resp = client.post(SIGN, json=renewal(20, 5))
        assert resp.status_code == 200 and len(resp.json()["cards"]) == 1
        assert app.state.sidecar.wait_idle()
    statuses = [(e.status, e.error) for e in _rows(maker, ShadowEvaluation)]
    assert statuses == [("error", "RuntimeError"), ("timeout", "EvaluationTimeout")]
    assert _rows(maker, ShadowCard) == []  # a failed evaluation has no would-be cards
    assert "Jane-Doe" not in caplog.text
    assert "RuntimeError" in caplog.text


def test_a_full_queue_drops_and_never_waits(maker: sessionmaker[Session]) -> None:
    config = SidecarConfig(
        database_url=str(maker.kw["bind"].url),
        rules_dir=str(REPO / "rules"),
        pack_ids=("baclofen",),
        profile="US",
        shadow=(),
        keep_days=7,
        budget_seconds=5,
    )
    sidecar = Sidecar(config, queue_size=2, maker=maker).start()
    release, stuck = threading.Event(), threading.Event()
    assert sidecar.worker is not None
    handle = sidecar.worker.handle

    def stuck_handle(batch: list[dict[str, Any]]) -> None:
        stuck.set()
        release.wait(10)
        handle(batch)

    sidecar.worker.handle = stuck_handle  # type: ignore[method-assign]
    try:
        assert sidecar.submit({"invocation_id": "first"})
        assert stuck.wait(5)  # the worker holds that one and waits
        took, results = [], []
        for i in range(6):
            t0 = time.perf_counter()
            results.append(sidecar.submit({"invocation_id": f"m{i}"}))
            took.append(time.perf_counter() - t0)
        assert results == [True, True, False, False, False, False]  # a queue of two
        assert sidecar.dropped == 4 and sidecar.submitted == 3
        assert max(took) < 1.0  # never waits for the stuck worker (it would wait 10 s)
    finally:
        release.set()
        sidecar.stop()

    class Broken:
        failed = 0

        def submit(self, message: dict[str, Any]) -> bool:
            raise RuntimeError("queue gone")

    broken = Broken()
    hand_off(
        broken,  # type: ignore[arg-type]
        invocation_id="i",
        service_id="s",
        call=None,  # type: ignore[arg-type]
        resources=[],
        received=FIXED_NOW,
        packs=[],
        cards=[],
    )
    assert broken.failed == 1  # counted, never raised into the hook call


def test_shadow_packs_that_cannot_load_never_touch_the_live(
    maker: sessionmaker[Session], tmp_path: Path, caplog
) -> None:
    broken = changed_pack(tmp_path, [("id: baclofen\n", "id: [baclofen\n")])
    other = changed_pack(tmp_path, [("id: baclofen\n", "id: baclofen2\n")])
    app = _app(maker, shadow_packs=f"baclofen={broken},gabapentin={other}")
    with TestClient(app) as client:
        resp = client.post(SIGN, json=renewal(20, 5))
        assert resp.status_code == 200 and len(resp.json()["cards"]) == 1
        worker = app.state.sidecar.worker
        assert worker.shadow == {}
        assert "pack.yaml" in worker.shadow_errors["baclofen"]
        assert "'baclofen2', not 'gabapentin'" in worker.shadow_errors["gabapentin"]
        assert app.state.sidecar.wait_idle()
    assert _rows(maker, ShadowEvaluation) == []
    assert "shadow pack baclofen" in caplog.text


def test_a_malformed_setting_stops_serve_with_one_line() -> None:
    from cds.cli import app

    result = CliRunner().invoke(app, ["serve"], env={"CDS_SHADOW_PACKS": "baclofen"})
    assert result.exit_code == 2
    assert "CDS_SHADOW_PACKS entry 'baclofen' is not pack=folder" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(app, ["serve"], env={"CDS_KEEP_REQUESTS_DAYS": "-1"})
    assert result.exit_code == 2 and "keep_requests_days" in result.output


def test_kept_requests_hold_what_was_fetched(
    fhir_server: Any, maker: sessionmaker[Session], tmp_path: Path
) -> None:
    """A call whose data the service fetched from the EHR's FHIR server is kept with that
    data (never the token), so a replay needs no server and gives the hook's answer."""
    import copy
    import json

    from cds.engine.registry import PackRegistry
    from cds.hooks.compare import views_of
    from cds.hooks.stored import StoredCall, evaluate_stored
    from cds.store.requests import decode_body

    full = json.loads((REPO / "fhir" / "examples" / "order-sign-renal-moderate.json").read_text())
    resources = []
    for value in full["prefetch"].values():
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            resources += [e["resource"] for e in value.get("entry", [])]
        elif isinstance(value, dict):
            resources.append(value)
    fhir_server.seed(resources)
    bare = copy.deepcopy(full)
    bare["prefetch"] = {"patient": full["prefetch"]["patient"]}
    bare["fhirServer"] = fhir_server.base_url
    bare["fhirAuthorization"] = {
        "access_token": fhir_server.token,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "user/*.read",
        "subject": "cds-service",
    }
    app = _app(maker, keep_requests_days=3, fhir_allowlist=fhir_server.base_url)
    with TestClient(app) as client:
        resp = client.post(SIGN, json=bare)
        assert resp.status_code == 200 and resp.json()["cards"], resp.text
        assert app.state.sidecar.wait_idle()
    [row] = _rows(maker, HookRequest)
    doc = decode_body(row.body)
    assert fhir_server.token not in json.dumps(doc) and fhir_server.base_url not in json.dumps(doc)
    kinds = {r["resourceType"] for r in doc["resources"]}
    assert {"Patient", "MedicationRequest", "Observation"} <= kinds  # fetched ones included
    seen = len(fhir_server.requests_seen())
    registry = PackRegistry(rules_dir=REPO / "rules", pack_ids=["baclofen"], profile="US")
    registry.load()
    replayed = evaluate_stored(StoredCall.from_doc(row.invocation_id, doc), registry.packs())
    assert len(fhir_server.requests_seen()) == seen  # nothing fetched again
    assert sorted(v.key for v in views_of(replayed.cards)) == sorted(
        (
            "baclofen",
            c["extension"][next(iter(c["extension"]))]["orderId"],
            c["source"]["topic"]["code"],
            "",
        )
        for c in resp.json()["cards"]
    )
    assert row.received_at.replace(tzinfo=UTC) == FIXED_NOW
    assert datetime.fromisoformat(doc["receivedAt"]) == FIXED_NOW


@pytest.mark.postgres
def test_shadow_on_postgresql(pg_url: str, shadow_dir: Path) -> None:
    upgrade(pg_url)
    engine = make_engine(pg_url)
    pg = make_sessionmaker(engine)
    try:
        app = _app(pg, shadow_packs=f"baclofen={shadow_dir}", keep_requests_days=1)
        with TestClient(app) as client:
            for freq in (4, 5, 4):
                assert client.post(SIGN, json=renewal(20, freq)).status_code == 200
            assert app.state.sidecar.wait_idle()
        with pg() as s:
            [summary] = shadow_summary(session=s, since=FIXED_NOW - timedelta(days=1))
            assert shadow_summary(session=s, until=FIXED_NOW - timedelta(days=1)) == []
        assert summary.evaluations == 3 and summary.changed_calls == 2
        [rule] = summary.rules
        assert (rule.appear, rule.same, rule.live_cards) == (2, 1, 1)
        assert len(_rows(pg, HookRequest)) == 3
    finally:
        engine.dispose()
