"""Recording what arrived, and the decisions about each series."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import Executable

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
from ctp_node.store.queue import add_job


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
    sha256: str = ""
    temporal_positions: int | None = None
    images_in_acquisition: int | None = None
    frames: int = 1
    slice_position_mm: float | None = None


@dataclass(frozen=True)
class InstanceRecord:
    """What the index holds for a SOP Instance UID already received."""

    sop_instance_uid: str
    series_instance_uid: str
    path: str
    size_bytes: int
    sha256: str  # "" for instances recorded before the node kept digests


def find_instance(db: Database, sop_instance_uid: str) -> InstanceRecord | None:
    """The record of ``sop_instance_uid``, or None when it has not been received."""
    with db.engine.connect() as connection:
        row = connection.execute(_instance_record(sop_instance_uid)).first()
    return InstanceRecord(*row) if row else None


def _instance_record(sop_instance_uid: Any):  # type: ignore[no-untyped-def]
    return select(
        Instance.sop_instance_uid,
        Instance.series_instance_uid,
        Instance.path,
        Instance.size_bytes,
        Instance.sha256,
    ).where(Instance.sop_instance_uid == sop_instance_uid)


def record_instance(db: Database, item: ReceivedInstance) -> InstanceRecord | None:
    """Record a durably written instance; returns None when it is recorded now, or the earlier
    record when its SOP Instance UID was recorded before (then nothing changes at all: the
    caller tells a resend from a collision by the digests).

    A new instance re-arms the series' stability timer. If the series had already been decided
    (perfusion or ignored), it goes back to *receiving* and a job that has not started yet is
    superseded, so that the acquisition is processed once, complete.
    """
    return record_instances(db, [item])[0]


def record_instances(
    db: Database, items: Sequence[ReceivedInstance]
) -> list[InstanceRecord | None]:
    """:func:`record_instance` of each item, all in one transaction (one commit: a group
    commit of the arrivals of several associations, :mod:`ctp_node.store.index_writer`);
    returns what :func:`record_instance` would, item by item. If the transaction fails,
    nothing is recorded and the error is raised.

    Runs on every C-STORE, so it is a few Core statements (``INSERT … ON CONFLICT``) per item
    rather than ORM loads. The insert decides: of concurrent associations sending the same UID
    (also within one batch), exactly one records it, on SQLite and PostgreSQL alike.
    """
    now = utcnow()
    with db.engine.connect() as connection, connection.begin():
        return [_record(connection, db, item, now) for item in items]


@dataclass(frozen=True)
class _RecordStatements:
    """The statements of :func:`_record`, built once per dialect: they run on every C-STORE,
    and building a statement (``.values(…)`` per call) cost more CPU than executing it."""

    new_series: Executable
    new_instance: Executable
    earlier: Executable
    drop_series: Executable
    count: Executable
    reopen: Executable
    supersede: Executable


@functools.cache
def _record_statements(insert: Callable[..., Any]) -> _RecordStatements:
    """``insert``: the dialect's insert construct (:attr:`Database.insert`)."""
    series, instance, job = Series.__table__, Instance.__table__, Job.__table__
    uid, now = bindparam("b_series"), bindparam("b_now")
    return _RecordStatements(
        new_series=insert(series)
        .on_conflict_do_nothing(index_elements=["series_instance_uid"])
        .returning(series.c.series_instance_uid),
        new_instance=insert(instance)
        .on_conflict_do_nothing(index_elements=["sop_instance_uid"])
        .returning(instance.c.id),
        earlier=_instance_record(bindparam("b_sop")),
        drop_series=delete(series).where(series.c.series_instance_uid == uid),
        # a series sent again after retention purged it has files again
        count=update(series)
        .where(series.c.series_instance_uid == uid)
        .values(instance_count=series.c.instance_count + 1, last_received_at=now, purged_at=None)
        .returning(series.c.state),
        reopen=update(series)
        .where(series.c.series_instance_uid == uid)
        .values(
            state=SeriesState.RECEIVING,
            reason="more instances arrived after the series was decided",
            decided_at=None,
        ),
        supersede=update(job)
        .where(job.c.series_instance_uid == uid, job.c.state == JobState.QUEUED)
        .values(state=JobState.SUPERSEDED, finished_at=now),
    )


