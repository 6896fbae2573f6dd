"""``cds rules replay``: a working copy of a pack over the stored hook calls (or a Bulk
export), against the packs being served, per rule.

The calls are kept by the service itself (``CDS_KEEP_REQUESTS_DAYS``, through the app and
its sidecar), so what is replayed is what a hook call really left in the store.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from cds.batch.replay import ReplayError, ReplayOptions, run_replay
from cds.cards import card_extension
from cds.engine.registry import PackRegistry
from cds.hooks.compare import views_of
from cds.hooks.stored import StoredCall, evaluate_stored
from cds.settings import Settings
from cds.store.models import Invocation
from cds.store.models_replay import HookRequest, ReplayReport
from cds.store.requests import decode_body
from cds.testing.population import SyntheticPatient
from cds.web.app import create_app
from tests.batch.conftest import make_maker
from tests.conftest import FIXED_NOW, PACK_VERSION, REPO
from tests.packcopy import (
    CANDIDATE_VERSION,
    US_CEILING_60,
    US_CEILING_80,
    changed_pack,
    renewal,
)

SIGN = "/cds-services/medication-safety-order-sign"
VIEW = "/cds-services/medication-safety-patient-view"
EARLIER = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)  # a call long before the wall clock


def _url(maker: sessionmaker[Session]) -> str:
    return str(maker.kw["bind"].url)


def post_calls(
    maker: sessionmaker[Session], calls: list[tuple[str, dict[str, Any], datetime]]
) -> list[dict[str, Any]]:
    """Send hook calls through the real app (requests kept); (invocation id, response)."""
    instant = {"now": FIXED_NOW}
    settings = Settings(database_url=_url(maker), auth="off", keep_requests_days=7)
    app = create_app(settings, clock=lambda: instant["now"], maker=maker)
    out = []
    with TestClient(app) as client:
        for path, body, when in calls:
            instant["now"] = when
            resp = client.post(path, json=body)
            assert resp.status_code == 200, resp.text
            out.append({"hookInstance": body["hookInstance"], "cards": resp.json()["cards"]})
        assert app.state.sidecar.wait_idle()
    with maker() as s:
        ids = dict(s.execute(select(Invocation.hook_instance, Invocation.id)).all())
    for o in out:
        o["invocation_id"] = ids[o["hookInstance"]]
    return out


@pytest.fixture
def stored(maker: sessionmaker[Session]) -> Iterator[dict[str, dict[str, Any]]]:
    """Five kept calls: renewals at 80, 60 and 100 mg/day, a chart opened, and a child's
    renewal received long ago (its weight is recent then, stale now)."""
    calls = {
        "80": (SIGN, renewal(20, 4), FIXED_NOW),
        "60": (SIGN, renewal(15, 4, product="tab15"), FIXED_NOW),
        "100": (SIGN, renewal(20, 5), FIXED_NOW),  # 20 mg five times a day: no single-dose card
        "view": (VIEW, renewal(20, 4, hook="patient-view"), FIXED_NOW),
        "child": (
            SIGN,
            renewal(10, 3, product="tab10", age=14, weight_kg=50, weight_days_ago=25, now=EARLIER),
            EARLIER,
        ),
    }
    answers = post_calls(maker, list(calls.values()))
    yield dict(zip(calls, answers, strict=True))


def _opts(pack_dir: Path, **kw: Any) -> ReplayOptions:
    base: dict[str, Any] = {
        "pack_dir": pack_dir,
        "rules_dir": REPO / "rules",
        "pack_ids": ["baclofen"],
        "profile": "US",
        "workers": 0,
    }
    base.update(kw)
    return ReplayOptions(**base)


def _keys(cards: list[dict[str, Any]]) -> list[tuple[str, str, tuple[str, ...]]]:
    return sorted(
        (c["source"]["topic"]["code"], c["indicator"], tuple(card_extension(c)["ruleIds"]))
        for c in cards
    )


def test_a_lower_ceiling_adds_the_cards_of_the_doses_between(
    stored: dict[str, dict[str, Any]], maker: sessionmaker[Session], tmp_path: Path
) -> None:
    """The issue's test: US oral ceiling 80 -> 60 mg/day in a copy of the pack."""
    assert stored["80"]["cards"] == [] and stored["60"]["cards"] == []
    assert stored["100"]["cards"]  # above both ceilings
    copy = changed_pack(tmp_path, [(US_CEILING_80, US_CEILING_60)])
    report = run_replay(_opts(copy, since=FIXED_NOW - timedelta(days=1)), maker=maker)

    assert report.calls == 4 and report.errors == 0  # the child's call is older: not included
    assert (report.baseline_version, report.candidate_version) == (PACK_VERSION, CANDIDATE_VERSION)
    appearing = {r.rule_id: r.appear for r in report.rules.values() if r.appear}
    assert appearing == {"oral-daily-above-ceiling-us": 1}  # 80 mg/day only; 60 is not > 60
    rule = report.rules["oral-daily-above-ceiling-us"]
    assert rule.examples["appear"] == [stored["80"]["invocation_id"]]
    assert rule.category == "dose-ceiling"
    assert (rule.fires_before, rule.fires_after) == (1, 2)  # the 100 mg/day card, then both
    assert report.totals == {
        "appear": 1,
        "disappear": 0,
        "severity_up": 0,
        "severity_down": 0,
        "rules": 0,
    }
    assert report.changed_calls == 1
    [change] = report.changes
    assert change["ref"] == stored["80"]["invocation_id"]
    assert (change["kind"], change["before"], change["after"]) == ("appear", None, "warning")
    assert "60 mg/day" in change["summary"]
    # stored for the console
    with maker() as s:
        row = s.get(ReplayReport, report.id)
        assert row is not None and row.source == "stored" and row.calls == 4
        assert row.rules[0]["rule_id"] == "oral-daily-above-ceiling-us"
        assert row.rules[0]["examples"]["appear"] == [stored["80"]["invocation_id"]]


