"""What retention needs to know of the database, and the records it changes when files go.

The rules (what may be deleted, and when) live in :mod:`ctp_node.retention`; this module only
reads the facts those rules are applied to and, after files were deleted, brings the records
in line. Every change re-checks its condition in the same transaction, so that a record that
changed since the plan was made (an instance arrived, a job was queued) is left alone.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from ctp_node.store.database import Database
from ctp_node.store.models import (
    Export,
    ExportState,
    Instance,
    Job,
    OtherObject,
    Rejection,
    Series,
)

_EXPORT_STATES = frozenset(state.value for state in ExportState)


@dataclass(frozen=True)
class ExportTally:
    """How a job's exports stand: a count per state and the time of the last one sent."""

    pending: int = 0
    sent: int = 0
    failed: int = 0
    cancelled: int = 0
    other: int = 0  # in a state this release does not know; counts as unsettled
    last_sent_at: dt.datetime | None = None


@dataclass(frozen=True)
class JobRecord:
    id: int
    series_instance_uid: str
    state: str
    result_dir: str  # "" until a result or a failure notice was written
    created_at: dt.datetime
    finished_at: dt.datetime | None
    exports: ExportTally


@dataclass(frozen=True)
class SeriesRecord:
    """A series that still has received instances on record, with all its jobs."""

    series_instance_uid: str
    study_instance_uid: str
    state: str
    decided_at: dt.datetime | None
    last_received_at: dt.datetime
    instances: int  # Instance rows (the records of files in the spool)
    jobs: tuple[JobRecord, ...]


@dataclass(frozen=True)
class KeptOtherObject:
    """A non-CT object whose bytes were kept (``path`` is not "")."""

    id: int
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    path: str
    received_at: dt.datetime


def series_with_instances(db: Database) -> list[SeriesRecord]:
    """Every series that has instances on record, oldest activity first."""
    with db.session() as s:
        return _series_records(s, None)


def series_record(db: Database, series_instance_uid: str) -> SeriesRecord | None:
    """One series as :func:`series_with_instances` gives it; None without instances."""
    with db.session() as s:
        records = _series_records(s, series_instance_uid)
    return records[0] if records else None


def job_records(db: Database) -> dict[int, JobRecord]:
    """Every job by id."""
    with db.session() as s:
        return {job.id: job for job in _job_records(s, None)}


def kept_other_objects(db: Database) -> list[KeptOtherObject]:
    with db.session() as s:
        rows = s.scalars(select(OtherObject).where(OtherObject.path != "").order_by(OtherObject.id))
        return [
            KeptOtherObject(
                o.id,
                o.sop_instance_uid,
                o.series_instance_uid,
                o.study_instance_uid,
                o.path,
                o.received_at,
            )
            for o in rows
        ]


def quarantine_records(db: Database) -> set[str]:
    """Quarantine paths the rejections point to."""
    with db.session() as s:
        return set(
            s.scalars(select(Rejection.quarantine_path).where(Rejection.quarantine_path != ""))
        )


def recorded_paths(db: Database, paths: Collection[str]) -> set[str]:
    """Those of ``paths`` that an instance or a kept non-CT object is recorded at."""
    found: set[str] = set()
    with db.session() as s:
        for chunk in _chunks(sorted(paths)):
            found.update(s.scalars(select(Instance.path).where(Instance.path.in_(chunk))))
            found.update(s.scalars(select(OtherObject.path).where(OtherObject.path.in_(chunk))))
    return found


def forget_series_instances(
    db: Database,
    series_instance_uid: str,
    *,
    last_received_at: dt.datetime,
    still_due: Callable[[SeriesRecord], bool],
    now: dt.datetime,
) -> bool:
    """Delete a series' Instance rows once its spool files are gone: ``instance_count`` 0,
    ``purged_at`` now; the Series row stays.

    Only if nothing arrived since ``last_received_at`` and ``still_due`` holds for the series
    as it is now, in the same transaction (the row is locked on PostgreSQL; SQLite's write
    lock is taken at BEGIN). Returns whether the records were changed.
    """
    with db.session() as s:
        if not db.is_sqlite:
            s.execute(
                select(Series.series_instance_uid)
                .where(Series.series_instance_uid == series_instance_uid)
                .with_for_update()
            )
        records = _series_records(s, series_instance_uid)
        if (
            not records
            or records[0].last_received_at != last_received_at
            or not still_due(records[0])
        ):
            return False
        s.execute(delete(Instance).where(Instance.series_instance_uid == series_instance_uid))
        s.execute(
            update(Series)
            .where(Series.series_instance_uid == series_instance_uid)
            .values(instance_count=0, purged_at=now)
        )
        return True


