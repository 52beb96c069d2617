"""The job queue: enqueue (see :func:`ctp_node.store.ingest.decide_series`), claim with a
lease, heartbeat, finish with the result's version and its exports, fail or retry.

On PostgreSQL a claim is ``SELECT … FOR UPDATE SKIP LOCKED``, so any number of workers on any
number of machines share the queue; on SQLite the transaction takes the write lock at BEGIN.

A series has at most one live job: a new job (more images arrived, an operator asked for a
reprocessing) supersedes the queued, running and failed-without-notice jobs of its series, and
a superseded job's worker finds at the end that its result is not wanted. Hence versions of a
series' result are reported in the order their jobs were created, and a version's exports are
never sent after its successor's.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from ctp_node.store.database import Database
from ctp_node.store.models import Export, ExportState, Job, JobState, utcnow
from ctp_node.store.notifications import PendingNotification, add_notifications
from ctp_node.store.outbox import OutputObject, add_exports


@dataclass(frozen=True)
class VersionRecord:
    """What a job reports about the version of the result it produced.

    Attributes
    ----------
    content_digest : SHA-256 of its inputs (instances, AIF/VOF choice, engine and settings).
    input_instances : how many instances it was computed from.
    version : its number within the series (1, 2, …).
    version_key : what its output UIDs derive from.
    predecessor_job_id : the job whose result it supersedes, None for version 1.
    reason : why it is a new version ("" for version 1).
    """

    content_digest: str
    input_instances: int
    version: int
    version_key: str
    predecessor_job_id: int | None = None
    reason: str = ""


def claim_job(db: Database, worker_id: str, lease_s: float, max_attempts: int) -> Job | None:
    """Claim the oldest due queued job, or a running one whose worker's lease has expired.

    A job whose lease expired after ``max_attempts`` claims is failed instead of claimed again
    (it crashed its workers that often). Returns the claimed job (detached) or None.
    """
    now = utcnow()
    with db.session() as s:
        query = (
            select(Job)
            .where(
                or_(
                    (Job.state == JobState.QUEUED)
                    & (Job.next_attempt_at.is_(None) | (Job.next_attempt_at <= now)),
                    (Job.state == JobState.RUNNING) & (Job.lease_expires_at < now),
                )
            )
            .order_by(Job.id)
            .limit(1)
        )
        if not db.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        while (job := s.scalar(query)) is not None:
            if job.attempts >= max_attempts:
                _give_up(job, now, "the last worker stopped without finishing")
                s.flush()
                continue
            job.state = JobState.RUNNING
            job.attempts += 1
            job.worker_id = worker_id
            job.started_at = now
            job.lease_expires_at = now + dt.timedelta(seconds=lease_s)
            return job
        return None


def _give_up(job: Job, now: dt.datetime, why: str) -> None:
    job.state = JobState.FAILED
    job.finished_at = now
    job.lease_expires_at = None
    job.error = f"gave up after {job.attempts} attempts; {why} ({job.error or 'no error recorded'})"


def heartbeat(db: Database, job_id: int, worker_id: str, lease_s: float) -> bool:
    """Extend the lease; False when the job is no longer this worker's (e.g. superseded)."""
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None or job.state != JobState.RUNNING or job.worker_id != worker_id:
            return False
        job.lease_expires_at = utcnow() + dt.timedelta(seconds=lease_s)
        return True


def release_worker_jobs(db: Database, worker_id: str, why: str, max_attempts: int) -> list[int]:
    """Give back at once the running jobs of a worker that is known to be dead (its supervisor
    saw it exit), instead of waiting for their leases to expire. The attempt it died in counts:
    a job that has killed ``max_attempts`` workers fails. Returns the released jobs' ids."""
    now = utcnow()
    released = []
    with db.session() as s:
        jobs = s.scalars(
            select(Job).where(Job.state == JobState.RUNNING, Job.worker_id == worker_id)
        ).all()
        for job in jobs:
            job.error = f"{why} during attempt {job.attempts}"
            if job.attempts >= max_attempts:
                _give_up(job, now, "its workers died")
            else:
                job.state = JobState.QUEUED
                job.lease_expires_at = None
            released.append(job.id)
    return released


def running_worker_ids(db: Database) -> list[str]:
    """The workers that hold running jobs."""
    with db.session() as s:
        return list(
            s.scalars(select(Job.worker_id).where(Job.state == JobState.RUNNING).distinct())
        )