def test_a_stored_call_replays_to_the_answer_the_hook_gave(
    stored: dict[str, dict[str, Any]], maker: sessionmaker[Session]
) -> None:
    """Same pipeline, same instant: the served packs give each kept call the cards it got
    (the child's call only matches when evaluated at its own, older, instant)."""
    registry = PackRegistry(rules_dir=REPO / "rules", pack_ids=["baclofen"], profile="US")
    registry.load()
    with maker() as s:
        rows = {r.invocation_id: r for r in s.scalars(select(HookRequest))}
    assert len(rows) == 5
    for name, answer in stored.items():
        row = rows[answer["invocation_id"]]
        call = StoredCall.from_doc(row.invocation_id, decode_body(row.body))
        replayed = evaluate_stored(call, registry.packs())
        assert _keys([c.card for c in replayed.cards]) == _keys(answer["cards"]), name
    child = StoredCall.from_doc(
        stored["child"]["invocation_id"],
        decode_body(rows[stored["child"]["invocation_id"]].body),
    )
    assert child.received_at == EARLIER
    now_instead = StoredCall(**{**vars(child), "received_at": datetime.now(UTC)})
    assert _keys([c.card for c in evaluate_stored(now_instead, registry.packs()).cards]) != _keys(
        stored["child"]["cards"]
    ), "the child's cards must depend on the instant, or this test proves nothing"


def test_an_unchanged_copy_changes_nothing(
    stored: dict[str, dict[str, Any]], maker: sessionmaker[Session], tmp_path: Path
) -> None:
    copy = changed_pack(tmp_path, [], version=None)
    report = run_replay(_opts(copy), maker=maker)
    assert report.calls == 5 and report.errors == 0
    assert report.changed_calls == 0 and report.changes == [] and report.ordered_rules() == []
    assert report.options["note"] == "the working copy is identical to the served pack"


