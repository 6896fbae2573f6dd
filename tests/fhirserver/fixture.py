"""pytest fixture: a real FHIR R4 server (Medplum's in-memory router) on 127.0.0.1.

The prefetch fallback is only worth trusting if it has talked to a server with real search
semantics and paging, not only to mocks. ``server.mjs`` beside this file wraps
``@medplum/fhir-router``; its npm packages are pinned by ``package-lock.json`` and installed
with::

    npm ci --prefix tests/fhirserver

The fixture runs that itself when ``node_modules`` is missing (under a file lock, so
pytest-xdist workers do not install twice). Without node/npm, or if the server will not
start, the tests that need it skip with a hint, except under ``CI=true``, where that fails.

Use it by importing the fixture into a conftest::

    from tests.fhirserver.fixture import fhir_server  # noqa: F401
"""

from __future__ import annotations

import fcntl
import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

HERE = Path(__file__).resolve().parent
INSTALL_HINT = "install it with `npm ci --prefix tests/fhirserver` (needs node >= 20.19 and npm)"
TOKEN = "test-fhir-token-3f9c1e"  # the bearer token the server demands; test data only
START_TIMEOUT = 60.0


class ServerUnavailable(Exception):
    """The test FHIR server could not be installed or started (message says why)."""


@dataclass
class FhirTestServer:
    """A running test server: ``base_url`` ends in ``/fhir``; ``token`` is the one it demands."""

    base_url: str
    token: str
    process: subprocess.Popen[str]

    def _client(self) -> httpx.Client:
        return httpx.Client(
            headers={"Authorization": f"Bearer {self.token}"}, timeout=10.0, trust_env=False
        )

    def seed(self, resources: list[dict[str, Any]]) -> None:
        """Store resources: PUT when they have an id (so tests control ids), else POST."""
        with self._client() as client:
            for resource in resources:
                rtype = resource["resourceType"]
                if resource.get("id"):
                    url = f"{self.base_url}/{rtype}/{resource['id']}"
                    response = client.put(url, json=resource)
                else:
                    response = client.post(f"{self.base_url}/{rtype}", json=resource)
                response.raise_for_status()

    def requests_seen(self) -> list[dict[str, Any]]:
        """Every request the server received so far: method, path, authorization header."""
        origin = self.base_url.rsplit("/fhir", 1)[0]
        with httpx.Client(timeout=10.0, trust_env=False) as client:
            response = client.get(f"{origin}/_test/requests")
            response.raise_for_status()
            seen: list[dict[str, Any]] = response.json()
            return seen


def _ensure_installed() -> None:
    if (HERE / "node_modules" / "@medplum" / "fhir-router").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise ServerUnavailable("npm is not installed")
    with open(HERE / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (HERE / "node_modules" / "@medplum" / "fhir-router").is_dir():
            return
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise ServerUnavailable(f"`npm ci` failed: {done.stderr.strip()[-500:]}")


def _start() -> FhirTestServer:
    node = shutil.which("node")
    if node is None:
        raise ServerUnavailable("node is not installed")
    _ensure_installed()
    process = subprocess.Popen(
        [node, "server.mjs", "0"],
        cwd=HERE,
        env={**os.environ, "FHIR_TEST_TOKEN": TOKEN},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:  # keep draining stdout so the server never blocks on a full pipe
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    output: list[str] = []
    try:
        while True:
            line = lines.get(timeout=START_TIMEOUT)
            if line is None:
                raise ServerUnavailable("server exited: " + "".join(output)[-800:])
            if line.startswith("LISTENING "):
                port = int(line.split()[1])
                return FhirTestServer(f"http://127.0.0.1:{port}/fhir", TOKEN, process)
            output.append(line)
    except queue.Empty:
        _stop(process)
        raise ServerUnavailable(f"server not ready after {START_TIMEOUT:.0f} s") from None
    except ServerUnavailable:
        _stop(process)
        raise


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@pytest.fixture(scope="session")
def fhir_server() -> Iterator[FhirTestServer]:
    """A seeded-on-demand FHIR server for the whole session; skips (fails under CI) if absent."""
    try:
        server = _start()
    except (ServerUnavailable, OSError, subprocess.TimeoutExpired) as exc:
        message = f"test FHIR server unavailable ({exc}); to enable it, {INSTALL_HINT}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield server
    finally:
        _stop(server.process)
