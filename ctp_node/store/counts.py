"""What the HTTP face reads (:mod:`ctp_node.http`): a reachability probe, and the node's
counts by state for ``/metrics``. Each is one short read transaction."""

from __future__ import annotations

import datetime as dt
import json
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
    job_durations_s : seconds from the last claim to the end of each *done* job.
    stage_timings_s : seconds by stage (``load``, ``compute``, ``total``, as the pipeline
        records them in each *done* job's summary).
    """

    received_instances: dict[str, int] = field(default_factory=dict)
    rejections: dict[tuple[str, int], int] = field(default_factory=dict)
    series: dict[str, int] = field(default_factory=dict)
    jobs: dict[str, int] = field(default_factory=dict)
    exports: dict[tuple[str, str], int] = field(default_factory=dict)
    jobs_due: int = 0
    exports_due: int = 0
    job_durations_s: list[float] = field(default_factory=list)
    stage_timings_s: dict[str, list[float]] = field(default_factory=dict)


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
        done = s.execute(
            select(Job.started_at, Job.finished_at, Job.summary_json).where(
                Job.state == JobState.DONE
            )
        ).all()
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
        job_durations_s=[
            (finished - started).total_seconds()
            for started, finished, _ in done
            if started is not None and finished is not None
        ],
        stage_timings_s=_stage_timings([summary for *_, summary in done]),
    )


def _stage_timings(summaries: list[str]) -> dict[str, list[float]]:
    """The ``timing_s`` of each job summary (JSON), by stage; a summary without it is skipped."""
    timings: dict[str, list[float]] = {}
    for summary in summaries:
        try:
            stages = json.loads(summary).get("timing_s") or {}
        except (ValueError, AttributeError):
            continue
        for stage, seconds in stages.items():
            if isinstance(seconds, (int, float)):
                timings.setdefault(stage, []).append(float(seconds))
    return timings


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
