"""What the HTTP face reads (:mod:`ctp_node.http`): a reachability probe, the node's counts
by state for ``/metrics``, done jobs' timings, and running jobs whose worker is gone. Each
is one short transaction."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Collection
from dataclasses import dataclass, field

from sqlalchemy import func, select, text

from ctp_node.store.database import Database
from ctp_node.store.models import (
    AuditAssociation,
    AuditDirection,
    Export,
    ExportState,
    Job,
    JobState,
    Rejection,
    Series,
    utcnow,
)


def ping(db: Database) -> None:
    """``SELECT 1``; raises the driver's error when the database cannot be reached."""
    with db.session() as s:
        s.execute(text("SELECT 1"))


@dataclass(frozen=True)
class NodeCounts:
    """The node's work by state, as ``/metrics`` shows it.

    Attributes
    ----------
    received_instances : instances received by outcome (``stored``, ``duplicate``,
        ``refused``), summed over the audit trail's ended associations (kept for good, so the
        sums only grow).
    rejections : refusals by ``(kind, status)``: ``kind`` is ``c-store``, ``association``,
        ``context`` or ``tls``; ``status`` is the DICOM status of a refused C-STORE, 0 (-1 in
        old records) otherwise.
    series : series by state.
    jobs : jobs by state.
    exports : exports by ``(destination, state)``.
    jobs_due : queued jobs whose next attempt is due now (the work queue's depth).
    exports_due : pending exports whose next attempt is due now (the outbox's depth).
    """

    received_instances: dict[str, int] = field(default_factory=dict)
    rejections: dict[tuple[str, int], int] = field(default_factory=dict)
    series: dict[str, int] = field(default_factory=dict)
    jobs: dict[str, int] = field(default_factory=dict)
    exports: dict[tuple[str, str], int] = field(default_factory=dict)
    jobs_due: int = 0
    exports_due: int = 0


def node_counts(db: Database, now: dt.datetime | None = None) -> NodeCounts:
    """Every count of :class:`NodeCounts`, read in one transaction."""
    now = now or utcnow()
    with db.session() as s:
        audit = s.execute(
            select(
                func.coalesce(func.sum(AuditAssociation.stored), 0),
                func.coalesce(func.sum(AuditAssociation.duplicate), 0),
                func.coalesce(func.sum(AuditAssociation.refused), 0),
            ).where(AuditAssociation.direction == AuditDirection.RECEIVED)
        ).one()
        rejections = s.execute(
            select(Rejection.kind, Rejection.status, func.count()).group_by(
                Rejection.kind, Rejection.status
            )
        ).all()
        series = s.execute(select(Series.state, func.count()).group_by(Series.state)).all()
        jobs = s.execute(select(Job.state, func.count()).group_by(Job.state)).all()
        exports = s.execute(
            select(Export.destination, Export.state, func.count()).group_by(
                Export.destination, Export.state
            )
        ).all()
        jobs_due = s.scalar(
            select(func.count()).where(
                Job.state == JobState.QUEUED,
                Job.next_attempt_at.is_(None) | (Job.next_attempt_at <= now),
            )
        )
        exports_due = s.scalar(
            select(func.count()).where(
                Export.state == ExportState.PENDING, Export.next_attempt_at <= now
            )
        )
    return NodeCounts(
        received_instances=dict(
            zip(("stored", "duplicate", "refused"), map(int, audit), strict=True)
        ),
        rejections={(kind, status): n for kind, status, n in rejections},
        series=dict(series),  # type: ignore[arg-type]
        jobs=dict(jobs),  # type: ignore[arg-type]
        exports={(destination, state): n for destination, state, n in exports},
        jobs_due=int(jobs_due or 0),
        exports_due=int(exports_due or 0),
    )


@dataclass(frozen=True)
class DoneJobTimes:
    """How long a *done* job took.

    Attributes
    ----------
    duration_s : seconds from its last claim to its end (None if either is missing).
    stages_s : seconds by stage, as the pipeline recorded them in the job's summary
        (``timing_s``: ``load``, ``compute``, ``total``); empty if it recorded none.
    """

    duration_s: float | None
    stages_s: dict[str, float]


def done_job_ids(db: Database) -> set[int]:
    """The ids of the *done* jobs (a done job never changes again)."""
    with db.session() as s:
        return set(s.scalars(select(Job.id).where(Job.state == JobState.DONE)))


def done_job_times(db: Database, job_ids: Collection[int]) -> dict[int, DoneJobTimes]:
    """:class:`DoneJobTimes` of these jobs (each summary is some 10 kB of JSON: read the ones
    a caller does not know yet, not all of them every time)."""
    times = {}
    ordered = sorted(job_ids)
    with db.session() as s:
        for start in range(0, len(ordered), 500):  # IN (...) within SQLite's parameter limit
            rows = s.execute(
                select(Job.id, Job.started_at, Job.finished_at, Job.summary_json).where(
                    Job.id.in_(ordered[start : start + 500]), Job.state == JobState.DONE
                )
            )
            for job_id, started, finished, summary in rows:
                duration = (finished - started).total_seconds() if started and finished else None
                times[job_id] = DoneJobTimes(duration, _stage_timings(summary))
    return times


def _stage_timings(summary: str) -> dict[str, float]:
    """The ``timing_s`` of a job summary (JSON); empty when it has none."""
    try:
        stages = json.loads(summary).get("timing_s") or {}
    except (ValueError, AttributeError):
        return {}
    return {
        stage: float(seconds)
        for stage, seconds in stages.items()
        if isinstance(seconds, (int, float))
    }


def stale_running_jobs(db: Database, older_than_s: float, now: dt.datetime | None = None) -> int:
    """Running jobs whose lease expired more than ``older_than_s`` seconds ago: their worker
    is gone and no other worker has taken them over."""
    cutoff = (now or utcnow()) - dt.timedelta(seconds=older_than_s)
    with db.session() as s:
        return int(
            s.scalar(
                select(func.count()).where(
                    Job.state == JobState.RUNNING, Job.lease_expires_at < cutoff
                )
            )
            or 0
        )
