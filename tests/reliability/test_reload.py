"""``cds.web.reload``: the Redis reload channel, its resilience, and SIGHUP without Redis."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import httpx

from bench.common import free_port, start_cds
from cds.web.reload import RedisReloadListener, publish_reload, start_reload
from tests.conftest import PACK_VERSION, REPO
from tests.reliability.test_faults import set_version


def wait_for(predicate: object, timeout: float, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(every)
    return False


def test_published_reload_reaches_every_listener(redis_url: str) -> None:
    channel = f"cds:test:{os.getpid()}:{time.monotonic_ns()}"
    hits = [threading.Event(), threading.Event()]
    listeners = [
        RedisReloadListener(redis_url, h.set, channel=channel, poll_seconds=0.1).start()
        for h in hits
    ]
    try:
        assert all(li.subscribed.wait(5) for li in listeners)
        assert publish_reload(redis_url, channel=channel) == 2
        assert all(h.wait(5) for h in hits)
    finally:
        for li in listeners:
            li.stop()
    assert all(not (li._thread and li._thread.is_alive()) for li in listeners)


def test_listener_survives_a_failing_handler_and_an_unreachable_redis(redis_url: str) -> None:
    calls: list[int] = []

    def explode() -> None:
        calls.append(1)
        raise RuntimeError("reload handler bug")

    channel = f"cds:test:{os.getpid()}:{time.monotonic_ns()}"
    li = RedisReloadListener(redis_url, explode, channel=channel, poll_seconds=0.1).start()
    try:
        assert li.subscribed.wait(5)
        publish_reload(redis_url, channel=channel)
        assert wait_for(lambda: calls, 5)
        publish_reload(redis_url, channel=channel)  # still listening after the exception
        assert wait_for(lambda: len(calls) >= 2, 5)
    finally:
        li.stop()
    down = RedisReloadListener(
        "redis://127.0.0.1:1/0", lambda: None, poll_seconds=0.1, max_backoff_seconds=0.2
    ).start()
    time.sleep(0.5)
    assert not down.subscribed.is_set()
    down.stop()
    assert down._thread is not None and not down._thread.is_alive()


def test_start_reload_without_a_loop_or_redis_is_a_no_op() -> None:
    class Registry:
        def reload(self) -> list[object]:
            return []

    control = start_reload(Registry(), None)
    assert control.listener is None and not control.sighup
    control.stop()


def test_sighup_reloads_a_single_process_server_without_redis(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules)
    url = f"sqlite:///{tmp_path / 'cds.db'}"
    server = start_cds(
        port=free_port(),
        workers=1,
        log=tmp_path / "serve.log",
        env={
            "CDS_DATABASE_URL": url,
            "CDS_AUTH": "off",
            "CDS_RULES_DIR": str(rules),
            "CDS_PACKS": "baclofen",  # the pack whose version this test watches
        },
    )

    def version() -> str:
        r = httpx.get(server.base + "/cds-services", timeout=5)
        return str(r.json()["services"][0]["version"])

    try:
        assert version() == f"baclofen-{PACK_VERSION}"
        set_version(rules, "9.0.1", break_it=True)
        os.kill(server.proc.pid, signal.SIGHUP)
        assert wait_for(lambda: "FAILED" in server.log.read_text(), 10)
        assert version() == f"baclofen-{PACK_VERSION}", "a broken pack never replaces a working one"
        assert server.proc.poll() is None
        set_version(rules, "9.0.1")
        os.kill(server.proc.pid, signal.SIGHUP)
        assert wait_for(lambda: version() == "baclofen-9.0.1", 10)
    finally:
        server.stop()


def test_cli_rules_reload_without_redis_points_to_sighup() -> None:
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    r = subprocess.run(
        [sys.executable, "-m", "cds.cli", "rules", "reload"],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert r.returncode == 2 and "SIGHUP" in (r.stdout + r.stderr)