def finish_job(
    db: Database,
    job_id: int,
    *,
    worker_id: str,
    result_dir: str,
    summary: dict[str, Any],
    version: VersionRecord,
    exports: Iterable[tuple[str, OutputObject]],
    notifications: Iterable[PendingNotification] = (),
) -> bool:
    """Record a job's result, its version, its exports and its notifications in one
    transaction, and cancel the exports of the series' earlier versions that are not sent yet.

    Returns False (and changes nothing) when the job is no longer this worker's: a newer job of
    the series superseded it, or its lease was taken over; its outputs must not be sent.
    """
    now = utcnow()
    with db.session() as s:
        job = _owned(s, job_id, worker_id, JobState.RUNNING)
        if job is None:
            return False
        job.state = JobState.DONE
        job.finished_at = now
        job.lease_expires_at = None
        job.result_dir = result_dir
        job.summary_json = json.dumps(summary)
        job.error = ""
        _record_version(s, job, version, exports, now)
        add_notifications(s, job.id, notifications, now)
        return True


def _owned(s: Session, job_id: int, worker_id: str, state: str) -> Job | None:
    job = s.get(Job, job_id, with_for_update=True)
    if job is None or job.state != state or job.worker_id != worker_id:
        return None
    return job


def _record_version(
    s: Session,
    job: Job,
    version: VersionRecord,
    exports: Iterable[tuple[str, OutputObject]],
    now: dt.datetime,
) -> None:
    job.content_digest = version.content_digest
    job.input_instances = version.input_instances
    job.version = version.version
    job.version_key = version.version_key
    job.predecessor_job_id = version.predecessor_job_id
    job.version_reason = version.reason
    earlier = select(Job.id).where(
        Job.series_instance_uid == job.series_instance_uid, Job.id != job.id
    )
    s.execute(
        update(Export)
        .where(
            Export.job_id.in_(earlier),
            Export.state.in_([ExportState.PENDING, ExportState.FAILED]),
        )
        .values(
            state=ExportState.CANCELLED,
            last_error=f"superseded by version {version.version} (job {job.id})",
        )
        .execution_options(synchronize_session=False)
    )
    add_exports(s, job.id, exports, now)


def fail_job(
    db: Database,
    job_id: int,
    error: str,
    *,
    retry: bool,
    max_attempts: int,
    worker_id: str | None = None,
    notice_reason: str = "",
) -> bool:
    """Record a failure: final (the data cannot give maps; a failure notice follows, see
    :func:`failed_jobs_without_notice`) or retried (an unexpected error), up to
    ``max_attempts``. With ``worker_id``, only if the job is still that worker's.
    ``notice_reason`` is what the failure notice will tell PACS users (kept with the job).
    Returns whether the job was changed."""
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None or (worker_id is not None and job.worker_id != worker_id):
            return False
        if job.state != JobState.RUNNING and worker_id is not None:
            return False
        job.error = error
        job.lease_expires_at = None
        if notice_reason:
            job.summary_json = json.dumps({"notice_reason": notice_reason})
        if retry and job.attempts < max_attempts:
            job.state = JobState.QUEUED
        else:
            job.state = JobState.FAILED
            job.finished_at = utcnow()
        return True


def retry_later(db: Database, job_id: int, worker_id: str, error: str, *, delay_s: float) -> bool:
    """Put a job back in the queue after a transient failure (disk full, database locked):
    it is tried again in ``delay_s`` seconds, and the attempt does not count against
    ``worker.max_attempts``. Returns whether the job was still this worker's."""
    with db.session() as s:
        job = _owned(s, job_id, worker_id, JobState.RUNNING)
        if job is None:
            return False
        job.state = JobState.QUEUED
        job.attempts -= 1
        job.retries += 1
        job.error = error
        job.lease_expires_at = None
        job.next_attempt_at = utcnow() + dt.timedelta(seconds=delay_s)
        return True


def enqueue_reprocessing(
    db: Database,
    series_instance_uid: str,
    aif_zyx: str = "",
    vof_zyx: str = "",
    *,
    region: str = "",
    requested_by: str = "operator",
) -> int:
    """Queue a series again, e.g. with a person's AIF/VOF locations ("Z,Y,X": slice, row,
    column, 0-based, or "") or region ("Z,Y,X,R", or ""); the job supersedes the series'
    unfinished ones."""
    with db.session() as s:
        return add_job(
            s,
            series_instance_uid,
            aif_zyx=aif_zyx,
            vof_zyx=vof_zyx,
            region=region,
            by=requested_by,
        )


