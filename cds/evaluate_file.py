"""``cds evaluate``: one request through the very app that serves HTTP, in process.

The request goes through ``create_app`` (authentication off, an in-memory audit store)
over an ASGI transport, so the printed response is exactly what ``POST
/cds-services/{id}`` would answer at the same instant: no second code path to drift.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from cds.engine.registry import PackRegistry
from cds.hooks.services import SERVICE_IDS as HOOK_TO_SERVICE
from cds.settings import Settings
from cds.store.db import make_memory_sessionmaker
from cds.web.app import create_app


def evaluate_request(
    body: Any,
    *,
    rules_dir: Path,
    pack_ids: Sequence[str],
    profile: str,
    now: datetime,
    settings: Settings | None = None,
    service_id: str | None = None,
    registry: PackRegistry | None = None,
) -> tuple[int, Any]:
    """(status, JSON body) of the hook call ``body`` at ``now``."""
    base = settings or Settings()
    settings = base.model_copy(
        update={"auth": "off", "profile": profile, "database_url": "sqlite://"}
    )
    if registry is None:
        registry = PackRegistry(rules_dir=rules_dir, pack_ids=list(pack_ids), profile=profile)
        registry.load()
    app = create_app(
        settings,
        registry=registry,
        clock=lambda: now,
        maker=make_memory_sessionmaker(),
        announce_dev_mode=False,
    )
    hook = body.get("hook") if isinstance(body, dict) else None
    sid = service_id or HOOK_TO_SERVICE.get(str(hook), HOOK_TO_SERVICE["order-sign"])

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cds.local") as c:
            return await c.post(f"/cds-services/{sid}", json=body)

    resp = asyncio.run(call())
    return resp.status_code, resp.json()