@pytest.mark.parametrize(
    ("edit", "kind", "rule"),
    [
        # a higher ceiling: the 100 mg/day card disappears (the critical row starts at 120)
        ((US_CEILING_80, US_CEILING_80.replace("80 ", "120", 1)), "disappear", None),
        # the ceiling rule made critical: the 100 mg/day card's severity goes up
        (
            (
                "    severity: warning\n    profiles: [US]\n    when:\n"
                '      - "@tables.when.oral_draft"\n'
                '      - {regimen_daily: {gt: "@profile.oral_daily_ceiling_mg"}}',
                "    severity: critical\n    profiles: [US]\n    when:\n"
                '      - "@tables.when.oral_draft"\n'
                '      - {regimen_daily: {gt: "@profile.oral_daily_ceiling_mg"}}',
            ),
            "severity_up",
            "a3-oral-ceilings.yaml",
        ),
    ],
)
def test_cards_that_disappear_or_change_severity(
    stored: dict[str, dict[str, Any]],
    maker: sessionmaker[Session],
    tmp_path: Path,
    edit: tuple[str, str],
    kind: str,
    rule: str | None,
) -> None:
    copy = changed_pack(tmp_path, [edit], file=rule or "pack.yaml")
    report = run_replay(_opts(copy), maker=maker)
    changed = {
        (r.rule_id, k): getattr(r, k)
        for r in report.rules.values()
        for k in ("appear", "disappear", "severity_up", "severity_down")
        if getattr(r, k)
    }
    assert changed == {("oral-daily-above-ceiling-us", kind): 1}
    assert report.rules["oral-daily-above-ceiling-us"].examples[kind] == [
        stored["100"]["invocation_id"]
    ]


def test_a_broken_copy_or_no_calls_is_a_clear_error(
    maker: sessionmaker[Session], tmp_path: Path
) -> None:
    broken = changed_pack(
        tmp_path,
        [
            (
                "category: dose-ceiling\n    severity: warning\n    profiles: [US]",
                "category: dose-ceiling\n    severity: loud\n    profiles: [US]",
            )
        ],
        file="a3-oral-ceilings.yaml",
    )
    with pytest.raises(ReplayError, match="a3-oral-ceilings.yaml"):
        run_replay(_opts(broken), maker=maker)
    with pytest.raises(ReplayError, match="no pack.yaml"):
        run_replay(_opts(tmp_path / "nowhere"), maker=maker)
    good = changed_pack(tmp_path, [(US_CEILING_80, US_CEILING_60)])
    with pytest.raises(ReplayError, match="CDS_KEEP_REQUESTS_DAYS"):
        run_replay(_opts(good), maker=maker)  # nothing kept in this store


