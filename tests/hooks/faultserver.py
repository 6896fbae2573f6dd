"""A misbehaving HTTP server on 127.0.0.1, for the fallback fetch's failure tests.

The first path segment picks the misbehaviour, so one server serves every fault and a test
points ``fhirServer`` at e.g. ``http://127.0.0.1:PORT/html``; a ``fault=X`` query parameter
overrides it, so keys of one call can misbehave differently. It records each request's path
and Authorization header, so tests can prove where the token went (and where it did not).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FHIR_JSON = "application/fhir+json"


@dataclass
class Recorded:
    path: str
    authorization: str | None


@dataclass
class FaultServer:
    port: int
    stopping: threading.Event
    requests: list[Recorded] = field(default_factory=list)
    redirect_to: str = ""  # where /redirect and /offbase-next point (another origin)

    def base(self, fault: str) -> str:
        return f"http://127.0.0.1:{self.port}/{fault}"


def _bundle(entries: list[dict[str, Any]], next_url: str | None = None) -> bytes:
    body: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in entries],
    }
    if next_url:
        body["link"] = [{"relation": "next", "url": next_url}]
    return json.dumps(body).encode()


def _handler(state: FaultServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = (
            "HTTP/1.0"  # bodies end at close: lets /trickle and /big-stream omit length
        )

        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            pass

        def _send(self, status: int, body: bytes, ctype: str = FHIR_JSON, **headers: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            state.requests.append(Recorded(self.path, self.headers.get("Authorization")))
            fault = self.path.split("/")[1].split("?")[0]
            if "fault=" in self.path:  # ?fault=X overrides, so one base can mix behaviours
                fault = self.path.split("fault=")[1].split("&")[0]
            with suppress(BrokenPipeError, ConnectionResetError):  # the client gave up first
                self._fault(fault)

        def _fault(self, fault: str) -> None:
            patient = {"resourceType": "Patient", "id": "p1"}
            if fault == "ok":
                self._send(200, json.dumps(patient).encode())
            elif fault == "slow-headers":
                state.stopping.wait(10)
                self._send(200, json.dumps(patient).encode())
            elif (
                fault == "trickle"
            ):  # headers at once, then one byte every 0.2 s: beats read timeouts
                self.send_response(200)
                self.send_header("Content-Type", FHIR_JSON)
                self.end_headers()
                for char in json.dumps(patient) * 50:
                    if state.stopping.wait(0.2):
                        break
                    self.wfile.write(char.encode())
                    self.wfile.flush()
            elif fault == "html":
                self._send(200, b"<html><body>Login required</body></html>", "text/html")
            elif fault == "garbage":
                self._send(200, b"\x00\xffnot json {{{", FHIR_JSON)
            elif fault == "not-fhir":
                self._send(200, b'{"hello": "world"}', "application/json")
            elif fault == "outcome":
                outcome = {"resourceType": "OperationOutcome", "issue": [{"code": "processing"}]}
                self._send(200, json.dumps(outcome).encode())
            elif fault == "unauthorized":
                self._send(401, b'{"resourceType":"OperationOutcome"}', WWW_Authenticate="Bearer")
            elif fault == "notfound":
                self._send(404, b'{"resourceType":"OperationOutcome"}')
            elif fault == "error500":
                self._send(500, b"Internal Server Error", "text/plain")
            elif fault == "big":  # declares its size up front
                self._send(200, _bundle([patient] * 20_000))
            elif fault == "big-stream":  # no Content-Length: only counting the bytes catches it
                self.send_response(200)
                self.send_header("Content-Type", FHIR_JSON)
                self.end_headers()
                self.wfile.write(_bundle([patient] * 20_000))
            elif fault == "redirect":
                self._send(302, b"", Location=state.redirect_to + "/Patient/p1")
            elif fault == "offbase-next":
                self._send(200, _bundle([patient], next_url=state.redirect_to + "/Patient?page=2"))
            else:
                self._send(404, b'{"resourceType":"OperationOutcome"}')

    return Handler


@contextmanager
def fault_server(redirect_to: str = "") -> Iterator[FaultServer]:
    """Run a fault server on a free port for the duration of the block."""
    stopping = threading.Event()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    state = FaultServer(port=httpd.server_address[1], stopping=stopping, redirect_to=redirect_to)
    httpd.RequestHandlerClass = _handler(state)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        stopping.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
