"""What the web console (:mod:`ctp_node.http.console`) reads: studies with their series, jobs
and exports, refusals, one job. Each function is one short transaction and returns plain
frozen dataclasses, so that no database object leaves ``store/``.

Nothing here reads a patient's name or ID (the tables hold none): UIDs, accession numbers,
AE titles, addresses and times only.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from ctp_node.store.database import Database
from ctp_node.store.models import Export, Instance, Job, Rejection, Series


@dataclass(frozen=True)
class ExportLine:
    """A job's exports to one destination in one state: how many, and the last error."""

    destination: str
    state: str
    count: int
    last_error: str = ""


@dataclass(frozen=True)
class JobLine:
    """One job as the console lists it. ``duration_s`` is from its start to its end (None
    while it has not ended); ``aif_zyx``/``vof_zyx`` are a person's choice ("" = automatic),
    ``region`` a region a person gave ("Z,Y,X,R"; "" = none)."""

    id: int
    series_instance_uid: str
    state: str
    version: int
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    error: str
    requested_by: str
    aif_zyx: str
    vof_zyx: str
    version_reason: str
    result_dir: str
    exports: tuple[ExportLine, ...] = ()
    region: str = ""

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class SeriesLine:
    """One series: its state and reason, instances received, and its jobs (oldest first)."""

    series_instance_uid: str
    modality: str
    series_number: int | None
    state: str
    reason: str
    instances: int
    first_received_at: dt.datetime
    last_received_at: dt.datetime
    purged: bool
    #: Images in Acquisition as every instance announces it (None when absent or unequal)
    expected: int | None = None
    jobs: tuple[JobLine, ...] = ()


@dataclass(frozen=True)
class StudyLine:
    """One study: its accession number (of its first series) and its series."""

    study_instance_uid: str
    accession_number: str
    last_received_at: dt.datetime
    series: tuple[SeriesLine, ...] = ()


@dataclass(frozen=True)
class RefusalLine:
    """Something the listener refused (a ``rejections`` row)."""

    received_at: dt.datetime
    kind: str
    peer_address: str
    calling_ae_title: str
    sop_instance_uid: str
    status: int
    reason: str


@dataclass(frozen=True)
class JobDetail:
    """One job with its series and its ``results.json`` summary (empty when it has none)."""

    job: JobLine
    study_instance_uid: str
    accession_number: str
    series_state: str
    summary: dict[str, Any] = field(default_factory=dict)
    later_versions: tuple[int, ...] = ()


def _job_line(job: Job, exports: dict[int, list[ExportLine]]) -> JobLine:
    return JobLine(
        job.id,
        job.series_instance_uid,
        job.state,
        job.version,
        job.created_at,
        job.started_at,
        job.finished_at,
        job.error,
        job.requested_by,
        job.aif_zyx,
        job.vof_zyx,
        job.version_reason,
        job.result_dir,
        tuple(exports.get(job.id, ())),
        job.region,
    )


def _export_lines(s, job_ids: list[int]) -> dict[int, list[ExportLine]]:  # type: ignore[no-untyped-def]
    """Exports of these jobs by (destination, state), with the latest error of each group."""
    if not job_ids:
        return {}
    rows = s.execute(
        select(Export.job_id, Export.destination, Export.state, func.count(), func.max(Export.id))
        .where(Export.job_id.in_(job_ids))
        .group_by(Export.job_id, Export.destination, Export.state)
        .order_by(Export.job_id, Export.destination, Export.state)
    ).all()
    errors = dict(
        s.execute(
            select(Export.id, Export.last_error).where(Export.id.in_([r[4] for r in rows]))
        ).all()
    )
    lines: dict[int, list[ExportLine]] = {}
    for job_id, destination, state, count, last_id in rows:
        line = ExportLine(destination, state, count, errors.get(last_id, ""))
        lines.setdefault(job_id, []).append(line)
    return lines


def study_count(db: Database) -> int:
    """How many studies the index holds (each with at least one series)."""
    with db.session() as s:
        return int(s.scalar(select(func.count(func.distinct(Series.study_instance_uid)))) or 0)


