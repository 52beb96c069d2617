"""Recording what arrived, and the decisions about each series."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select, update

from ctp_node.store.database import Database
from ctp_node.store.models import (
    Instance,
    Job,
    JobState,
    Rejection,
    Series,
    SeriesState,
    utcnow,
)


@dataclass(frozen=True)
class ReceivedInstance:
    """What the receiver knows of one instance after writing it to the spool."""

    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    study_instance_uid: str
    transfer_syntax_uid: str
    modality: str
    accession_number: str
    series_number: int | None
    path: str
    size_bytes: int
    calling_ae_title: str


def record_instance(db: Database, item: ReceivedInstance) -> None:
    """Record a durably written instance; a re-sent instance replaces its earlier record.

    A new instance re-arms the series' stability timer. If the series had already been decided
    (perfusion or ignored), it goes back to *receiving* and a job that has not started yet is
    superseded, so that the acquisition is processed once, complete.

    Runs on every C-STORE, so it is a few Core statements (``INSERT … ON CONFLICT``) in one
    transaction rather than ORM loads; concurrent associations of one series are safe on
    SQLite and PostgreSQL alike.
    """
    now = utcnow()
    insert = db.insert
    with db.engine.begin() as connection:
        connection.execute(
            insert(Series)
            .values(
                series_instance_uid=item.series_instance_uid,
                study_instance_uid=item.study_instance_uid,
                modality=item.modality,
                accession_number=item.accession_number,
                series_number=item.series_number,
                instance_count=0,
                first_received_at=now,
                last_received_at=now,
                state=SeriesState.RECEIVING,
                reason="",
            )
            .on_conflict_do_nothing(index_elements=["series_instance_uid"])
        )
        instance = {
            "sop_class_uid": item.sop_class_uid,
            "series_instance_uid": item.series_instance_uid,
            "transfer_syntax_uid": item.transfer_syntax_uid,
            "path": item.path,
            "size_bytes": item.size_bytes,
            "calling_ae_title": item.calling_ae_title,
            "received_at": now,
        }
        # RETURNING, not rowcount: drivers report -1 for INSERT … ON CONFLICT DO NOTHING.
        added = len(
            connection.execute(
                insert(Instance)
                .values(sop_instance_uid=item.sop_instance_uid, **instance)
                .on_conflict_do_nothing(index_elements=["sop_instance_uid"])
                .returning(Instance.id)
            ).all()
        )
        if not added:
            connection.execute(
                update(Instance)
                .where(Instance.sop_instance_uid == item.sop_instance_uid)
                .values(**instance)
            )
        state = connection.execute(
            update(Series)
            .where(Series.series_instance_uid == item.series_instance_uid)
            .values(instance_count=Series.instance_count + added, last_received_at=now)
            .returning(Series.state)
        ).scalar_one()
        if state != SeriesState.RECEIVING:
            connection.execute(
                update(Series)
                .where(Series.series_instance_uid == item.series_instance_uid)
                .values(
                    state=SeriesState.RECEIVING,
                    reason="more instances arrived after the series was decided",
                    decided_at=None,
                )
            )
            connection.execute(
                update(Job)
                .where(
                    Job.series_instance_uid == item.series_instance_uid,
                    Job.state == JobState.QUEUED,
                )
                .values(state=JobState.SUPERSEDED, finished_at=now)
            )


def record_rejection(
    db: Database,
    *,
    calling_ae_title: str,
    status: int,
    reason: str,
    sop_instance_uid: str = "",
    quarantine_path: str = "",
    size_bytes: int = 0,
) -> None:
    """Record a refused C-STORE (status sent to the caller, reason, quarantined copy)."""
    with db.session() as s:
        s.add(
            Rejection(
                received_at=utcnow(),
                calling_ae_title=calling_ae_title[:16],
                sop_instance_uid=sop_instance_uid[:64],
                status=status,
                reason=reason,
                quarantine_path=quarantine_path,
                size_bytes=size_bytes,
            )
        )


def stable_series(db: Database, stable_after_s: float, now: dt.datetime | None = None) -> list[str]:
    """UIDs of series still *receiving* whose last instance is older than ``stable_after_s``."""
    cutoff = (now or utcnow()) - dt.timedelta(seconds=stable_after_s)
    with db.session() as s:
        return list(
            s.scalars(
                select(Series.series_instance_uid).where(
                    Series.state == SeriesState.RECEIVING, Series.last_received_at <= cutoff
                )
            )
        )


def instance_paths(db: Database, series_instance_uid: str) -> list[str]:
    """Spool paths (relative to storage.root) of a series' instances."""
    with db.session() as s:
        return list(
            s.scalars(
                select(Instance.path)
                .where(Instance.series_instance_uid == series_instance_uid)
                .order_by(Instance.id)
            )
        )


def decide_series(
    db: Database,
    series_instance_uid: str,
    *,
    perfusion: bool,
    reason: str,
    expected_instance_count: int,
) -> int | None:
    """Record the decision for a stable series; enqueue a job when it is a perfusion acquisition.

    The decision applies only if no instance arrived since the series was examined
    (``expected_instance_count`` still matches); otherwise nothing changes and the series waits
    for stability again. Returns the new job's id, or None.
    """
    now = utcnow()
    with db.session() as s:
        series = s.get(Series, series_instance_uid, with_for_update=not db.is_sqlite)
        if (
            series is None
            or series.state != SeriesState.RECEIVING
            or series.instance_count != expected_instance_count
        ):
            return None
        series.decided_at = now
        series.reason = reason
        if not perfusion:
            series.state = SeriesState.IGNORED
            return None
        series.state = SeriesState.PERFUSION
        job = Job(series_instance_uid=series_instance_uid, state=JobState.QUEUED, created_at=now)
        s.add(job)
        s.flush()
        return job.id


def other_perfusion_series(db: Database, series_instance_uid: str) -> list[str]:
    """The other series of the same study that were decided to be perfusion acquisitions
    (e.g. the second slab of a two-bolus study), as far as they have arrived."""
    with db.session() as s:
        study = s.scalar(
            select(Series.study_instance_uid).where(
                Series.series_instance_uid == series_instance_uid
            )
        )
        return list(
            s.scalars(
                select(Series.series_instance_uid).where(
                    Series.study_instance_uid == study,
                    Series.series_instance_uid != series_instance_uid,
                    Series.state == SeriesState.PERFUSION,
                )
            )
        )


def list_series(db: Database) -> list[Series]:
    with db.session() as s:
        return list(s.scalars(select(Series).order_by(Series.first_received_at)))


def list_rejections(db: Database) -> list[Rejection]:
    with db.session() as s:
        return list(s.scalars(select(Rejection).order_by(Rejection.id)))