def _record(
    connection: Connection, db: Database, item: ReceivedInstance, now: dt.datetime
) -> InstanceRecord | None:
    run = _record_statements(db.insert)
    keys = {"b_series": item.series_instance_uid, "b_now": now}
    created = connection.execute(
        run.new_series,
        {
            "series_instance_uid": item.series_instance_uid,
            "study_instance_uid": item.study_instance_uid,
            "modality": item.modality,
            "accession_number": item.accession_number,
            "series_number": item.series_number,
            "instance_count": 0,
            "first_received_at": now,
            "last_received_at": now,
            "state": SeriesState.RECEIVING,
            "reason": "",
        },
    ).all()
    # RETURNING, not rowcount: drivers report -1 for INSERT … ON CONFLICT DO NOTHING.
    added = connection.execute(
        run.new_instance,
        {
            "sop_instance_uid": item.sop_instance_uid,
            "sop_class_uid": item.sop_class_uid,
            "series_instance_uid": item.series_instance_uid,
            "transfer_syntax_uid": item.transfer_syntax_uid,
            "path": item.path,
            "size_bytes": item.size_bytes,
            "calling_ae_title": item.calling_ae_title,
            "received_at": now,
            "sha256": item.sha256,
            "temporal_positions": item.temporal_positions,
            "images_in_acquisition": item.images_in_acquisition,
            "frames": item.frames,
            "slice_position_mm": item.slice_position_mm,
        },
    ).all()
    if not added:
        row = connection.execute(run.earlier, {"b_sop": item.sop_instance_uid}).one()
        if created:  # not even a new, empty series row
            connection.execute(run.drop_series, keys)
        return InstanceRecord(*row)
    state = connection.execute(run.count, keys).scalar_one()
    if state != SeriesState.RECEIVING:
        connection.execute(run.reopen, keys)
        connection.execute(run.supersede, keys)
    return None