def studies(db: Database, limit: int = 200, offset: int = 0) -> list[StudyLine]:
    """``limit`` studies, newest first (by their last instance received), after skipping the
    ``offset`` newest; each with its series (newest first) and their jobs (oldest first) and
    exports."""
    with db.session() as s:
        recent = (
            select(Series.study_instance_uid, func.max(Series.last_received_at).label("last"))
            .group_by(Series.study_instance_uid)
            .order_by(func.max(Series.last_received_at).desc(), Series.study_instance_uid.desc())
            .limit(limit)
            .offset(offset)
            .subquery()
        )
        series = list(
            s.scalars(
                select(Series)
                .join(recent, recent.c.study_instance_uid == Series.study_instance_uid)
                .order_by(recent.c.last.desc(), Series.last_received_at.desc())
            )
        )
        uids = [x.series_instance_uid for x in series]
        jobs = list(
            s.scalars(select(Job).where(Job.series_instance_uid.in_(uids)).order_by(Job.id))
        )
        exports = _export_lines(s, [j.id for j in jobs])
        expected = _announced(s, uids)
    by_series: dict[str, list[JobLine]] = {}
    for job in jobs:
        by_series.setdefault(job.series_instance_uid, []).append(_job_line(job, exports))
    grouped: dict[str, list[Series]] = {}
    for x in series:
        grouped.setdefault(x.study_instance_uid, []).append(x)
    return [
        StudyLine(
            study_uid,
            next((x.accession_number for x in members if x.accession_number), ""),
            max(x.last_received_at for x in members),
            tuple(
                _series_line(
                    x,
                    by_series.get(x.series_instance_uid, []),
                    expected.get(x.series_instance_uid),
                )
                for x in members
            ),
        )
        for study_uid, members in grouped.items()
    ]


def _announced(s, uids: list[str]) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Images in Acquisition (0020,1002) per series, when all its instances announce the same."""
    i = Instance
    rows = s.execute(
        select(
            i.series_instance_uid,
            func.min(i.images_in_acquisition),
            func.max(i.images_in_acquisition),
            func.count(i.images_in_acquisition),
            func.count(),
        )
        .where(i.series_instance_uid.in_(uids))
        .group_by(i.series_instance_uid)
    ).all()
    return {uid: lo for uid, lo, hi, n, count in rows if n == count and lo == hi and lo}


def _series_line(series: Series, jobs: list[JobLine], expected: int | None) -> SeriesLine:
    return SeriesLine(
        series.series_instance_uid,
        series.modality,
        series.series_number,
        series.state,
        series.reason,
        series.instance_count,
        series.first_received_at,
        series.last_received_at,
        series.purged_at is not None,
        expected,
        tuple(jobs),
    )


def refusals(db: Database, limit: int = 500) -> list[RefusalLine]:
    """The ``limit`` latest refusals (C-STOREs, associations, contexts, TLS), newest first."""
    with db.session() as s:
        rows = s.scalars(select(Rejection).order_by(Rejection.id.desc()).limit(limit))
        return [
            RefusalLine(
                r.received_at,
                r.kind,
                r.peer_address,
                r.calling_ae_title,
                r.sop_instance_uid,
                r.status,
                r.reason,
            )
            for r in rows
        ]


def job_detail(db: Database, job_id: int) -> JobDetail | None:
    """One job, its series and summary; None when there is no such job."""
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            return None
        series = s.get(Series, job.series_instance_uid)
        line = _job_line(job, _export_lines(s, [job.id]))
        later = tuple(
            s.scalars(
                select(Job.id)
                .where(Job.series_instance_uid == job.series_instance_uid, Job.id > job.id)
                .order_by(Job.id)
            )
        )
        summary = json.loads(job.summary_json) if job.summary_json else {}
    return JobDetail(
        line,
        series.study_instance_uid if series else "",
        series.accession_number if series else "",
        series.state if series else "",
        summary,
        later,
    )


def latest_summary(db: Database, series_uid: str) -> dict[str, Any]:
    """The ``results.json`` summary of the series' latest done job ({} when none)."""
    with db.session() as s:
        text = s.scalar(
            select(Job.summary_json)
            .where(Job.series_instance_uid == series_uid, Job.state == "done")
            .order_by(Job.version.desc(), Job.id.desc())
            .limit(1)
        )
    return json.loads(text) if text else {}
