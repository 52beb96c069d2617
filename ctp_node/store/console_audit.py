"""The audit trail of the web console: sign-ins (and failed ones), sign-outs, refused requests
and every action (reprocess with an AIF/VOF, resend, retry), with who, from where, when (UTC)
and how it ended. Written once, never changed, kept for good."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select

from ctp_node.store.audit import _clean
from ctp_node.store.database import Database
from ctp_node.store.models import ConsoleAction, utcnow


@dataclass(frozen=True)
class ConsoleActionRecord:
    """One console action as recorded (:class:`ctp_node.store.models.ConsoleAction`)."""

    action: str
    user: str
    address: str
    series_instance_uid: str = ""
    job_id: int | None = None
    outcome: str = "done"
    detail: str = ""
    at: dt.datetime | None = None  # naive UTC; None: now, when recorded
    id: int | None = None


def record_console_action(db: Database, record: ConsoleActionRecord) -> int:
    """Record ``record`` (texts cut to their column and stripped of control characters: a
    name typed at the sign-in form is whatever was typed); returns its id."""
    with db.session() as s:
        row = ConsoleAction(
            at=record.at or utcnow(),
            user=_clean(record.user, 64),
            address=_clean(record.address, 64),
            action=record.action,
            series_instance_uid=_clean(record.series_instance_uid, 64),
            job_id=record.job_id,
            outcome=_clean(record.outcome, 16),
            detail=_clean(record.detail, 4000),
        )
        s.add(row)
        s.flush()
        return row.id


def list_console_actions(
    db: Database,
    *,
    latest: int | None = 500,
    since: dt.datetime | None = None,
    series_instance_uid: str | None = None,
    refused: bool = False,
) -> list[ConsoleActionRecord]:
    """Console actions, newest first.

    Parameters
    ----------
    latest : only the last ``latest`` of them (None: every one).
    since : only those at or after this time (naive UTC).
    series_instance_uid : only those on this series.
    refused : only those refused (failed sign-ins, refused requests and actions).
    """
    chosen = select(ConsoleAction)
    if since is not None:
        chosen = chosen.where(ConsoleAction.at >= since)
    if series_instance_uid is not None:
        chosen = chosen.where(ConsoleAction.series_instance_uid == series_instance_uid)
    if refused:
        chosen = chosen.where(ConsoleAction.outcome == "refused")
    chosen = chosen.order_by(ConsoleAction.id.desc()).limit(latest)
    with db.session() as s:
        return [
            ConsoleActionRecord(
                action=row.action,
                user=row.user,
                address=row.address,
                series_instance_uid=row.series_instance_uid,
                job_id=row.job_id,
                outcome=row.outcome,
                detail=row.detail,
                at=row.at,
                id=row.id,
            )
            for row in s.scalars(chosen)
        ]
