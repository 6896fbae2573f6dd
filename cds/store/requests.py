"""Kept hook requests (``CDS_KEEP_REQUESTS_DAYS``): what ``cds rules replay`` runs again.

A kept request is patient data. It is written only when the setting is above 0, holds
only what the evaluation read (no ``fhirAuthorization``: see ``cds.hooks.stored``), and is
deleted once older than the setting: at start-up, hourly while the service runs, and by
``cds requests purge``. A setting of 0 deletes every kept request at the next purge.

Keyword-only functions; callers pass a sessionmaker (writes) or a session (reads).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, tuple_
from sqlalchemy.orm import Session, sessionmaker

from cds.store.models_replay import HookRequest

__all__ = [
    "KeptRequest",
    "RequestStats",
    "count_requests",
    "decode_body",
    "encode_body",
    "iter_requests",
    "keep_requests",
    "purge_requests",
    "request_stats",
]


def encode_body(doc: dict[str, Any]) -> tuple[bytes, int, str]:
    """(zlib-compressed JSON, uncompressed size, SHA-256 of the JSON)."""
    raw = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, default=str).encode()
    return zlib.compress(raw, 6), len(raw), hashlib.sha256(raw).hexdigest()


def decode_body(blob: bytes) -> dict[str, Any]:
    value = json.loads(zlib.decompress(blob))
    if not isinstance(value, dict):
        raise ValueError("a kept request is a JSON object")
    return value


@dataclass(frozen=True)
class KeptRequest:
    invocation_id: str
    received_at: datetime
    service_id: str
    hook: str
    pack_version: str | None
    doc: dict[str, Any]


def keep_requests(*, session: Session, requests: list[KeptRequest], stored_at: datetime) -> None:
    """Insert kept requests (the caller commits); one already kept is left as it is."""
    if not requests:
        return
    ids = [r.invocation_id for r in requests]
    have = set(
        session.scalars(select(HookRequest.invocation_id).where(HookRequest.invocation_id.in_(ids)))
    )
    rows = []
    for r in requests:
        if r.invocation_id in have:
            continue
        have.add(r.invocation_id)
        body, size, digest = encode_body(r.doc)
        rows.append(
            {
                "invocation_id": r.invocation_id,
                "received_at": r.received_at,
                "stored_at": stored_at,
                "service_id": r.service_id[:64],
                "hook": r.hook[:32],
                "pack_version": r.pack_version[:32] if r.pack_version else None,
                "body": body,
                "body_bytes": size,
                "sha256": digest,
            }
        )
    if rows:
        session.execute(insert(HookRequest), rows)


def purge_requests(*, maker: sessionmaker[Session], keep_days: int, now: datetime) -> int:
    """Delete the requests kept more than ``keep_days`` (0: all of them); how many."""
    from cds.store.db import write_lock

    stmt = delete(HookRequest)
    if keep_days > 0:
        stmt = stmt.where(HookRequest.stored_at < now - timedelta(days=keep_days))
    with write_lock(maker), maker.begin() as s:
        result = s.execute(stmt)
        return int(getattr(result, "rowcount", 0) or 0)


@dataclass(frozen=True)
class RequestStats:
    count: int
    oldest: datetime | None  # received_at
    newest: datetime | None
    stored_bytes: int  # compressed
    json_bytes: int  # uncompressed


def request_stats(*, session: Session) -> RequestStats:
    row = session.execute(
        select(
            func.count(),
            func.min(HookRequest.received_at),
            func.max(HookRequest.received_at),
            func.coalesce(func.sum(func.length(HookRequest.body)), 0),
            func.coalesce(func.sum(HookRequest.body_bytes), 0),
        )
    ).one()
    return RequestStats(int(row[0]), row[1], row[2], int(row[3]), int(row[4]))


def _window(stmt: Any, since: datetime | None, until: datetime | None) -> Any:
    if since is not None:
        stmt = stmt.where(HookRequest.received_at >= since)
    if until is not None:
        stmt = stmt.where(HookRequest.received_at < until)
    return stmt


def count_requests(*, session: Session, since: datetime | None, until: datetime | None) -> int:
    return int(session.scalar(_window(select(func.count()).select_from(HookRequest), since, until)))


#: (invocation id, received at, service id, hook, compressed body, live pack versions)
StoredRow = tuple[str, datetime, str, str, bytes, str | None]


def iter_requests(
    *,
    maker: sessionmaker[Session],
    since: datetime | None,
    until: datetime | None,
    page: int = 200,
) -> Iterator[list[StoredRow]]:
    """Kept requests in (received_at, invocation id) order, ``page`` at a time (keyset
    pagination: a short read transaction per page, never one over the whole replay)."""
    after: tuple[datetime, str] | None = None
    while True:
        stmt = _window(
            select(
                HookRequest.invocation_id,
                HookRequest.received_at,
                HookRequest.service_id,
                HookRequest.hook,
                HookRequest.body,
                HookRequest.pack_version,
            ),
            since,
            until,
        )
        if after is not None:
            stmt = stmt.where(
                tuple_(HookRequest.received_at, HookRequest.invocation_id) > tuple_(*after)
            )
        stmt = stmt.order_by(HookRequest.received_at, HookRequest.invocation_id).limit(page)
        with maker() as s:
            rows: list[StoredRow] = [
                (r[0], r[1], r[2], r[3], bytes(r[4]), r[5]) for r in s.execute(stmt)
            ]
        if not rows:
            return
        yield rows
        if len(rows) < page:
            return
        after = (rows[-1][1], rows[-1][0])