def record_rejection(
    db: Database,
    *,
    calling_ae_title: str,
    status: int,
    reason: str,
    kind: str = "c-store",
    peer_address: str = "",
    sop_instance_uid: str = "",
    quarantine_path: str = "",
    size_bytes: int = 0,
) -> None:
    """Record something refused: a C-STORE (the status sent to the caller, the reason, the
    quarantined copy), an association or a presentation context (``kind``; status 0)."""
    with db.session() as s:
        s.add(
            Rejection(
                received_at=utcnow(),
                kind=kind,
                peer_address=peer_address[:64],
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
    """Record the decision for a complete series; enqueue a job when it is a perfusion
    acquisition (superseding the series' unfinished jobs, see :func:`store.queue.add_job`).

    The decision applies only if no instance arrived since the series was examined
    (``expected_instance_count`` still matches); otherwise nothing changes and the series waits
    for completion again. Returns the new job's id, or None.
    """
    with db.session() as s:
        series = _undecided(s, db, series_instance_uid, expected_instance_count)
        if series is None:
            return None
        series.decided_at = utcnow()
        series.reason = reason
        if not perfusion:
            series.state = SeriesState.IGNORED
            return None
        series.state = SeriesState.PERFUSION
        return add_job(s, series_instance_uid, by="scheduler")


def record_series_error(
    db: Database, series_instance_uid: str, reason: str, *, expected_instance_count: int
) -> bool:
    """Record that a series could not be examined (``reason`` says why); it is looked at again
    when more instances arrive, and the scheduler goes on with the others."""
    with db.session() as s:
        series = _undecided(s, db, series_instance_uid, expected_instance_count)
        if series is None:
            return False
        series.state = SeriesState.ERROR
        series.reason = reason
        series.decided_at = utcnow()
        return True


def _undecided(
    s: Session, db: Database, series_instance_uid: str, expected_instance_count: int
) -> Series | None:
    series = s.get(Series, series_instance_uid, with_for_update=not db.is_sqlite)
    if (
        series is None
        or series.state != SeriesState.RECEIVING
        or series.instance_count != expected_instance_count
    ):
        return None
    return series


@dataclass(frozen=True)
class AnnouncedSize:
    """What a series' instances say of the acquisition's size, and what has arrived.

    Attributes
    ----------
    instances : instances received.
    images : images received (frames of multi-frame instances counted).
    images_in_acquisition : ImagesInAcquisition when every instance gives the same, else None.
    temporal_positions : NumberOfTemporalPositions when every instance gives the same, else None.
    frames_per_instance : NumberOfFrames when every instance has the same, else None.
    slice_positions_mm : position along the slice normal of each single-frame instance.
    quiet_s : seconds since the series' last instance arrived.
    """

    instances: int
    images: int
    images_in_acquisition: int | None
    temporal_positions: int | None
    frames_per_instance: int | None
    slice_positions_mm: tuple[float, ...] = ()
    quiet_s: float = 0.0


def announced_sizes(
    db: Database, stable_after_s: float, now: dt.datetime | None = None
) -> dict[str, AnnouncedSize]:
    """For every series still *receiving* and not yet quiet for ``stable_after_s``: what its
    headers announce (one aggregate query; slice positions only for series that announce their
    number of time points)."""
    now = now or utcnow()
    cutoff = now - dt.timedelta(seconds=stable_after_s)
    i = Instance
    with db.session() as s:
        rows = s.execute(
            select(
                i.series_instance_uid,
                func.count(),
                func.sum(i.frames),
                func.min(i.images_in_acquisition),
                func.max(i.images_in_acquisition),
                func.count(i.images_in_acquisition),
                func.min(i.temporal_positions),
                func.max(i.temporal_positions),
                func.count(i.temporal_positions),
                func.min(i.frames),
                func.max(i.frames),
                func.max(Series.last_received_at),
            )
            .join(Series, Series.series_instance_uid == i.series_instance_uid)
            .where(Series.state == SeriesState.RECEIVING, Series.last_received_at > cutoff)
            .group_by(i.series_instance_uid)
        ).all()
        sizes = {}
        for row in rows:
            uid, count, images, ia_lo, ia_hi, ia_n, tp_lo, tp_hi, tp_n, f_lo, f_hi, last = row
            temporal = tp_lo if tp_n == count and tp_lo == tp_hi else None
            positions: tuple[float, ...] = ()
            if temporal and f_hi == 1:
                positions = tuple(
                    s.scalars(
                        select(i.slice_position_mm).where(
                            i.series_instance_uid == uid, i.slice_position_mm.is_not(None)
                        )
                    )
                )
            sizes[uid] = AnnouncedSize(
                instances=int(count),
                images=int(images or count),
                images_in_acquisition=ia_lo if ia_n == count and ia_lo == ia_hi else None,
                temporal_positions=temporal,
                frames_per_instance=f_lo if f_lo == f_hi else None,
                slice_positions_mm=positions,
                quiet_s=(now - last).total_seconds(),
            )
        return sizes


def instance_records(db: Database, series_instance_uid: str) -> list[tuple[str, str]]:
    """(SOP Instance UID, spool path relative to storage.root) of a series' instances."""
    with db.session() as s:
        return [
            (uid, path)
            for uid, path in s.execute(
                select(Instance.sop_instance_uid, Instance.path)
                .where(Instance.series_instance_uid == series_instance_uid)
                .order_by(Instance.id)
            )
        ]


def series_sender(db: Database, series_instance_uid: str) -> str | None:
    """The AE title that sent a series' first instance (for the profile rules), or None."""
    with db.session() as s:
        return s.scalar(
            select(Instance.calling_ae_title)
            .where(Instance.series_instance_uid == series_instance_uid)
            .order_by(Instance.id)
            .limit(1)
        )


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


def get_series(db: Database, series_instance_uid: str) -> Series | None:
    with db.session() as s:
        return s.get(Series, series_instance_uid)


def list_series(db: Database) -> list[Series]:
    with db.session() as s:
        return list(s.scalars(select(Series).order_by(Series.first_received_at)))


def list_rejections(db: Database) -> list[Rejection]:
    with db.session() as s:
        return list(s.scalars(select(Rejection).order_by(Rejection.id)))


def series_purge_states(db: Database) -> dict[str, bool]:
    """Every series' UID → whether retention purged its files on purpose."""
    with db.engine.connect() as connection:
        rows = connection.execute(
            select(Series.series_instance_uid, Series.purged_at.is_not(None))
        ).all()
    return {uid: bool(purged) for uid, purged in rows}


def instance_files(db: Database, series_instance_uid: str) -> dict[str, str]:
    """A series' recorded instances: spool path (relative to storage.root) → SOP Instance UID."""
    with db.engine.connect() as connection:
        rows = connection.execute(
            select(Instance.path, Instance.sop_instance_uid).where(
                Instance.series_instance_uid == series_instance_uid
            )
        ).all()
    return dict(rows)


def forget_instances(db: Database, sop_instance_uids: list[str]) -> int:
    """Remove the records of instances whose files are gone, so that their series is examined
    with what exists; each series' instance count follows. Returns how many were removed."""
    removed = 0
    with db.engine.begin() as connection:
        for uid in sop_instance_uids:
            series_uid = connection.execute(
                delete(Instance)
                .where(Instance.sop_instance_uid == uid)
                .returning(Instance.series_instance_uid)
            ).scalar()
            if series_uid is None:
                continue
            removed += 1
            connection.execute(
                update(Series)
                .where(Series.series_instance_uid == series_uid)
                .values(instance_count=Series.instance_count - 1)
            )
    return removed
