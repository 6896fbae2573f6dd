"""Scale-out: two ``cds serve`` instances (two uvicorn workers each) on different ports,
sharing PostgreSQL, the JWT replay cache and the pack-reload channel through Redis.

Both instances sit behind one public URL (``CDS_PUBLIC_BASE_URL``), as behind a load
balancer, so a token's ``aud`` is valid on either; only its ``jti`` decides.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from bench.common import Server, free_port, start_cds
from cds.store.db import make_engine, make_sessionmaker, upgrade
from cds.store.models import Feedback
from cds.testing.issuer import TestIssuer
from cds.web.reload import publish_reload
from tests.conftest import PACK_VERSION, REPO
from tests.reliability.conftest import typical
from tests.reliability.test_faults import set_version

PUBLIC = "https://cds.example.test"
SIGN = "/cds-services/medication-safety-order-sign"
RELOAD_BOUND_SECONDS = 10.0

pytestmark = pytest.mark.postgres


class Cluster:
    def __init__(self, servers: list[Server], issuer: TestIssuer, db_url: str, rules: Path) -> None:
        self.servers, self.issuer, self.db_url, self.rules = servers, issuer, db_url, rules

    def headers(self, path: str, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.issuer.token(PUBLIC + path)}"}

    def post(
        self, server: Server, path: str, body: Any, token: str | None = None
    ) -> httpx.Response:
        # a new connection per call, so calls spread over the instance's workers
        return httpx.post(
            server.base + path, json=body, headers=self.headers(path, token), timeout=30
        )

    def version(self, server: Server) -> str:
        r = httpx.get(
            server.base + "/cds-services", headers=self.headers("/cds-services"), timeout=10
        )
        assert r.status_code == 200, r.text[:300]
        return str(r.json()["services"][0]["version"])


@pytest.fixture(scope="module")
def cluster(
    redis_url: str, pg_admin: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    import uuid

    work = tmp_path_factory.mktemp("scale-out")
    rules = work / "rules"
    shutil.copytree(REPO / "rules", rules)
    issuer = TestIssuer(work / "issuer")
    name = f"cds_test_{uuid.uuid4().hex[:12]}"
    pg_admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[attr-defined]
    from tests.conftest import PG_ADMIN

    db_url = f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"
    upgrade(db_url)
    env = {
        "CDS_DATABASE_URL": db_url,
        "CDS_AUTH": "jwt",
        "CDS_TRUSTED_ISSUERS": str(issuer.issuers_path),
        "CDS_REDIS_URL": redis_url,
        "CDS_RULES_DIR": str(rules),
        "CDS_PUBLIC_BASE_URL": PUBLIC,
        "CDS_PACKS": "baclofen",  # the pack whose version this test watches
    }
    servers: list[Server] = []
    try:
        for i in range(2):
            servers.append(
                start_cds(
                    port=free_port(),
                    workers=2,
                    env=env,
                    log=work / f"instance-{i}.log",
                    timeout=120,
                )
            )
        yield Cluster(servers, issuer, db_url, rules)
    finally:
        for s in servers:
            s.stop()
        pg_admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore


def test_a_token_replayed_on_the_other_instance_or_worker_is_refused(cluster: Cluster) -> None:
    a, b = cluster.servers
    body = typical(datetime.now(UTC))
    token = cluster.issuer.token(PUBLIC + SIGN)
    assert cluster.post(a, SIGN, body, token).status_code == 200
    replay = cluster.post(b, SIGN, body, token)
    assert replay.status_code == 401
    assert replay.json()["resourceType"] == "OperationOutcome"
    assert cluster.post(a, SIGN, body, token).status_code == 401
    # many tokens, each used twice on the same two-worker instance: with a per-process
    # cache about half of the second uses would land on the other worker and pass
    for server in (a, b):
        for _ in range(8):
            t = cluster.issuer.token(PUBLIC + "/cds-services")
            first = httpx.get(
                server.base + "/cds-services", headers={"Authorization": f"Bearer {t}"}, timeout=10
            )
            second = httpx.get(
                server.base + "/cds-services", headers={"Authorization": f"Bearer {t}"}, timeout=10
            )
            assert (first.status_code, second.status_code) == (200, 401)


def test_feedback_written_through_both_instances_is_all_there(cluster: Cluster) -> None:
    posted = 0
    for i, server in enumerate(cluster.servers * 3):
        other = cluster.servers[(i + 1) % 2]
        r = cluster.post(server, SIGN, typical(datetime.now(UTC)))
        assert r.status_code == 200, r.text[:300]
        for card in r.json()["cards"]:
            item = {
                "card": card["uuid"],
                "outcome": "overridden",
                "outcomeTimestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            }
            fb = cluster.post(other, SIGN + "/feedback", {"feedback": [item]})
            assert fb.status_code == 200, fb.text[:300]
            assert fb.json() == {"stored": 1, "duplicates": 0}
            posted += 1
    assert posted >= 6
    engine = make_engine(cluster.db_url)
    try:
        with make_sessionmaker(engine)() as s:
            assert s.scalar(select(func.count()).select_from(Feedback)) == posted
    finally:
        engine.dispose()


def test_a_reload_published_once_is_served_by_every_worker_of_every_instance(
    cluster: Cluster, redis_url: str
) -> None:
    assert {cluster.version(s) for s in cluster.servers} == {f"baclofen-{PACK_VERSION}"}
    set_version(cluster.rules, "9.1.0")
    t0 = time.monotonic()
    cli = subprocess.run(  # what an operator runs
        [sys.executable, "-m", "cds.cli", "rules", "reload"],
        cwd=REPO,
        timeout=60,
        env={**os.environ, "CDS_REDIS_URL": redis_url},
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr
    deadline = t0 + RELOAD_BOUND_SECONDS
    for server in cluster.servers:
        # new connections spread over both workers: eight answers in a row must be new
        streak = 0
        while streak < 8:
            assert time.monotonic() < deadline, f"{server.base} still serves the old pack"
            streak = streak + 1 if cluster.version(server) == "baclofen-9.1.0" else 0
    elapsed = time.monotonic() - t0
    assert elapsed < RELOAD_BOUND_SECONDS
    # a broken version published next is refused everywhere; 9.1.0 keeps serving
    set_version(cluster.rules, "9.2.0", break_it=True)
    assert publish_reload(redis_url) >= 4  # two workers on each of two instances
    for server in cluster.servers:
        while server.log.read_text().count("FAILED, still serving 9.1.0") < 2:
            assert time.monotonic() < deadline + RELOAD_BOUND_SECONDS
            time.sleep(0.1)
        assert cluster.version(server) == "baclofen-9.1.0"
        assert server.proc.poll() is None
    set_version(cluster.rules, PACK_VERSION)