def test_bulk_export_replays_the_sweeps_patient_view_calls(
    export_dir: Path,
    population: list[SyntheticPatient],
    maker: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    """The moderate renal band made critical: the renal-drift patients' cards go up."""
    copy = changed_pack(
        tmp_path,
        [
            (
                '      limit_established: {mul: [0.5, "@profile.oral_daily_ceiling_mg"]}\n'
                "      above_severity: warning",
                '      limit_established: {mul: [0.5, "@profile.oral_daily_ceiling_mg"]}\n'
                "      above_severity: critical",
            )
        ],
    )
    report = run_replay(
        _opts(copy, bulk=export_dir, as_of=FIXED_NOW, work_dir=tmp_path / "work"), maker=maker
    )
    assert report.source == "bulk" and report.as_of == FIXED_NOW
    assert report.calls == len(population) and report.errors == 0
    ups = {r.rule_id: r.severity_up for r in report.rules.values() if r.severity_up}
    assert list(ups) == ["renal-drift-above-limit.moderate"]
    assert report.totals["appear"] == report.totals["disappear"] == 0
    drifting = {f"Patient/{p.id}" for p in population if p.scenario == "renal-drift"}
    examples = report.rules["renal-drift-above-limit.moderate"].examples["severity_up"]
    assert examples and set(examples) <= drifting
    assert {c["ref"] for c in report.changes} <= drifting
    with maker() as s:
        row = s.get(ReplayReport, report.id)
        assert row is not None and row.source == "bulk" and row.as_of is not None


def test_bulk_replay_in_a_process_pool_gives_the_same_report(
    export_dir: Path, maker: sessionmaker[Session], tmp_path: Path, monkeypatch
) -> None:
    import cds.batch.replay as replay

    monkeypatch.setattr(replay, "IN_PROCESS_BELOW", 0)
    copy = changed_pack(tmp_path, [(US_CEILING_80, US_CEILING_60)])
    here = run_replay(_opts(copy, bulk=export_dir, as_of=FIXED_NOW, chunk=10), maker=None)
    pool = run_replay(
        _opts(copy, bulk=export_dir, as_of=FIXED_NOW, chunk=10, workers=2), maker=None
    )
    assert pool.calls == here.calls > 0
    assert sorted(map(str, pool.changes)) == sorted(map(str, here.changes))
    assert {k: v.as_dict() for k, v in pool.rules.items()}.keys() == here.rules.keys()


# ---- the command ----------------------------------------------------------------------------


def _cli(args: list[str], url: str, **env: str) -> Any:
    from cds.cli import app

    return CliRunner().invoke(
        app, args, env={"CDS_DATABASE_URL": url, "COLUMNS": "200", **env}, catch_exceptions=False
    )


def test_command_prints_the_table_and_writes_json_and_csv(
    stored: dict[str, dict[str, Any]], maker: sessionmaker[Session], tmp_path: Path
) -> None:
    copy = changed_pack(tmp_path, [(US_CEILING_80, US_CEILING_60)])
    url = _url(maker)
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    result = _cli(
        [
            "rules",
            "replay",
            "--pack-dir",
            str(copy),
            "--since",
            "2026-11-20",
            "--workers",
            "0",
            "--out",
            str(out_json),
        ],
        url,
    )
    assert result.exit_code == 0, result.output
    assert "oral-daily-above-ceiling-us" in result.output
    assert stored["80"]["invocation_id"] in result.output
    data = json.loads(out_json.read_text())
    assert data["rules"][0]["rule_id"] == "oral-daily-above-ceiling-us"
    assert data["rules"][0]["appear"] == 1 and data["calls"] == 4
    assert [c["ref"] for c in data["changes"]] == [stored["80"]["invocation_id"]]

    result = _cli(
        [
            "rules",
            "replay",
            "--pack-dir",
            str(copy),
            "--until",
            "2026-11-20",
            "--no-store",
            "--out",
            str(out_csv),
        ],
        url,
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out_csv.open()))
    assert [(r["rule_id"], r["appear"]) for r in rows] == [("oral-daily-above-ceiling-us", "1")]
    assert rows[0]["examples_appear"] == stored["80"]["invocation_id"]
    with maker() as s:
        assert s.scalar(select(func.count()).select_from(ReplayReport)) == 1  # --no-store


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--since", "yesterday"], 2, "neither a date"),
        (["--since", "2026-11-21", "--until", "2026-11-01"], 2, "before --until"),
        (["--bulk", "/tmp", "--since", "2026-11-01"], 2, "with --bulk use --as-of"),
        (["--as-of", "2026-11-01"], 2, "goes with --bulk"),
        (["--out", "report.txt"], 2, ".json or .csv"),
        (["--profile", "FR"], 2, "US or UK"),
        (["--since", "2030-01-01"], 1, "no stored calls"),
        (["--bulk", "/nonexistent-export"], 1, "not a folder"),
    ],
)
def test_command_refuses_bad_input_clearly(
    stored: dict[str, dict[str, Any]],
    maker: sessionmaker[Session],
    tmp_path: Path,
    args: list[str],
    code: int,
    message: str,
) -> None:
    copy = changed_pack(tmp_path, [(US_CEILING_80, US_CEILING_60)])
    result = _cli(["rules", "replay", "--pack-dir", str(copy), *args], _url(maker))
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_command_names_the_broken_pack_file(maker: sessionmaker[Session], tmp_path: Path) -> None:
    copy = changed_pack(tmp_path, [("id: baclofen\n", "id: [baclofen\n")])
    result = _cli(["rules", "replay", "--pack-dir", str(copy)], _url(maker))
    assert result.exit_code == 1 and "pack.yaml" in result.output, result.output
    assert "Traceback" not in result.output


# ---- retention ------------------------------------------------------------------------------


