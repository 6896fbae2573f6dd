"""A real ``cds serve`` process on 127.0.0.1 for tests that must cross real HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServeProcess:
    """``cds serve --port P`` with the given ``CDS_*`` environment; waits until it answers."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        workers: int = 1,
        cwd: Path | None = None,
        port: int | None = None,
        args: list[str] | None = None,
        wait_path: str = "/openapi.json",
    ) -> None:
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env}
        if self.env.get("CDS_PUBLIC_BASE_URL") == "{base}":  # the URL this server answers on
            self.env["CDS_PUBLIC_BASE_URL"] = self.base
        self.workers = workers
        self.args = list(args or [])
        self.wait_path = wait_path
        self.cwd = cwd or REPO
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    def start(self, timeout: float = 30.0) -> ServeProcess:
        cds = getattr(self, "cds", None) or Path(sys.executable).with_name("cds")
        self.log_path = Path(self.env.get("TMPDIR", "/tmp")) / f"cds-serve-{self.port}.log"
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                str(cds),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
                *self.args,
            ],
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cds serve exited: {self.output()[-2000:]}")
            try:
                httpx.get(f"{self.base}{self.wait_path}", timeout=0.5)
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"cds serve did not start: {self.output()[-2000:]}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def kill(self) -> None:
        """SIGKILL the whole process group (crash tests)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
