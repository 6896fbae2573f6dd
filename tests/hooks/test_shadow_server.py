"""Shadow mode and kept requests on a real ``cds serve`` (uvicorn over HTTP, the sidecar
in its own process): the EHR gets the live answer only; the shadow pack's cards land in the
store, beside what the prescriber did with the live ones; the sidecar runs at a lower CPU
priority, and killing it neither breaks nor stalls the service (it is restarted); the kept
calls replay with ``cds rules replay`` from another process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cds.store.db import make_engine, make_sessionmaker, upgrade
from cds.store.models import Invocation
from cds.store.models_replay import HookRequest, ShadowCard, ShadowEvaluation
from cds.store.shadow import shadow_summary
from tests.packcopy import (
    CANDIDATE_VERSION,
    US_CEILING_60,
    US_CEILING_80,
    changed_pack,
    renewal,
)
from tests.server import ServeProcess

SIGN = "/cds-services/medication-safety-order-sign"


def _children(pid: int) -> list[tuple[int, str, int]]:
    """(pid, command line, nice) of the direct children of ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:  # fields: state, ppid, ..., nice is the 17th after ")"
            out.append((int(entry), cmd, int(fields[16])))
    return out


def _sidecar_pid(server: ServeProcess) -> int:
    """The sidecar process, once it has lowered its CPU priority (its first act)."""
    assert server.proc is not None
    found: list[tuple[int, int]] = []

    def niced() -> bool:
        found[:] = [(p, n) for p, cmd, n in _children(server.proc.pid) if "spawn_main" in cmd]
        return len(found) == 1 and found[0][1] >= 10

    _wait("the sidecar process at nice 10", niced, timeout=20)
    return found[0][0]


def _wait(what: str, check: Callable[[], bool], timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _count(maker: sessionmaker[Session], model: Any) -> int:
    with maker() as s:
        return int(s.scalar(select(func.count()).select_from(model)))


def _invocation(maker: sessionmaker[Session], hook_instance: str) -> str:
    with maker() as s:
        return str(s.scalar(select(Invocation.id).where(Invocation.hook_instance == hook_instance)))


def test_shadow_pack_over_real_uvicorn(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cds.db'}"
    upgrade(url)
    maker = make_sessionmaker(make_engine(url))
    shadow = changed_pack(tmp_path, [(US_CEILING_80, US_CEILING_60)])
    env = {
        "CDS_DATABASE_URL": url,
        "CDS_AUTH": "off",
        "CDS_KEEP_REQUESTS_DAYS": "7",
        # a second shadow that cannot load: logged, and no harm to the live answers
        "CDS_SHADOW_PACKS": f"baclofen={shadow},gabapentin={tmp_path / 'no-such-pack'}",
    }
    server = ServeProcess(env, cwd=tmp_path)
    with server:
        sidecar = _sidecar_pid(server)
        at80, at100 = renewal(20, 4, now=_now()), renewal(20, 5, now=_now())
        with httpx.Client(base_url=server.base, timeout=30) as client:
            r80 = client.post(SIGN, json=at80)
            r100 = client.post(SIGN, json=at100)
            assert r80.status_code == r100.status_code == 200, r80.text
            assert r80.json()["cards"] == []  # the live pack: 80 mg/day is within 80
            [live] = r100.json()["cards"]
            assert "exceeds the 80 mg/day" in live["summary"]
            feedback = client.post(
                f"{SIGN}/feedback",
                json={
                    "feedback": [
                        {
                            "card": live["uuid"],
                            "outcome": "overridden",
                            "outcomeTimestamp": _now().isoformat(),
                            "overrideReason": {"reason": live["overrideReasons"][0]},
                        }
                    ]
                },
            )
            assert feedback.status_code == 200, feedback.text
        _wait("the shadow evaluations", lambda: _count(maker, ShadowEvaluation) == 2)
        _wait("the kept requests", lambda: _count(maker, HookRequest) == 2)
        id80 = _invocation(maker, at80["hookInstance"])
        with maker() as s:
            rows = {(r.invocation_id, r.change): r for r in s.scalars(select(ShadowCard))}
            appear = rows[(id80, "appear")]
            assert appear.rule_id == "oral-daily-above-ceiling-us"
            assert "exceeds the 60 mg/day" in (appear.summary or "")
            [summary] = shadow_summary(session=s)
        assert summary.pack_version == CANDIDATE_VERSION and summary.errors == 0
        [rule] = summary.rules
        assert (rule.appear, rule.same, rule.live_overridden) == (1, 1, 1)
        assert "shadow pack gabapentin" in server.output() and "not loaded" in server.output()

        # the kept calls replay from another process: the same appearing card
        replay = subprocess.run(
            [
                str(Path(sys.executable).with_name("cds")),
                "rules",
                "replay",
                "--pack-dir",
                str(shadow),
                "--workers",
                "0",
            ],
            env={**os.environ, "CDS_DATABASE_URL": url, "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert replay.returncode == 0, replay.stderr + replay.stdout
        assert "oral-daily-above-ceiling-us appear: " + id80 in replay.stdout

        # a sidecar that dies takes nothing with it: answers go on, and it is restarted
        os.kill(sidecar, signal.SIGKILL)
        with httpx.Client(base_url=server.base, timeout=30) as client:
            t0 = time.perf_counter()
            resp = client.post(SIGN, json=renewal(20, 4, now=_now()))
            assert resp.status_code == 200 and resp.json()["cards"] == []
            assert time.perf_counter() - t0 < 5
            _wait("a new sidecar", lambda: _restarted(server, sidecar), timeout=20)
            later = renewal(20, 4, now=_now())
            before = _count(maker, ShadowEvaluation)
            # the restarted sidecar compiles its packs before it drains the new queue
            assert client.post(SIGN, json=later).status_code == 200
        _wait(
            "shadow rows from the restarted sidecar",
            lambda: _count(maker, ShadowEvaluation) > before,
        )
        later_id = _invocation(maker, later["hookInstance"])
        with maker() as s:
            changes = {
                r.change for r in s.scalars(select(ShadowCard)) if r.invocation_id == later_id
            }
        assert changes == {"appear"}
        assert "sidecar process exited" in server.output()
    assert "Traceback" not in server.output()


def _restarted(server: ServeProcess, old: int) -> bool:
    assert server.proc is not None
    pids = [p for p, cmd, _n in _children(server.proc.pid) if "spawn_main" in cmd]
    return bool(pids) and old not in pids


def _now() -> Any:
    """The server runs on the wall clock (no clock to pin in another process)."""
    from datetime import UTC, datetime

    return datetime.now(UTC)