def add_job(
    s: Session,
    series_instance_uid: str,
    *,
    aif_zyx: str = "",
    vof_zyx: str = "",
    region: str = "",
    by: str,
) -> int:
    """Add a queued job for a series in the caller's transaction, superseding its unfinished
    jobs (queued, running, or failed with no failure notice written yet)."""
    now = utcnow()
    s.execute(
        update(Job)
        .where(
            Job.series_instance_uid == series_instance_uid,
            or_(
                Job.state.in_([JobState.QUEUED, JobState.RUNNING]),
                and_(Job.state == JobState.FAILED, Job.result_dir == ""),
            ),
        )
        .values(state=JobState.SUPERSEDED, finished_at=now, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    job = Job(
        series_instance_uid=series_instance_uid,
        state=JobState.QUEUED,
        created_at=now,
        aif_zyx=aif_zyx,
        vof_zyx=vof_zyx,
        region=region,
        requested_by=by,
    )
    s.add(job)
    s.flush()
    return job.id


def failed_jobs_without_notice(db: Database, now: dt.datetime | None = None) -> list[Job]:
    """Jobs that failed for good and whose failure PACS has not been told of yet, and that no
    worker is writing the notice of right now (or whose writer's lease expired)."""
    now = now or utcnow()
    with db.session() as s:
        return list(
            s.scalars(
                select(Job)
                .where(
                    Job.state == JobState.FAILED,
                    Job.result_dir == "",
                    Job.next_attempt_at.is_(None) | (Job.next_attempt_at <= now),
                    Job.lease_expires_at.is_(None) | (Job.lease_expires_at < now),
                )
                .order_by(Job.id)
            )
        )


def claim_notice(db: Database, job_id: int, worker_id: str, lease_s: float) -> bool:
    """Take the writing of a failed job's notice, under a lease (whichever worker asks first;
    another takes over if this one dies before :func:`record_notice`)."""
    now = utcnow()
    with db.engine.begin() as connection:
        taken = connection.execute(
            update(Job)
            .where(
                Job.id == job_id,
                Job.state == JobState.FAILED,
                Job.result_dir == "",
                Job.lease_expires_at.is_(None) | (Job.lease_expires_at < now),
            )
            .values(worker_id=worker_id, lease_expires_at=now + dt.timedelta(seconds=lease_s))
        )
        return taken.rowcount == 1


def record_notice(
    db: Database,
    job_id: int,
    *,
    worker_id: str,
    result_dir: str,
    version: VersionRecord,
    exports: Iterable[tuple[str, OutputObject]],
    notifications: Iterable[PendingNotification] = (),
) -> bool:
    """Record a written failure notice as the job's result version, with its exports and
    notifications (one transaction). False when the claim was lost (the job was superseded
    meanwhile)."""
    now = utcnow()
    with db.session() as s:
        job = _owned(s, job_id, worker_id, JobState.FAILED)
        if job is None or job.result_dir:
            return False
        job.result_dir = result_dir
        job.lease_expires_at = None
        job.next_attempt_at = None
        _record_version(s, job, version, exports, now)
        add_notifications(s, job.id, notifications, now)
        return True


def notice_failed(db: Database, job_id: int, error: str, *, delay_s: float) -> None:
    """Writing a failure notice failed (e.g. the disk is full): release the claim and try
    again in ``delay_s`` seconds."""
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            return
        job.lease_expires_at = None
        job.retries += 1
        job.next_attempt_at = utcnow() + dt.timedelta(seconds=delay_s)
        job.error = f"{job.error.split(' [notice:')[0]} [notice: {error}]"


def latest_reported_job(
    db: Database, series_instance_uid: str, *, before_job_id: int | None = None
) -> Job | None:
    """The series' most recent reported result (done, or failed with a notice written): what
    a new result of the series supersedes. ``before_job_id`` leaves out that job."""
    with db.session() as s:
        query = select(Job).where(
            Job.series_instance_uid == series_instance_uid,
            Job.version > 0,
            Job.state.in_([JobState.DONE, JobState.FAILED]),
        )
        if before_job_id is not None:
            query = query.where(Job.id != before_job_id)
        return s.scalar(query.order_by(Job.version.desc(), Job.id.desc()).limit(1))


def get_job(db: Database, job_id: int) -> Job | None:
    with db.session() as s:
        return s.get(Job, job_id)


def list_jobs(db: Database) -> list[Job]:
    with db.session() as s:
        return list(s.scalars(select(Job).order_by(Job.id)))
