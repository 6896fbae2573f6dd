"""The hardening findings that were made against real servers, checked on real servers:
``cds serve`` (uvicorn) processes on 127.0.0.1, spoken to over real sockets.

- #1: the console on its own listener and process (``--console-port``), or alone
  (``--console only``); the hook API's port then has no console at all.
- #3 and the error boundary: configuration errors end ``cds serve`` with one line and
  exit status 2, never a traceback.
- #16: a huge header is refused while it is being sent, not buffered whole.
"""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cds.testing.issuer import TestIssuer
from tests.conftest import REPO
from tests.server import ServeProcess, free_port

SIGN = "/cds-services/baclofen-order-sign"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'cds.db'}",
        "CDS_AUTH": "off",
        "TMPDIR": str(tmp_path),
        **extra,
    }


def _example() -> dict[str, object]:
    body: dict[str, object] = json.loads(
        (REPO / "fhir" / "examples" / "order-sign-renal-moderate.json").read_text()
    )
    return body


# ------------------------------------------------------------------ #1: separate listener


def test_console_on_its_own_port_and_process(tmp_path: Path) -> None:
    console_port = free_port()
    server = ServeProcess(_env(tmp_path), cwd=tmp_path, args=["--console-port", str(console_port)])
    console = f"http://127.0.0.1:{console_port}"
    with server:
        deadline = time.monotonic() + 30
        while True:
            try:
                login = httpx.get(f"{console}/review/login", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, server.output()[-2000:]
                time.sleep(0.2)
        # the console answers on its port, the hook API not at all there
        assert login.status_code == 200 and "Sign in" in login.text
        assert httpx.get(f"{console}/cds-services").status_code == 404
        # the hook API answers on its port, the console not at all there
        assert httpx.post(f"{server.base}{SIGN}", json=_example(), timeout=10).status_code == 200
        assert httpx.get(f"{server.base}/review/login").status_code == 404
        # two processes: a console flood cannot take the hook API's threads or GIL
        assert "review console on" in server.output()
    with pytest.raises(httpx.HTTPError):  # stopped with its parent
        httpx.get(f"{console}/review/login", timeout=1)


def test_console_alone(tmp_path: Path) -> None:
    server = ServeProcess(
        _env(tmp_path), cwd=tmp_path, args=["--console", "only"], wait_path="/review/login"
    )
    with server:
        assert httpx.get(f"{server.base}/review/login").status_code == 200
        assert httpx.get(f"{server.base}/cds-services").status_code == 404
        # a console-only process needs no JWT configuration
    assert "DEVELOPMENT MODE" not in server.output()


# ------------------------------------------------------------------ #3: configuration errors


def _serve_fails(tmp_path: Path, env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("cds")), "serve", "--port", str(free_port()), *args],
        env={**_env(tmp_path), **env, "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out, out
    assert [line for line in out.splitlines() if "configuration error" in line], out
    return out


def test_jwt_with_two_workers_and_no_redis_refuses_to_start(tmp_path: Path) -> None:
    issuer = TestIssuer(tmp_path / "ehr")
    out = _serve_fails(
        tmp_path,
        {
            "CDS_AUTH": "jwt",
            "CDS_TRUSTED_ISSUERS": str(issuer.issuers_path),
            "CDS_PUBLIC_BASE_URL": "https://cds.hospital.test",
        },
        "--workers",
        "2",
    )
    assert "CDS_REDIS_URL" in out


def test_jwt_without_a_public_base_url_refuses_to_start(tmp_path: Path) -> None:
    issuer = TestIssuer(tmp_path / "ehr")
    out = _serve_fails(
        tmp_path, {"CDS_AUTH": "jwt", "CDS_TRUSTED_ISSUERS": str(issuer.issuers_path)}
    )
    assert "CDS_PUBLIC_BASE_URL" in out


def test_a_bad_trusted_issuers_path_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    out = _serve_fails(
        tmp_path,
        {
            "CDS_AUTH": "jwt",
            "CDS_TRUSTED_ISSUERS": str(tmp_path / "no-such-file.json"),
            "CDS_PUBLIC_BASE_URL": "https://cds.hospital.test",
        },
    )
    [line] = [x for x in out.splitlines() if "configuration error" in x]  # one line
    assert "CDS_TRUSTED_ISSUERS" in line and "no-such-file.json" in line


# ------------------------------------------------------------------ #16: header size


def test_a_huge_header_is_refused_while_it_is_sent(tmp_path: Path) -> None:
    with ServeProcess(_env(tmp_path), cwd=tmp_path) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(b"GET /cds-services HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        chunk, sent, answer = b"a" * 65_536, 0, b""
        try:
            while sent < 64 * 1024 * 1024:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    answer = sock.recv(4096)
                    break
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            sock.close()
        # refused within the first few megabytes (socket buffers included), not 64 MB
        assert sent < 16 * 1024 * 1024, sent
        assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:100]
        # and the server is fine
        assert httpx.get(f"{server.base}/cds-services").status_code == 200
