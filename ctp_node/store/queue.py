"""The job queue: enqueue (see :func:`ctp_node.store.ingest.decide_series`), claim with a
lease, heartbeat, finish, fail or retry.

On PostgreSQL a claim is ``SELECT … FOR UPDATE SKIP LOCKED``, so any number of workers on any
number of machines share the queue; on SQLite the transaction takes the write lock at BEGIN.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import or_, select, update

from ctp_node.store.database import Database
from ctp_node.store.models import Job, JobState, utcnow


def claim_job(db: Database, worker_id: str, lease_s: float, max_attempts: int) -> Job | None:
    """Claim the oldest queued job, or a running one whose worker's lease has expired.

    A job whose lease expired after ``max_attempts`` claims is failed instead of claimed again
    (it crashed its workers that often). Returns the claimed job (detached) or None.
    """
    now = utcnow()
    with db.session() as s:
        query = (
            select(Job)
            .where(
                or_(
                    Job.state == JobState.QUEUED,
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
                job.state = JobState.FAILED
                job.finished_at = now
                job.error = (
                    f"gave up after {job.attempts} attempts; the last worker stopped "
                    f"without finishing ({job.error or 'no error recorded'})"
                )
                s.flush()
                continue
            job.state = JobState.RUNNING
            job.attempts += 1
            job.worker_id = worker_id
            job.started_at = now
            job.lease_expires_at = now + dt.timedelta(seconds=lease_s)
            return job
        return None


def heartbeat(db: Database, job_id: int, worker_id: str, lease_s: float) -> bool:
    """Extend the lease; False when the job is no longer this worker's."""
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None or job.state != JobState.RUNNING or job.worker_id != worker_id:
            return False
        job.lease_expires_at = utcnow() + dt.timedelta(seconds=lease_s)
        return True


def finish_job(db: Database, job_id: int, *, result_dir: str, summary: dict[str, Any]) -> None:
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            return
        job.state = JobState.DONE
        job.finished_at = utcnow()
        job.lease_expires_at = None
        job.result_dir = result_dir
        job.summary_json = json.dumps(summary)
        job.error = ""


def fail_job(
    db: Database,
    job_id: int,
    error: str,
    *,
    retry: bool,
    max_attempts: int,
    result_dir: str = "",
) -> None:
    """Record a failure: final (the data cannot give maps) or retried (an unexpected error).

    ``result_dir`` is where a failure notice for PACS was written, if one was.
    """
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            return
        job.error = error
        if result_dir:
            job.result_dir = result_dir
        job.lease_expires_at = None
        if retry and job.attempts < max_attempts:
            job.state = JobState.QUEUED
        else:
            job.state = JobState.FAILED
            job.finished_at = utcnow()


def enqueue_reprocessing(db: Database, series_instance_uid: str, aif_zyx: str, vof_zyx: str) -> int:
    """Queue a series again, e.g. with a person's AIF/VOF locations ("Z,Y,X" or "")."""
    with db.session() as s:
        job = Job(
            series_instance_uid=series_instance_uid,
            state=JobState.QUEUED,
            created_at=utcnow(),
            aif_zyx=aif_zyx,
            vof_zyx=vof_zyx,
        )
        s.add(job)
        s.flush()
        return job.id


def failed_jobs_without_notice(db: Database) -> list[Job]:
    """Jobs that failed for good (e.g. after repeated crashes) and whose failure PACS has not
    been told of yet."""
    with db.session() as s:
        return list(
            s.scalars(
                select(Job)
                .where(Job.state == JobState.FAILED, Job.result_dir == "")
                .order_by(Job.id)
            )
        )


def claim_notice(db: Database, job_id: int, result_dir: str) -> bool:
    """Take the writing of a failed job's notice (once, whichever worker asks first)."""
    with db.engine.begin() as connection:
        taken = connection.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.FAILED, Job.result_dir == "")
            .values(result_dir=result_dir)
        )
        return taken.rowcount == 1


def get_job(db: Database, job_id: int) -> Job | None:
    with db.session() as s:
        return s.get(Job, job_id)


def list_jobs(db: Database) -> list[Job]:
    with db.session() as s:
        return list(s.scalars(select(Job).order_by(Job.id)))
