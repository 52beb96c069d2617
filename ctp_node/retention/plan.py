"""The retention plan: what would be deleted now, and what is kept and why.

:func:`plan_retention` only reads (the database and the files' sizes and times), so that
``ctp-node purge --dry-run`` shows exactly what applying it would free, and tests can ask
with a clock of their own.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ctp_node.retention.disk import (
    RESULTS,
    file_size,
    files_below,
    modified_at,
    oldest_beyond_limit,
    quarantined_files,
)
from ctp_node.retention.rules import (
    RetentionPolicy,
    age_verdict,
    results_verdict,
    spool_verdict,
)
from ctp_node.store import Database
from ctp_node.store.ingest import instance_paths
from ctp_node.store.retention import (
    JobRecord,
    KeptOtherObject,
    job_records,
    kept_other_objects,
    quarantine_records,
    series_with_instances,
)

#: What is counted in each category: the items the plan lists, by category.
CATEGORIES: Mapping[str, str] = {
    "spool": "series",
    "other": "objects",
    "results": "jobs",
    "quarantine": "files",
}

_JOB_FOLDER = re.compile(r"^job-([0-9]+)$")


@dataclass(frozen=True)
class Freed:
    """Items (see :data:`CATEGORIES`), files and bytes of one category."""

    items: int = 0
    files: int = 0
    bytes: int = 0

    def __add__(self, other: Freed) -> Freed:
        return Freed(self.items + other.items, self.files + other.files, self.bytes + other.bytes)


@dataclass(frozen=True)
class SeriesSpool:
    """A series whose received instances are due: ``paths`` as recorded (relative to
    storage.root), of which ``files`` exist with ``bytes`` in all."""

    series_instance_uid: str
    study_instance_uid: str
    last_received_at: dt.datetime  # an instance recorded after this cancels the purge
    paths: tuple[str, ...]
    files: int
    bytes: int
    reason: str


@dataclass(frozen=True)
class OtherFile:
    """A kept non-CT object whose bytes are due."""

    record: KeptOtherObject
    bytes: int
    reason: str


@dataclass(frozen=True)
class ResultsFolder:
    job_id: int
    series_instance_uid: str
    folder: str  # relative to storage.root: results/<series>/job-<n>
    files: int
    bytes: int
    reason: str


@dataclass(frozen=True)
class QuarantineFile:
    path: str  # relative to storage.root
    bytes: int
    modified_at: dt.datetime
    reason: str


@dataclass(frozen=True)
class Kept:
    """Something not deleted now: ``held`` when undelivered or unprocessed (kept whatever the
    clock says), otherwise not old enough yet."""

    category: str
    subject: str  # a Series Instance UID, "job <n>" or a SOP Instance UID
    reason: str
    held: bool


@dataclass(frozen=True)
class RetentionPlan:
    """What applying retention at ``now`` would delete, category by category."""

    now: dt.datetime
    policy: RetentionPolicy
    spool: tuple[SeriesSpool, ...] = ()
    other: tuple[OtherFile, ...] = ()
    results: tuple[ResultsFolder, ...] = ()
    quarantine: tuple[QuarantineFile, ...] = ()
    # Rejections that point at a quarantined file that is gone (an interrupted run, a person).
    lost_quarantine_records: tuple[str, ...] = ()
    kept: tuple[Kept, ...] = field(default=())

    def totals(self) -> dict[str, Freed]:
        """Per category (:data:`CATEGORIES`): items, files and bytes the plan frees."""
        return {
            "spool": sum((Freed(1, s.files, s.bytes) for s in self.spool), Freed()),
            "other": sum((Freed(1, 1, o.bytes) for o in self.other), Freed()),
            "results": sum((Freed(1, r.files, r.bytes) for r in self.results), Freed()),
            "quarantine": sum((Freed(1, 1, q.bytes) for q in self.quarantine), Freed()),
        }


def plan_retention(
    db: Database, storage_root: Path, policy: RetentionPolicy, now: dt.datetime
) -> RetentionPlan:
    """What retention would delete at ``now`` (naive UTC, as :func:`~ctp_node.store.models.utcnow`).

    Reads the database and the files' sizes and modification times; changes nothing.
    """
    root = Path(storage_root)
    kept: list[Kept] = []
    spool: list[SeriesSpool] = []
    studies_kept: set[str] = set()
    for series in series_with_instances(db):
        verdict = spool_verdict(series, policy, now)
        if not verdict.due:
            kept.append(Kept("spool", series.series_instance_uid, verdict.reason, verdict.held))
            studies_kept.add(series.study_instance_uid)
            continue
        paths = tuple(instance_paths(db, series.series_instance_uid))
        sizes = [size for size in (file_size(root / p) for p in paths) if size is not None]
        spool.append(
            SeriesSpool(
                series.series_instance_uid,
                series.study_instance_uid,
                series.last_received_at,
                paths,
                len(sizes),
                sum(sizes),
                verdict.reason,
            )
        )

    other: list[OtherFile] = []
    for item in kept_other_objects(db):
        # A study's non-CT objects go with the last of its received series, not before.
        if item.study_instance_uid in studies_kept:
            kept.append(Kept("other", item.sop_instance_uid, "its study's series are kept", False))
            continue
        verdict = age_verdict(item.received_at, policy.spool_days, now, "received")
        if verdict.due:
            other.append(OtherFile(item, file_size(root / item.path) or 0, verdict.reason))
        else:
            kept.append(Kept("other", item.sop_instance_uid, verdict.reason, False))

    results, kept_results = _plan_results(root, job_records(db), policy, now)
    quarantine, lost = _plan_quarantine(root, quarantine_records(db), policy, now)
    return RetentionPlan(
        now=now,
        policy=policy,
        spool=tuple(spool),
        other=tuple(other),
        results=tuple(results),
        quarantine=tuple(quarantine),
        lost_quarantine_records=tuple(sorted(lost)),
        kept=tuple(kept + kept_results),
    )


def _plan_results(
    root: Path, jobs: Mapping[int, JobRecord], policy: RetentionPolicy, now: dt.datetime
) -> tuple[list[ResultsFolder], list[Kept]]:
    due: list[ResultsFolder] = []
    kept: list[Kept] = []
    for folder, job_id in sorted(_results_folders(root, jobs).items()):
        files = list(files_below(root / folder))
        newest = max((modified_at(stat) for _, stat in files), default=None)
        job = jobs.get(job_id) if job_id is not None else None
        series_uid = PurePosixPath(folder).parts[1]
        if job is not None and job.series_instance_uid != series_uid:
            job = None  # a folder of another database's job with the same number
        verdict = results_verdict(job, newest, policy, now)
        if verdict.due:
            size = sum(stat.st_size for _, stat in files)
            due.append(
                ResultsFolder(job_id or 0, series_uid, folder, len(files), size, verdict.reason)
            )
        else:
            kept.append(Kept("results", folder, verdict.reason, verdict.held))
    return due, kept


def _results_folders(root: Path, jobs: Mapping[int, JobRecord]) -> dict[str, int | None]:
    """Job folders below ``results/`` (``results/<series>/job-<n>``, and every job's
    ``result_dir`` there), relative to the root, each with its job's id if it names one."""
    folders: dict[str, int | None] = {}
    results = root / RESULTS
    for series_folder in _subfolders(results):
        for job_folder in _subfolders(series_folder):
            match = _JOB_FOLDER.match(job_folder.name)
            relative = job_folder.relative_to(root).as_posix()
            folders[relative] = int(match.group(1)) if match else None
    for job in jobs.values():
        relative = PurePosixPath(job.result_dir)
        if (
            len(relative.parts) == 3
            and relative.parts[0] == RESULTS
            and ".." not in relative.parts
            and (root / relative).is_dir()
        ):
            folders[relative.as_posix()] = job.id
    return folders


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _plan_quarantine(
    root: Path, recorded: set[str], policy: RetentionPolicy, now: dt.datetime
) -> tuple[list[QuarantineFile], set[str]]:
    """Files older than ``quarantine_days``, then the oldest while the rest is over
    ``quarantine_max_bytes``; and the recorded paths whose file is gone."""
    files = quarantined_files(root)
    due: list[QuarantineFile] = []
    young = []
    for modified, path, size in files:
        verdict = age_verdict(modified, policy.quarantine_days, now, "quarantined")
        if verdict.due:
            due.append(QuarantineFile(path, size, modified, verdict.reason))
        else:
            young.append((modified, path, size))
    remaining = sum(size for _, _, size in young)
    limit = policy.quarantine_max_bytes
    over = oldest_beyond_limit((size for _, _, size in young), remaining, limit)
    for modified, path, size in young[:over]:
        due.append(QuarantineFile(path, size, modified, f"over the {limit} bytes limit"))
    present = {path for _, path, _ in files}
    lost = {path for path in recorded if path not in present and not (root / path).exists()}
    return due, lost