def test_kept_requests_hold_no_token_and_are_purged_on_schedule(
    maker: sessionmaker[Session], tmp_path: Path, caplog
) -> None:
    body = renewal(20, 4)
    body["fhirServer"] = "https://ehr.example/fhir"
    body["fhirAuthorization"] = {
        "access_token": "secret-token-value-123",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "user/*.read",
        "subject": "cds",
    }
    [answer] = post_calls(maker, [(SIGN, body, FIXED_NOW)])
    with maker() as s:
        row = s.get(HookRequest, answer["invocation_id"])
        assert row is not None
        doc = decode_body(row.body)
        assert "secret-token-value-123" not in json.dumps(doc)
        assert set(doc) == {
            "v",
            "hook",
            "hookInstance",
            "service",
            "receivedAt",
            "context",
            "resources",
            "unavailable",
        }
        assert row.body_bytes > len(row.body)  # compressed
    assert "secret-token-value-123" not in caplog.text

    # `cds requests purge` keeps what is younger than the retention, deletes the rest
    with maker.begin() as s:
        s.execute(update(HookRequest).values(stored_at=datetime.now(UTC) - timedelta(days=8)))
    url = _url(maker)
    assert _cli(["requests", "purge", "--days", "30"], url).exit_code == 0
    with maker() as s:
        assert s.scalar(select(func.count()).select_from(HookRequest)) == 1
    result = _cli(["requests", "status"], url, CDS_KEEP_REQUESTS_DAYS="7")
    assert "1 kept requests" in result.output
    result = _cli(["requests", "purge"], url, CDS_KEEP_REQUESTS_DAYS="7")
    assert result.exit_code == 0 and "deleted 1" in result.output, result.output

    # at start-up: the setting at 0 means none is kept, and any kept before is deleted
    post_calls(maker, [(SIGN, renewal(20, 4), FIXED_NOW)])
    with maker() as s:
        assert s.scalar(select(func.count()).select_from(HookRequest)) == 1
    app = create_app(Settings(database_url=url, auth="off"), maker=maker)
    with TestClient(app) as client:
        assert app.state.sidecar is None
        assert client.post(SIGN, json=renewal(20, 4)).status_code == 200
    with maker() as s:
        assert s.scalar(select(func.count()).select_from(HookRequest)) == 0


def test_the_sidecar_purges_on_schedule(maker: sessionmaker[Session]) -> None:
    from cds.hooks.shadow import SidecarConfig, SidecarWorker

    post_calls(maker, [(SIGN, renewal(20, 4), FIXED_NOW), (SIGN, renewal(15, 4), FIXED_NOW)])
    with maker.begin() as s:  # one of them was kept two days ago
        first = s.scalars(select(HookRequest.invocation_id)).first()
        s.execute(
            update(HookRequest)
            .where(HookRequest.invocation_id == first)
            .values(stored_at=datetime.now(UTC) - timedelta(days=2))
        )

    def worker(every: float) -> SidecarWorker:
        config = SidecarConfig(
            database_url=_url(maker),
            rules_dir=str(REPO / "rules"),
            pack_ids=("baclofen",),
            profile="US",
            shadow=(),
            keep_days=1,
            budget_seconds=5,
            purge_every_s=every,
        )
        return SidecarWorker(config, maker)

    def kept() -> int:
        with maker() as s:
            return int(s.scalar(select(func.count()).select_from(HookRequest)))

    worker(3600.0).idle()
    assert kept() == 2  # not due yet
    worker(0.0).idle()
    assert kept() == 1  # due: the two-day-old one went, yesterday's call stays


@pytest.mark.postgres
def test_replay_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    pg = make_maker(pg_url)
    try:
        answers = post_calls(
            pg,
            [(SIGN, renewal(20, 4), FIXED_NOW), (SIGN, renewal(15, 4, product="tab15"), FIXED_NOW)],
        )
        copy = changed_pack(tmp_path, [(US_CEILING_80, US_CEILING_60)])
        report = run_replay(_opts(copy, chunk=1), maker=pg)  # a page per call: keyset paging
        assert report.calls == 2
        assert report.rules["oral-daily-above-ceiling-us"].examples["appear"] == [
            answers[0]["invocation_id"]
        ]
        with pg() as s:
            assert s.get(ReplayReport, report.id) is not None
    finally:
        pg.kw["bind"].dispose()


