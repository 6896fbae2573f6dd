"""``cds.web.http.BoundedHttpToolsProtocol``: httptools with a bound on the request head.

A real uvicorn server on 127.0.0.1 with a tiny app and a 1,024-byte limit: heads under the
limit pass (however they are split), heads over it get 431 and a closed connection before
the parser buffers them, bodies are never counted, pipelined and keep-alive requests each
get their own budget. (The 64 MB header against ``cds serve`` itself is in
``test_hardening_servers.py``.)
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from cds.web.http import BoundedHttpToolsProtocol

LIMIT = 1024


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    size = 0
    while True:
        msg = await receive()
        size += len(msg.get("body", b""))
        if not msg.get("more_body"):
            break
    body = str(size).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    config = uvicorn.Config(
        echo_app,
        host="127.0.0.1",
        port=port,
        http=BoundedHttpToolsProtocol,
        h11_max_incomplete_event_size=LIMIT,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield port
    server.should_exit = True
    thread.join(10)


def exchange(port: int, pieces: list[bytes], *, expect: int = 1) -> bytes:
    """Send ``pieces`` (with a pause between them) and read until ``expect`` answers or EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for p in pieces:
            try:
                sock.sendall(p)
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.02)
        sock.settimeout(0.3)
        out, deadline = b"", time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if out.count(b"HTTP/1.1 ") >= expect:
                    break
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out


def head(extra: int) -> bytes:
    return b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * extra + b"\r\n\r\n"


def test_a_head_under_the_limit_is_served(port: int) -> None:
    req = head(LIMIT - 60)
    assert len(req) <= LIMIT
    assert exchange(port, [req]).startswith(b"HTTP/1.1 200")


def test_a_head_over_the_limit_is_refused_with_431(port: int) -> None:
    out = exchange(port, [head(LIMIT + 10)])
    assert out.startswith(b"HTTP/1.1 431"), out[:80]


def test_a_head_over_the_limit_sent_in_small_pieces_is_refused(port: int) -> None:
    req = head(4 * LIMIT)
    out = exchange(port, [req[i : i + 100] for i in range(0, len(req), 100)])
    assert out.startswith(b"HTTP/1.1 431"), out[:80]


def test_a_head_under_the_limit_split_anywhere_is_served(port: int) -> None:
    req = head(LIMIT - 60)
    for cut in (1, len(req) // 2, len(req) - 3, len(req) - 2, len(req) - 1):
        out = exchange(port, [req[:cut], req[cut:]])
        assert out.startswith(b"HTTP/1.1 200"), (cut, out[:80])


def test_bodies_are_not_counted_and_each_request_has_its_own_budget(port: int) -> None:
    body = b"x" * (20 * LIMIT)
    post = (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nX-Pad: "
        + b"a" * (LIMIT - 120)
        + b"\r\n\r\n"
        + body
    )
    assert len(post) - len(body) <= LIMIT
    # three requests on one connection, the last two pipelined in one write
    out = exchange(port, [post, post + post], expect=3)
    assert out.count(b"HTTP/1.1 200") == 3, out[:300]
    assert out.endswith(str(len(body)).encode())
