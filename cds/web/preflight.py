"""Log CORS preflights the service refuses: a browser client then shows "all clear".

A browser-based EHR client (the official CDS Hooks sandbox, a SMART-embedded panel) calls
from another origin. Without ``CDS_CORS_ORIGINS`` naming it, its preflight is refused, the
browser never sends the hook call, and the client shows "no recommendations" as if all were
well: the worst failure a safety service can have, and a silent one. This middleware makes
it loud in the log (the origin and the path only; no headers, no body).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

log = logging.getLogger("cds.cors")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class PreflightLogger:
    """Pure ASGI middleware (no per-request cost beyond a header scan for OPTIONS)."""

    def __init__(self, app: ASGIApp, allowed: list[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or scope.get("method") != "OPTIONS":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers") or []}
        origin = headers.get(b"origin")
        if origin is None or b"access-control-request-method" not in headers:
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def watch(message: Message) -> None:
            if message.get("type") == "http.response.start":
                status.append(int(message.get("status", 0)))
            await send(message)

        await self.app(scope, receive, watch)
        text = origin.decode("latin-1")[:200]
        if not status or status[0] >= 400 or text not in self.allowed:
            log.warning(
                "CORS preflight refused: origin %r, path %s (status %s). A browser client "
                "there sees no cards at all; add the origin to CDS_CORS_ORIGINS.",
                text,
                str(scope.get("path", ""))[:200],
                status[0] if status else "none",
            )
