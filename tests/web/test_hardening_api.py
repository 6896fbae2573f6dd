"""The hardening issue, hook API side, in process (TestClient on a migrated SQLite file).

One test (or a few) per finding; each failed on the code before its fix. Real-server
findings are in ``test_hardening_servers.py``, PostgreSQL ones in
``tests/store/test_hardening_postgres.py``, console ones in
``tests/console/test_hardening_console.py``.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select

import cds.errors as errors_module
from cds.errors import CDSError, ConfigError, RequestError, StoreUnavailable
from cds.hooks.fetch import is_allowlisted
from cds.settings import Settings
from cds.store.db import upgrade
from cds.store.models import Card, Feedback, Invocation, RejectedRequest
from cds.testing.issuer import TestIssuer
from cds.web.app import check_settings, create_app
from cds.web.errors import ERROR_MAP, map_error
from tests.conftest import FIXED_NOW
from tests.reliability.conftest import typical

SIGN = "/cds-services/baclofen-order-sign"
PUBLIC = "https://cds.hospital.test"


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    upgrade(sqlite_url)
    return sqlite_url


def make_client(db_url: str, **overrides: Any) -> Iterator[TestClient]:
    settings = Settings(**{"database_url": db_url, "auth": "off", **overrides})
    app = create_app(settings, clock=lambda: FIXED_NOW)
    with TestClient(app, raise_server_exceptions=False) as c:
        c.app_state = app.state  # type: ignore[attr-defined]
        yield c


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    yield from make_client(db_url)


def rows(client: TestClient, model: Any, *where: Any) -> list[Any]:
    with client.app_state.maker() as s:  # type: ignore[attr-defined]
        return list(s.scalars(select(model).where(*where)))


def count(client: TestClient, model: Any) -> int:
    with client.app_state.maker() as s:  # type: ignore[attr-defined]
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def outcome(resp: httpx.Response, status: int | None = None) -> dict[str, Any]:
    """A 4xx (or given status) FHIR OperationOutcome, never a traceback."""
    if status is not None:
        assert resp.status_code == status, resp.text[:600]
    assert 400 <= resp.status_code < 600 and resp.status_code != 500, resp.text[:600]
    body: dict[str, Any] = resp.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["diagnostics"]
    assert "Traceback" not in resp.text
    return body


def post_raw(client: TestClient, raw: bytes, path: str = SIGN) -> httpx.Response:
    return client.post(path, content=raw, headers={"content-type": "application/json"})


# ------------------------------------------------------------------ #2 and #3: configuration


def test_jwt_mode_refuses_to_start_without_a_configured_audience(
    db_url: str, tmp_path: Path
) -> None:
    issuer = TestIssuer(tmp_path / "ehr")
    settings = Settings(database_url=db_url, auth="jwt", trusted_issuers=issuer.issuers_path)
    with pytest.raises(ConfigError, match="CDS_PUBLIC_BASE_URL"):
        create_app(settings)
    with pytest.raises(ConfigError, match="absolute http"):
        check_settings(settings.model_copy(update={"public_base_url": "cds.hospital.test"}))


def test_the_audience_never_comes_from_the_host_header(db_url: str, tmp_path: Path) -> None:
    issuer = TestIssuer(tmp_path / "ehr")
    settings = Settings(
        database_url=db_url,
        auth="jwt",
        trusted_issuers=issuer.issuers_path,
        public_base_url=PUBLIC,
    )
    app = create_app(settings, clock=lambda: FIXED_NOW)
    with TestClient(app, base_url="http://other-deployment.test") as c:
        # minted for another deployment the same EHR trusts, sent with its Host header
        other = issuer.header("http://other-deployment.test" + SIGN)
        headers = {**other, "X-Forwarded-Proto": "http", "Host": "other-deployment.test"}
        outcome(c.post(SIGN, json=typical(), headers=headers), 401)
        assert c.post(SIGN, json=typical(), headers=issuer.header(PUBLIC + SIGN)).status_code == 200


def test_jwt_with_several_workers_needs_a_shared_replay_cache(tmp_path: Path) -> None:
    issuer = TestIssuer(tmp_path / "ehr")
    settings = Settings(auth="jwt", trusted_issuers=issuer.issuers_path, public_base_url=PUBLIC)
    check_settings(settings, workers=1)
    with pytest.raises(ConfigError, match="CDS_REDIS_URL"):
        check_settings(settings, workers=2)
    check_settings(settings.model_copy(update={"redis_url": "redis://127.0.0.1:6379/0"}), workers=2)


def test_a_bad_trusted_issuers_file_is_a_config_error_not_a_system_exit(
    db_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=db_url,
        auth="jwt",
        trusted_issuers=tmp_path / "missing.json",
        public_base_url=PUBLIC,
    )
    with pytest.raises(ConfigError, match="CDS_TRUSTED_ISSUERS"):
        create_app(settings)
    with pytest.raises(ConfigError, match="CDS_TRUSTED_ISSUERS"):
        create_app(Settings(database_url=db_url, auth="jwt", public_base_url=PUBLIC))


def test_the_session_secret_is_never_printed() -> None:
    settings = Settings(session_secret="do-not-print-me-0123456789")
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert "do-not-print-me" not in text
    assert settings.session_secret_value() == "do-not-print-me-0123456789"


# ------------------------------------------------------------------ the error boundary


def _all_subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub, *_all_subclasses(sub)}
    return out


ERROR_CLASSES = sorted(
    (c for c in _all_subclasses(CDSError) if c.__module__ == errors_module.__name__),
    key=lambda c: c.__name__,
)


def test_every_cds_error_class_has_its_own_mapping() -> None:
    """A new error class must say its status: a RequestError on the class, else ERROR_MAP."""
    for cls in [CDSError, *ERROR_CLASSES]:
        mapped = cls in ERROR_MAP or (
            issubclass(cls, RequestError) and "status" in cls.__dict__ and "code" in cls.__dict__
        )
        assert mapped, f"{cls.__name__} has no status of its own"


def _instance(cls: type[CDSError]) -> CDSError:
    if cls.__name__ == "AuthenticationFailed":
        return cls("a reason for the log")  # type: ignore[call-arg]
    return cls("what went wrong, for the log")


@pytest.mark.parametrize("cls", [*ERROR_CLASSES, RuntimeError], ids=lambda c: c.__name__)
def test_every_error_raised_in_a_call_is_an_outcome_and_a_rejection_row(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, cls: type[Exception]
) -> None:
    exc = _instance(cls) if issubclass(cls, CDSError) else cls("boom")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise exc

    monkeypatch.setattr("cds.web.hooks_api.evaluate", broken)
    resp = client.post(SIGN, json=typical())
    status, code, diagnostics = map_error(exc)
    assert resp.status_code == status
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == code and body["issue"][0]["diagnostics"] == diagnostics
    assert "Traceback" not in resp.text and "a reason for the log" not in resp.text
    if not isinstance(exc, RequestError):  # their messages may name files: log only
        assert "for the log" not in resp.text and "boom" not in resp.text
    rejected = rows(client, RejectedRequest)
    if isinstance(exc, StoreUnavailable):
        assert rejected == []  # the store is down: nothing to write the row to
    else:
        assert [(r.path, r.status) for r in rejected] == [(SIGN, status)]
    assert count(client, Invocation) == 0


# ------------------------------------------------------------------ #4: caps and time budget


def test_a_prefetch_key_over_the_cap_is_413_naming_the_key(db_url: str) -> None:
    body = typical()
    meds = body["prefetch"]["medications"]
    meds["entry"] = [copy.deepcopy(meds["entry"][1]) for _ in range(11)]
    for i, e in enumerate(meds["entry"]):
        e["resource"]["id"] = f"med-copy-{i}"
    for client in make_client(db_url, max_prefetch_resources=10):
        out = outcome(client.post(SIGN, json=body), 413)
        assert out["issue"][0]["expression"] == ["prefetch.medications"]
        assert "CDS_MAX_PREFETCH_RESOURCES" in out["issue"][0]["diagnostics"]
        assert [r.status for r in rows(client, RejectedRequest)] == [413]


def test_an_evaluation_past_its_budget_answers_in_time_and_stores_nothing(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cds.web.hooks_api as hooks_api

    real = hooks_api.evaluate
    finished = threading.Event()

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.6)  # stands for a pathological input: longer than the budget
        try:
            return real(*args, **kwargs)
        finally:
            finished.set()

    monkeypatch.setattr(hooks_api, "evaluate", slow)
    for client in make_client(db_url, evaluation_budget_seconds=0.2):
        out = outcome(client.post(SIGN, json=typical()), 503)
        assert out["issue"][0]["code"] == "timeout"
        assert "CDS_EVALUATION_BUDGET_SECONDS" in out["issue"][0]["diagnostics"]
        assert not finished.is_set()  # answered while the worker was still evaluating
        assert finished.wait(10)
        time.sleep(0.3)  # the worker stops at its next budget check, before the audit write
        assert count(client, Invocation) == 0 and count(client, Card) == 0
        assert [r.status for r in rows(client, RejectedRequest)] == [503]


# ------------------------------------------------------------------ #8: feedback batches


def _issued_card(client: TestClient, headers: dict[str, str] | None = None) -> dict[str, Any]:
    resp = client.post(SIGN, json=typical(), headers=headers or {})
    assert resp.status_code == 200, resp.text
    card: dict[str, Any] = resp.json()["cards"][0]
    return card


def _item(card_id: str, minute: int, outcome: str = "overridden", **extra: Any) -> dict[str, Any]:
    stamp = (FIXED_NOW + timedelta(minutes=minute)).isoformat().replace("+00:00", "Z")
    return {"card": card_id, "outcome": outcome, "outcomeTimestamp": stamp, **extra}


def test_a_feedback_batch_over_the_cap_is_refused_whole(client: TestClient) -> None:
    card = _issued_card(client)
    items = [_item(card["uuid"], -(m % 50)) for m in range(101)]
    out = outcome(client.post(f"{SIGN}/feedback", json={"feedback": items}), 413)
    assert "CDS_MAX_FEEDBACK_ITEMS" in out["issue"][0]["diagnostics"]
    assert count(client, Feedback) == 0


def test_a_card_takes_a_bounded_number_of_feedback_items(db_url: str) -> None:
    for client in make_client(db_url, max_feedback_per_card=3):
        card = _issued_card(client)
        items = [_item(card["uuid"], -m) for m in range(5)]
        out = outcome(client.post(f"{SIGN}/feedback", json={"feedback": items}), 400)
        assert "3 stored" in out["issue"][0]["diagnostics"]
        assert sum("at most 3 feedback items" in i["diagnostics"] for i in out["issue"]) == 2
        assert count(client, Feedback) == 3


def test_feedback_is_committed_in_small_transactions(client: TestClient) -> None:
    from cds.store import audit

    card_ids = [_issued_card(client)["uuid"] for _ in range(5)]
    batch = [_item(cid, -m) for cid in card_ids for m in range(20)]  # 100 items
    commits: list[int] = []
    engine = client.app_state.maker.kw["bind"]  # type: ignore[attr-defined]

    def on_commit(conn: Any) -> None:
        commits.append(1)

    event.listen(engine, "commit", on_commit)
    try:
        resp = client.post(f"{SIGN}/feedback", json={"feedback": batch})
    finally:
        event.remove(engine, "commit", on_commit)
    assert resp.status_code == 200 and resp.json()["stored"] == 100, resp.text
    # one transaction per FEEDBACK_CHUNK items: the write lock is released in between
    assert len(commits) >= len(batch) // audit.FEEDBACK_CHUNK == 5


# ------------------------------------------------------------------ #9: inputs that gave 500


def _mut(fn: Any) -> dict[str, Any]:
    body = typical()
    fn(body)
    return body


def _draft(body: dict[str, Any]) -> dict[str, Any]:
    draft: dict[str, Any] = body["context"]["draftOrders"]["entry"][0]["resource"]
    return draft


def _nest(depth: int, leaf: Any = "x") -> Any:
    value = leaf
    for _ in range(depth):
        value = {"url": "http://x.test", "extension": [value]}
    return value


def _deep(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"a": value}
    return value


def _raw_surrogate(where: str) -> bytes:
    body = typical()
    if where == "patientId":
        body["context"]["patientId"] = "@@S@@"
    else:  # the Patient's id: it used to be quoted in the 422 "not context.patientId"
        body["prefetch"]["patient"]["id"] = "@@S@@"
    return json.dumps(body).replace("@@S@@", "pat\\ud800x").encode()


def _weight(body: dict[str, Any], value: float) -> None:
    for e in body["prefetch"]["weight"]["entry"]:
        e["resource"]["valueQuantity"]["value"] = value


FIVE_HUNDRED_BEFORE: dict[str, Any] = {
    "prefetch Bundle entry not a list": _mut(
        lambda b: b["prefetch"]["medications"].__setitem__("entry", 5)
    ),
    "prefetch Bundle link not a list": _mut(
        lambda b: b["prefetch"]["medications"].__setitem__("link", 5)
    ),
    "optional Bundle entry not a list": _mut(
        lambda b: b["prefetch"]["renal"].__setitem__("entry", True)
    ),
    "lone surrogate in patientId": _raw_surrogate("patientId"),
    "lone surrogate in the Patient id (422 message)": _raw_surrogate("patient"),
    "dose 1e308": _mut(
        lambda b: _draft(b)["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"].__setitem__(
            "value", 1e308
        )
    ),
    "weight 1e308": _mut(lambda b: _weight(b, 1e308)),
    "frequency 1e-320": _mut(
        lambda b: _draft(b)["dosageInstruction"][0]["timing"]["repeat"].__setitem__(
            "frequency", 1e-320
        )
    ),
    "Patient extension 200 deep": _mut(
        lambda b: b["prefetch"]["patient"].__setitem__("extension", [_nest(200)])
    ),
    "draft field 500 deep": _mut(lambda b: _draft(b).__setitem__("note", _deep(500))),
    "control character in fhirServer": _mut(
        lambda b: (b["prefetch"].pop("conditions"), b.__setitem__("fhirServer", "http://x\x01/f"))
    ),
    "space and DEL in fhirServer": _mut(
        lambda b: (b["prefetch"].pop("conditions"), b.__setitem__("fhirServer", "http://x/ f\x7f"))
    ),
}


@pytest.mark.parametrize("name", list(FIVE_HUNDRED_BEFORE))
def test_inputs_that_gave_500_get_a_4xx_or_a_data_quality_card(
    client: TestClient, name: str
) -> None:
    case = FIVE_HUNDRED_BEFORE[name]
    raw = case if isinstance(case, bytes) else json.dumps(case).encode()
    resp = post_raw(client, raw)
    assert "Traceback" not in resp.text
    if resp.status_code == 200:
        categories = {c["source"]["topic"]["code"] for c in resp.json()["cards"]}
        assert "data-quality" in categories
    else:
        outcome(resp)
        assert 400 <= resp.status_code < 500
        assert [r.status for r in rows(client, RejectedRequest)] == [resp.status_code]


def test_a_fhir_server_answering_json_nested_100k_deep(client: TestClient) -> None:
    deep = b'{"resourceType": "Bundle", "entry": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=deep, headers={"content-type": "application/fhir+json"})

    client.app_state.http = httpx.AsyncClient(transport=httpx.MockTransport(handler))  # type: ignore[attr-defined]
    client.app_state.settings = client.app_state.settings.model_copy(  # type: ignore[attr-defined]
        update={"fhir_allowlist": "https://fhir.hospital.test/r4"}
    )
    body = typical()
    del body["prefetch"]["medications"]
    body["fhirServer"] = "https://fhir.hospital.test/r4"
    out = outcome(client.post(SIGN, json=body), 412)
    assert "nested deeper" in out["issue"][0]["diagnostics"]


# ------------------------------------------------------------------ #10: who sent the feedback


@pytest.fixture
def two_ehrs(db_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, TestIssuer, TestIssuer]]:
    north = TestIssuer(tmp_path / "north", iss="https://ehr.test/north", tenant="north")
    other = TestIssuer(tmp_path / "other", iss="https://ehr.test/other")
    issuers = tmp_path / "issuers.json"
    entries = [
        {"iss": north.iss, "jwks_file": str(north.jwks_path), "tenant": "north"},
        {"iss": other.iss, "jwks_file": str(other.jwks_path)},
    ]
    issuers.write_text(json.dumps(entries))
    settings = Settings(
        database_url=db_url, auth="jwt", trusted_issuers=issuers, public_base_url=PUBLIC
    )
    app = create_app(settings, clock=lambda: FIXED_NOW)
    with TestClient(app) as c:
        c.app_state = app.state  # type: ignore[attr-defined]
        yield c, north, other


def _feedback(client: TestClient, issuer: TestIssuer, *items: dict[str, Any]) -> httpx.Response:
    path = f"{SIGN}/feedback"
    return client.post(path, json={"feedback": list(items)}, headers=issuer.header(PUBLIC + path))


def test_feedback_from_another_issuer_or_tenant_cannot_change_a_card(
    two_ehrs: tuple[TestClient, TestIssuer, TestIssuer],
) -> None:
    client, north, other = two_ehrs
    card = _issued_card(client, north.header(PUBLIC + SIGN))
    # the other EHR, even claiming north's tenant, is told there is no such card
    forged = _feedback(client, other, _item(card["uuid"], 1, "overridden"))
    out = outcome(forged, 400)
    assert "unknown card uuid" in json.dumps(out)
    claimed = client.post(
        f"{SIGN}/feedback",
        json={"feedback": [_item(card["uuid"], 1)]},
        headers=other.header(PUBLIC + f"{SIGN}/feedback", tenant="north"),
    )
    outcome(claimed, 400)
    assert rows(client, Card)[0].feedback_outcome is None
    assert _feedback(client, north, _item(card["uuid"], 1)).status_code == 200
    [stored] = rows(client, Feedback)
    assert (stored.issuer, stored.tenant) == (north.iss, "north")
    inv = rows(client, Invocation)[0]
    assert (inv.issuer, inv.tenant) == (north.iss, "north")


def test_the_latest_outcome_wins_whatever_the_arrival_order(client: TestClient) -> None:
    card = _issued_card(client)
    later = _item(card["uuid"], -1, "overridden")
    accepted = _item(
        card["uuid"],
        -5,
        "accepted",
        acceptedSuggestions=[{"id": card["suggestions"][0]["uuid"]}],
    )
    assert client.post(f"{SIGN}/feedback", json={"feedback": [later]}).status_code == 200
    assert client.post(f"{SIGN}/feedback", json={"feedback": [accepted]}).status_code == 200
    assert rows(client, Card)[0].feedback_outcome == "overridden"


def test_a_new_user_comment_is_not_a_duplicate(client: TestClient) -> None:
    card = _issued_card(client)
    first = _item(card["uuid"], 1, overrideReason={"userComment": "patient tolerates it"})
    again = _item(card["uuid"], 1, overrideReason={"userComment": "and the neurologist agrees"})
    assert client.post(f"{SIGN}/feedback", json={"feedback": [first]}).json()["stored"] == 1
    assert client.post(f"{SIGN}/feedback", json={"feedback": [first]}).json()["duplicates"] == 1
    assert client.post(f"{SIGN}/feedback", json={"feedback": [again]}).json()["stored"] == 1
    comments = {f.override_comment for f in rows(client, Feedback)}
    assert comments == {"patient tolerates it", "and the neurologist agrees"}


def test_a_future_outcome_timestamp_is_refused(client: TestClient) -> None:
    card = _issued_card(client)
    out = outcome(
        client.post(f"{SIGN}/feedback", json={"feedback": [_item(card["uuid"], 60 * 24)]}), 400
    )
    assert "in the future" in json.dumps(out)
    assert count(client, Feedback) == 0
    # within the allowed clock skew is fine
    assert (
        client.post(f"{SIGN}/feedback", json={"feedback": [_item(card["uuid"], 2)]}).json()[
            "stored"
        ]
        == 1
    )


# ------------------------------------------------------------------ #14: ..; segments


@pytest.mark.parametrize(
    "url",
    [
        "https://fhir.hospital.test/r4/..;/admin",
        "https://fhir.hospital.test/r4/..;jsessionid=1/admin",
        "https://fhir.hospital.test/r4/%2e%2e;/admin",
        "https://fhir.hospital.test/r4/.%2E;x/admin",
        "https://fhir.hospital.test/r4/%252e%252e/admin",
        "https://fhir.hospital.test/r4/x/..;/..;/admin",
    ],
)
def test_path_parameter_dot_segments_do_not_pass_the_base_check(url: str) -> None:
    assert not is_allowlisted(url, ["https://fhir.hospital.test/r4"])


def test_allowlist_still_allows_what_it_should() -> None:
    base = ["https://fhir.hospital.test/r4"]
    assert is_allowlisted("https://fhir.hospital.test/r4", base)
    assert is_allowlisted("https://FHIR.hospital.test:443/r4/tenant-1/", base)
    assert not is_allowlisted("https://fhir.hospital.test/r4x", base)


def test_a_paging_link_with_dot_dot_semicolon_is_not_followed(client: TestClient) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        page = {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [],
            "link": [{"relation": "next", "url": "https://fhir.hospital.test/r4/..;/secret?p=2"}],
        }
        return httpx.Response(200, json=page, headers={"content-type": "application/fhir+json"})

    client.app_state.http = httpx.AsyncClient(transport=httpx.MockTransport(handler))  # type: ignore[attr-defined]
    client.app_state.settings = client.app_state.settings.model_copy(  # type: ignore[attr-defined]
        update={"fhir_allowlist": "https://fhir.hospital.test/r4"}
    )
    body = typical()
    del body["prefetch"]["conditions"]
    body["fhirServer"] = "https://fhir.hospital.test/r4"
    body["fhirAuthorization"] = {"access_token": "tok", "token_type": "Bearer"}
    assert client.post(SIGN, json=body).status_code == 200
    assert seen and not any("secret" in u for u in seen)


# ------------------------------------------------------------------ #16: rejection rows


def test_anonymous_401s_share_rows_instead_of_one_row_each(db_url: str, tmp_path: Path) -> None:
    issuer = TestIssuer(tmp_path / "ehr")
    settings = Settings(
        database_url=db_url, auth="jwt", trusted_issuers=issuer.issuers_path, public_base_url=PUBLIC
    )
    app = create_app(settings, clock=lambda: FIXED_NOW)
    with TestClient(app) as c:
        for _ in range(50):
            assert c.get("/cds-services").status_code == 401
        for i in range(25):  # a path of the caller's choosing does not open a row each
            assert c.post(f"/cds-services/made-up-{i}", json={}).status_code == 401
    # the app has shut down: pending counts were flushed
    with app.state.maker() as s:
        found = list(s.scalars(select(RejectedRequest)))
    assert 2 <= len(found) <= 6, len(found)
    assert sum(r.count for r in found) == 75
    assert {(r.path, r.status) for r in found} == {
        ("/cds-services", 401),
        ("/cds-services/{service_id}", 401),
    }


def test_rejection_rows_past_their_retention_are_deleted(client: TestClient) -> None:
    maker = client.app_state.maker  # type: ignore[attr-defined]
    with maker.begin() as s:
        s.add(
            RejectedRequest(
                received_at=FIXED_NOW - timedelta(days=91),
                path=SIGN,
                status=400,
                reason="old",
                count=1,
            )
        )
    client.app_state.rejections._purged_at = None  # type: ignore[attr-defined]
    outcome(post_raw(client, b"{"), 400)
    assert [r.reason for r in rows(client, RejectedRequest)] != ["old"]
    assert all(r.reason != "old" for r in rows(client, RejectedRequest))


# ------------------------------------------------------------------ #17 and #18: surface


def test_api_docs_are_not_served_unless_asked_for(db_url: str) -> None:
    for client in make_client(db_url):
        assert client.get("/docs").status_code == 404
        assert client.get("/redoc").status_code == 404
        assert client.get("/openapi.json").status_code == 200  # the contract, no script
    for client in make_client(db_url, api_docs=True):
        assert client.get("/docs").status_code == 200


@pytest.mark.parametrize(
    "path", ["/review/static/console.css", "/no-such-page", "/review/no-such-page", SIGN]
)
def test_security_headers_on_every_response(client: TestClient, path: str) -> None:
    resp = client.get(path)
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
    assert resp.headers["cache-control"] == "no-store"
