"""The notifications outbox: each event (a result, a failure) to each channel (a webhook, the
e-mail), durable until delivered or given up, so that a restart loses none."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ctp_node.store.database import Database
from ctp_node.store.models import Job, Notification, NotificationState, Series, utcnow
from ctp_node.store.retries import count_failed_attempt


@dataclass(frozen=True)
class PendingNotification:
    """An event to tell a channel: ``channel`` ("webhook:<name>" or "email"), ``event`` (a
    :class:`~ctp_node.store.models.NotificationEvent`), the failure's reason (``detail``, no
    patient data) and, for an export that gave up, its ``destination``."""

    channel: str
    event: str
    detail: str = ""
    destination: str = ""


@dataclass(frozen=True)
class DueNotification:
    """A notification due now, with what its message says about its job and series."""

    id: int
    channel: str
    event: str
    detail: str
    destination: str
    attempts: int
    job_id: int
    job_state: str
    version: int
    summary_json: str
    study_instance_uid: str
    series_instance_uid: str
    accession_number: str


def add_notifications(
    s: Session, job_id: int, notifications: Iterable[PendingNotification], now: dt.datetime
) -> int:
    """Queue notifications of a job in the caller's transaction; one already pending for the
    same job, event, channel and destination is not queued twice. Returns how many."""
    count = 0
    for n in notifications:
        already = s.scalar(
            select(Notification.id).where(
                Notification.job_id == job_id,
                Notification.event == n.event,
                Notification.channel == n.channel,
                Notification.destination == n.destination,
                Notification.state == NotificationState.PENDING,
            )
        )
        if already is not None:
            continue
        s.add(
            Notification(
                job_id=job_id,
                event=n.event,
                channel=n.channel,
                destination=n.destination,
                detail=n.detail,
                state=NotificationState.PENDING,
                created_at=now,
                next_attempt_at=now,
            )
        )
        s.flush()  # seen by the next look for a duplicate
        count += 1
    return count


def enqueue_notifications(
    db: Database, job_id: int, notifications: Iterable[PendingNotification]
) -> int:
    """:func:`add_notifications` in a transaction of its own."""
    with db.session() as s:
        return add_notifications(s, job_id, notifications, utcnow())


def due_notifications(
    db: Database, now: dt.datetime | None = None, limit: int = 100
) -> list[DueNotification]:
    """Pending notifications whose next attempt is due, oldest first, with their job's facts."""
    query = (
        select(Notification, Job, Series)
        .join(Job, Job.id == Notification.job_id)
        .join(Series, Series.series_instance_uid == Job.series_instance_uid)
        .where(
            Notification.state == NotificationState.PENDING,
            Notification.next_attempt_at <= (now or utcnow()),
        )
        .order_by(Notification.id)
        .limit(limit)
    )
    with db.session() as s:
        return [
            DueNotification(
                id=n.id,
                channel=n.channel,
                event=n.event,
                detail=n.detail,
                destination=n.destination,
                attempts=n.attempts,
                job_id=job.id,
                job_state=job.state,
                version=job.version,
                summary_json=job.summary_json,
                study_instance_uid=series.study_instance_uid,
                series_instance_uid=series.series_instance_uid,
                accession_number=series.accession_number,
            )
            for n, job, series in s.execute(query)
        ]


def mark_notification_sent(db: Database, notification_id: int) -> None:
    with db.session() as s:
        n = s.get(Notification, notification_id)
        if n is not None:
            n.state = NotificationState.SENT
            n.sent_at = utcnow()
            n.attempts += 1
            n.last_error = ""


def mark_notification_failed(
    db: Database,
    notification_id: int,
    error: str,
    *,
    max_attempts: int,
    backoff_s: float,
    backoff_max_s: float,
    final: bool = False,
) -> bool:
    """Count a failed attempt (retried with the outbox's backoff); True when it gave up."""
    with db.session() as s:
        n = s.get(Notification, notification_id)
        if n is None:
            return False
        gave_up = count_failed_attempt(
            n,
            error,
            utcnow(),
            max_attempts=max_attempts,
            backoff_s=backoff_s,
            backoff_max_s=backoff_max_s,
            final=final,
        )
        if gave_up:
            n.state = NotificationState.FAILED
        return gave_up


def retry_failed_notifications(db: Database) -> int:
    """Give notifications that gave up a new set of attempts, due now (at start-up: the
    receiver or the configuration may have been mended). Returns how many."""
    with db.session() as s:
        result = s.execute(
            update(Notification)
            .where(Notification.state == NotificationState.FAILED)
            .values(state=NotificationState.PENDING, attempts=0, next_attempt_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)


def list_notifications(db: Database, state: str | None = None) -> list[Notification]:
    """Every notification (or those in ``state``), oldest first."""
    query = select(Notification).order_by(Notification.id)
    if state is not None:
        query = query.where(Notification.state == state)
    with db.session() as s:
        return list(s.scalars(query))
