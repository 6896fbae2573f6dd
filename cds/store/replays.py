"""Replay reports (``cds rules replay``), stored for the rules page of the console.

Keyword-only functions; callers pass a sessionmaker (writes) or a session (reads).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cds.store.models_replay import ReplayReport

__all__ = ["get_report", "recent_reports", "save_report"]


def save_report(*, maker: sessionmaker[Session], report: dict[str, Any]) -> str:
    """Store a report (the columns of ``ReplayReport``); its id."""
    from cds.store.db import write_lock

    with write_lock(maker), maker.begin() as s:
        s.add(ReplayReport(**report))
    return str(report["id"])


def recent_reports(*, session: Session, limit: int = 20) -> list[ReplayReport]:
    return list(
        session.scalars(
            select(ReplayReport)
            .order_by(ReplayReport.created_at.desc(), ReplayReport.id)
            .limit(limit)
        )
    )


def get_report(*, session: Session, report_id: str) -> ReplayReport | None:
    if not report_id or len(report_id) > 36:
        return None
    return session.get(ReplayReport, report_id)
