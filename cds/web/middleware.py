"""Security headers on every response, whoever produced it (hardening #18).

The console's route class already set them on its pages, but static files, 404 pages,
redirects made by Starlette and the hook API's own answers came out bare. A pure ASGI
middleware sees every ``http.response.start``; it only adds what the response did not
set itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Everything the service answers: no sniffing, no framing, no caching of patient data.
COMMON = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}
#: JSON for EHRs: nothing in it is ever meant to run or load in a browser.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
#: The review console (same policy as ``ConsoleRoute``'s pages).
CONSOLE = {
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}
#: /docs and /redoc (only with CDS_API_DOCS=true) load their script from a CDN.
_DOCS = ("/docs", "/redoc")


def headers_for(path: str) -> dict[str, str]:
    if path.startswith("/review"):
        return {**COMMON, **CONSOLE}
    if path.startswith(_DOCS):
        return dict(COMMON)
    return {**COMMON, "Content-Security-Policy": API_CSP}


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        wanted = headers_for(scope.get("path", ""))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = list(message.get("headers", []))
                present = {name.lower() for name, _ in raw}
                for name, value in wanted.items():
                    if name.lower().encode() not in present:
                        raw.append((name.lower().encode(), value.encode()))
                message["headers"] = raw
            await send(message)

        await self.app(scope, receive, send_with_headers)
