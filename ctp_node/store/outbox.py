"""The outbox: every output object to every destination, retried with backoff."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ctp_node.store.database import Database
from ctp_node.store.models import Export, ExportState, NotificationEvent, utcnow
from ctp_node.store.notifications import PendingNotification, add_notifications
from ctp_node.store.retries import count_failed_attempt


@dataclass(frozen=True)
class OutputObject:
    """One written output object: its SOP Instance UID, kind and path below storage.root."""

    sop_instance_uid: str
    output_kind: str  # "parametric_maps" | "secondary_captures" | "structured_report"
    path: str


def enqueue_exports(
    db: Database, job_id: int, destination_outputs: Iterable[tuple[str, OutputObject]]
) -> int:
    """Add one pending export per (destination name, output); returns how many."""
    with db.session() as s:
        return add_exports(s, job_id, destination_outputs, utcnow())


def add_exports(
    s: Session,
    job_id: int,
    destination_outputs: Iterable[tuple[str, OutputObject]],
    now: dt.datetime,
) -> int:
    """:func:`enqueue_exports` in the caller's transaction."""
    count = 0
    for destination, output in destination_outputs:
        s.add(
            Export(
                job_id=job_id,
                destination=destination,
                sop_instance_uid=output.sop_instance_uid,
                output_kind=output.output_kind,
                path=output.path,
                state=ExportState.PENDING,
                next_attempt_at=now,
            )
        )
        count += 1
    return count


def due_exports(db: Database, now: dt.datetime | None = None, limit: int = 500) -> list[Export]:
    """Pending exports whose next attempt is due, oldest first."""
    with db.session() as s:
        return list(
            s.scalars(
                select(Export)
                .where(
                    Export.state == ExportState.PENDING,
                    Export.next_attempt_at <= (now or utcnow()),
                )
                .order_by(Export.id)
                .limit(limit)
            )
        )


def mark_sent(db: Database, export_ids: Iterable[int]) -> None:
    now = utcnow()
    with db.session() as s:
        for export_id in export_ids:
            export = s.get(Export, export_id)
            if export is not None:
                export.state = ExportState.SENT
                export.sent_at = now
                export.attempts += 1
                export.last_error = ""


def mark_attempt_failed(
    db: Database,
    export_ids: Iterable[int],
    error: str,
    *,
    max_attempts: int,
    backoff_s: float,
    backoff_max_s: float,
    final: bool = False,
    notify: Sequence[str] = (),
) -> None:
    """Count a failed attempt; retry after an exponential backoff, or give up for good. An
    export that gives up queues an ``export_failed`` notification to each channel of
    ``notify`` (one per job and destination)."""
    now = utcnow()
    with db.session() as s:
        for export_id in export_ids:
            export = s.get(Export, export_id)
            if export is None:
                continue
            gave_up = count_failed_attempt(
                export,
                error,
                now,
                max_attempts=max_attempts,
                backoff_s=backoff_s,
                backoff_max_s=backoff_max_s,
                final=final,
            )
            if gave_up:
                export.state = ExportState.FAILED
                add_notifications(
                    s,
                    export.job_id,
                    [
                        PendingNotification(
                            channel, NotificationEvent.EXPORT_FAILED, error, export.destination
                        )
                        for channel in notify
                    ],
                    now,
                )


def retry_failed_exports(
    db: Database, *, job_ids: Iterable[int] | None = None, destination: str | None = None
) -> int:
    """Give exports that ran out of attempts a new set of attempts, due now (at start-up, and
    by ``ctp-node resend``); cancelled exports (superseded versions) stay cancelled. Returns
    how many."""
    query = update(Export).where(Export.state == ExportState.FAILED)
    if job_ids is not None:
        query = query.where(Export.job_id.in_(list(job_ids)))
    if destination is not None:
        query = query.where(Export.destination == destination)
    with db.session() as s:
        result = s.execute(
            query.values(
                state=ExportState.PENDING, attempts=0, next_attempt_at=utcnow()
            ).execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)


def send_again(db: Database, job_id: int, destinations: Iterable[str]) -> int:
    """Queue every output of a job again to the given destinations: an export that gave up
    gets new attempts, one already sent (or cancelled) gets a new pending copy; one still
    pending is left alone. Returns how many exports are now pending because of this call."""
    wanted = set(destinations)
    now = utcnow()
    queued = 0
    with db.session() as s:
        exports = s.scalars(select(Export).where(Export.job_id == job_id).order_by(Export.id)).all()
        pending = {
            (e.destination, e.sop_instance_uid) for e in exports if e.state == ExportState.PENDING
        }
        for export in exports:
            key = (export.destination, export.sop_instance_uid)
            if export.destination not in wanted or key in pending:
                continue
            pending.add(key)
            queued += 1
            if export.state == ExportState.FAILED:
                export.state = ExportState.PENDING
                export.attempts = 0
                export.next_attempt_at = now
                continue
            output = OutputObject(export.sop_instance_uid, export.output_kind, export.path)
            add_exports(s, job_id, [(export.destination, output)], now)
    return queued


def list_exports(db: Database, job_id: int | None = None) -> list[Export]:
    with db.session() as s:
        query = select(Export).order_by(Export.id)
        if job_id is not None:
            query = query.where(Export.job_id == job_id)
        return list(s.scalars(query))