def test_views_of_the_replay_match_the_stored_cards(
    stored: dict[str, dict[str, Any]], maker: sessionmaker[Session]
) -> None:
    """The card identity a comparison uses is the one the hook's cards carry."""
    registry = PackRegistry(rules_dir=REPO / "rules", pack_ids=["baclofen"], profile="US")
    registry.load()
    with maker() as s:
        row = s.get(HookRequest, stored["100"]["invocation_id"])
        assert row is not None
        call = StoredCall.from_doc(row.invocation_id, decode_body(row.body))
    [view] = views_of(evaluate_stored(call, registry.packs()).cards)
    [card] = stored["100"]["cards"]
    assert view.order_id == card_extension(card)["orderId"]
    assert list(view.rule_ids) == card_extension(card)["ruleIds"]


def test_the_console_shows_the_stored_reports(
    stored: dict[str, dict[str, Any]],
    export_dir: Path,
    maker: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    from tests.console.conftest import login, make_user

    copy = changed_pack(tmp_path, [(US_CEILING_80, US_CEILING_60)])
    first = run_replay(_opts(copy), maker=maker)
    severe = changed_pack(
        tmp_path,
        [
            (
                '      limit_established: {mul: [0.5, "@profile.oral_daily_ceiling_mg"]}\n'
                "      above_severity: warning",
                '      limit_established: {mul: [0.5, "@profile.oral_daily_ceiling_mg"]}\n'
                "      above_severity: critical",
            )
        ],
    )
    bulk = run_replay(
        _opts(severe, bulk=export_dir, as_of=FIXED_NOW, work_dir=tmp_path / "w"), maker=maker
    )
    account = make_user(maker, "committee.pharm")
    settings = Settings(
        database_url=_url(maker), auth="off", secure_cookies=False, session_secret="s" * 32
    )
    with TestClient(create_app(settings, maker=maker), follow_redirects=False) as client:
        assert login(client, account).status_code == 303  # type: ignore[attr-defined]
        newest = client.get("/review/rule-changes")  # the newest report is shown: the bulk one
        assert newest.status_code == 200
        assert "renal-drift-above-limit.moderate" in newest.text
        example = bulk.rules["renal-drift-above-limit.moderate"].examples["severity_up"][0]
        assert f"/review/alerts?patient={example.replace('/', '%2F')}" in newest.text
        page = client.get(f"/review/rule-changes?report={first.id}")
        assert "oral-daily-above-ceiling-us" in page.text
        assert stored["80"]["invocation_id"] in page.text
        assert f"{PACK_VERSION} → {CANDIDATE_VERSION}" in page.text
        missing = client.get("/review/rule-changes?report=not-a-report")
        assert missing.status_code == 200 and "does not exist" in missing.text


def test_a_prefetch_key_not_obtained_replays_as_the_hook_saw_it(
    maker: sessionmaker[Session],
) -> None:
    """A key the EHR neither sent nor let the service fetch is a data issue of the call
    (a card naming it): the kept call remembers it, so the replay gives the same card."""
    body = renewal(15, 4, product="tab15")
    del body["prefetch"]["renal"]
    [answer] = post_calls(maker, [(SIGN, body, FIXED_NOW)])
    with maker() as s:
        row = s.get(HookRequest, answer["invocation_id"])
        assert row is not None
        call = StoredCall.from_doc(row.invocation_id, decode_body(row.body))
    # the service runs every shipped pack: the gabapentin pack's own key (screens) is also
    # absent from this request; the renal key is the one the baclofen card names
    assert "renal" in call.unavailable
    registry = PackRegistry(rules_dir=REPO / "rules", pack_ids=["baclofen"], profile="US")
    registry.load()
    replayed = _keys([c.card for c in evaluate_stored(call, registry.packs()).cards])
    assert replayed == _keys(answer["cards"]) != []
    forgotten = StoredCall(**{**vars(call), "unavailable": []})
    assert _keys([c.card for c in evaluate_stored(forgotten, registry.packs()).cards]) != replayed