def forget_other_objects(db: Database, objects: Iterable[KeptOtherObject]) -> set[int]:
    """Mark kept non-CT objects as no longer kept (``path`` ""), each only if its record is
    still the one planned (same path, same arrival). Returns the ids changed."""
    changed = set()
    with db.session() as s:
        for item in objects:
            result = s.execute(
                update(OtherObject)
                .where(
                    OtherObject.id == item.id,
                    OtherObject.path == item.path,
                    OtherObject.received_at == item.received_at,
                )
                .values(path="")
            )
            if result.rowcount == 1:
                changed.add(item.id)
    return changed


def forget_quarantine_paths(db: Database, paths: Collection[str]) -> int:
    """Clear the quarantine path of the rejections whose quarantined file is gone (the
    rejection itself stays). Returns how many records changed."""
    changed = 0
    with db.session() as s:
        for chunk in _chunks(sorted(paths)):
            changed += s.execute(
                update(Rejection)
                .where(Rejection.quarantine_path.in_(chunk))
                .values(quarantine_path="")
            ).rowcount
    return changed


def _series_records(s: Session, series_instance_uid: str | None) -> list[SeriesRecord]:
    counted = (
        select(Series, func.count(Instance.id))
        .join(Instance, Instance.series_instance_uid == Series.series_instance_uid)
        .group_by(Series.series_instance_uid)
        .order_by(Series.last_received_at)
    )
    if series_instance_uid is not None:
        counted = counted.where(Series.series_instance_uid == series_instance_uid)
    rows = s.execute(counted).all()
    jobs_by_series: dict[str, list[JobRecord]] = defaultdict(list)
    for job in _job_records(s, series_instance_uid):
        jobs_by_series[job.series_instance_uid].append(job)
    return [
        SeriesRecord(
            series_instance_uid=series.series_instance_uid,
            study_instance_uid=series.study_instance_uid,
            state=series.state,
            decided_at=series.decided_at,
            last_received_at=series.last_received_at,
            instances=count,
            jobs=tuple(jobs_by_series[series.series_instance_uid]),
        )
        for series, count in rows
    ]


def _job_records(s: Session, series_instance_uid: str | None) -> list[JobRecord]:
    """Jobs of one series, or every job (None)."""
    jobs = select(Job).order_by(Job.id)
    tallies = select(
        Export.job_id, Export.state, func.count(Export.id), func.max(Export.sent_at)
    ).group_by(Export.job_id, Export.state)
    if series_instance_uid is not None:
        jobs = jobs.where(Job.series_instance_uid == series_instance_uid)
        tallies = tallies.join(Job, Job.id == Export.job_id).where(
            Job.series_instance_uid == series_instance_uid
        )
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    last_sent: dict[int, dt.datetime] = {}
    for job_id, state, count, sent_at in s.execute(tallies):
        counts[job_id][state] = count
        if state == ExportState.SENT and sent_at is not None:
            last_sent[job_id] = sent_at
    return [
        JobRecord(
            id=job.id,
            series_instance_uid=job.series_instance_uid,
            state=job.state,
            result_dir=job.result_dir,
            created_at=job.created_at,
            finished_at=job.finished_at,
            exports=ExportTally(
                pending=counts[job.id].get(ExportState.PENDING, 0),
                sent=counts[job.id].get(ExportState.SENT, 0),
                failed=counts[job.id].get(ExportState.FAILED, 0),
                cancelled=counts[job.id].get(ExportState.CANCELLED, 0),
                other=sum(n for state, n in counts[job.id].items() if state not in _EXPORT_STATES),
                last_sent_at=last_sent.get(job.id),
            ),
        )
        for job in s.scalars(jobs)
    ]


def _chunks(items: list[str], size: int = 500) -> Iterable[list[str]]:
    # Keeps IN (...) lists under SQLite's bound-parameter limit.
    for start in range(0, len(items), size):
        yield items[start : start + size]
