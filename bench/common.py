"""Helpers shared by the benchmark scripts: requests, machine facts, percentiles, servers."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
PG_ADMIN = os.environ.get("CDS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def ensure_requests(folder: Path | None = None, *, wall_clock: bool = False) -> dict[str, Path]:
    """kind -> request file. ``wall_clock``: fresh copies relative to now in ``folder`` (for a
    server that uses the wall clock); else the committed files at the fixed instant."""
    from bench.gen_requests import FIXED_NOW, KINDS, write_all

    if wall_clock:
        assert folder is not None
        return write_all(folder, datetime.now(UTC).replace(microsecond=0))
    folder = folder or HERE / "requests"
    paths = {k: folder / f"{k}.json" for k in KINDS}
    if not all(p.exists() for p in paths.values()):
        write_all(folder, FIXED_NOW)
    return paths


def load_request(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; 0.0 for no values."""
    if not values:
        return 0.0
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q / 100 * len(s) + 0.5)) - 1))
    return s[k]


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
    }


def rss_kib(pid: int) -> int:
    """Resident set size of a process (KiB), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def tree_rss_kib(pid: int) -> int:
    """RSS of a process and its children (uvicorn --workers forks workers)."""
    total = 0
    for p in [pid, *children(pid)]:
        with suppress(OSError):
            total += rss_kib(p)
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (s), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a server and its worker processes: with noisy neighbours on the machine
    this per-request figure is steadier than throughput."""
    total = 0.0
    for p in [pid, *children(pid)]:
        with suppress(OSError, IndexError, ValueError):
            total += cpu_seconds(p)
    return total


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids = (task / "children").read_text().split()
            for k in kids:
                out.append(int(k))
                out.extend(children(int(k)))
    except OSError:
        pass
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ databases


def sqlite_db(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        (folder / f"bench.db{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{folder / 'bench.db'}"


@contextmanager
def pg_db() -> Iterator[str]:
    """A fresh PostgreSQL database on 127.0.0.1 (migrated by the caller), dropped after."""
    import psycopg

    name = f"cds_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrate(url: str) -> None:
    from cds.store.db import upgrade

    upgrade(url)


# ------------------------------------------------------------------ servers


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        """Stop the server and every process it started (its own session: a console served
        on its own port is a child that a SIGKILL of the parent would leave running)."""
        if self.proc.poll() is None:
            self._signal_group(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(5)
        self._signal_group(signal.SIGKILL)  # whatever of the group outlived its parent

    def _signal_group(self, sig: int) -> None:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)


def python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def start_cds(
    *,
    port: int,
    workers: int,
    env: dict[str, str],
    log: Path,
    wait_path: str = "/cds-services",
    headers: dict[str, str] | None = None,
    timeout: float = 90,
    extra_args: Sequence[str] = (),
    repo: Path = REPO,
) -> Server:
    """``cds serve`` (uvicorn, production settings from ``env``) on 127.0.0.1:port.

    With ``CDS_AUTH=jwt`` the token audience is the URL called here, unless ``env`` says
    otherwise (``CDS_PUBLIC_BASE_URL`` is required in that mode).
    """
    if env.get("CDS_AUTH") == "jwt":
        env = {"CDS_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", **env}
    cmd = [
        python(),
        "-m",
        "cds.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        *extra_args,
    ]
    return _start(cmd, port, env, log, wait_path, headers, timeout, workers, repo=repo)


def start_bare(*, port: int, workers: int, log: Path, timeout: float = 60) -> Server:
    cmd = [
        python(),
        "-m",
        "uvicorn",
        "bench.bare_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "info",
        "--no-access-log",
    ]
    return _start(cmd, port, {}, log, "/health", None, timeout, workers)


def _start(
    cmd: list[str],
    port: int,
    env: dict[str, str],
    log: Path,
    wait_path: str,
    headers: dict[str, str] | None,
    timeout: float,
    workers: int,
    repo: Path = REPO,
) -> Server:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    full_env.update(env)
    full_env["PYTHONPATH"] = str(repo)
    log.parent.mkdir(parents=True, exist_ok=True)
    fh = log.open("wb")
    proc = subprocess.Popen(
        cmd,
        cwd=str(repo),
        env=full_env,
        stdout=fh,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Server(proc, port, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"server exited ({proc.returncode}); see {log}:\n"
                + log.read_text(errors="replace")[-3000:]
            )
        # every uvicorn worker logs this once its lifespan (pack compile) is done
        if log.read_text(errors="replace").count("Application startup complete") >= workers:
            try:
                r = httpx.get(server.base + wait_path, headers=headers, timeout=5)
                if r.status_code < 500:
                    return server
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"server did not answer in {timeout} s; see {log}")


def have(cmd: str) -> bool:
    return shutil.which(cmd) is not None
