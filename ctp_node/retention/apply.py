"""Applying a retention plan: files first, then their records, each step re-checked.

Received files (spool, kept non-CT objects) are not unlinked at once: each is renamed into a
trash folder (``storage.root/.purging/<run>/``, same relative path), and only once the
database records are changed — in a transaction that checks again that the series is due and
that nothing arrived since the plan — are they deleted. If the check fails they are put
back. A file found newer than its series' last record (the same instance sent again while it
was being purged) is put back at once. A run that was interrupted leaves its trash behind; the
next run puts back every file that is still on record and deletes the others, so that a crash
at any point is harmless. One run at a time per storage root (a lock file).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from ctp_node.file_modes import create_file, make_folders
from ctp_node.retention.disk import (
    OTHER,
    RESULTS,
    SPOOL,
    files_below,
    modified_at,
    remove_empty_folders,
)
from ctp_node.retention.plan import (
    CATEGORIES,
    Freed,
    OtherFile,
    RetentionPlan,
    SeriesSpool,
    plan_retention,
)
from ctp_node.retention.rules import RetentionPolicy, spool_verdict
from ctp_node.store import Database
from ctp_node.store.models import utcnow
from ctp_node.store.retention import (
    SeriesRecord,
    forget_other_objects,
    forget_quarantine_paths,
    forget_series_instances,
    recorded_paths,
    series_record,
)

log = logging.getLogger(__name__)

TRASH_FOLDER = ".purging"
LOCK_FILE = ".retention.lock"
#: Most a file's modification time may lie after its record's time and still count as old.
CLOCK_SLACK = dt.timedelta(seconds=60)
_MB = 1_000_000


def apply_due_retention(
    db: Database, storage_root: Path, policy: RetentionPolicy, now: dt.datetime | None = None
) -> dict[str, Freed]:
    """Plan at ``now`` (default: the current time) and apply; what ``serve`` runs."""
    plan = plan_retention(db, storage_root, policy, now or utcnow())
    freed = apply_retention(db, storage_root, plan)
    if any(f.items for f in freed.values()):
        log.info(
            "retention freed %s",
            ", ".join(
                f"{name} {f.items} {CATEGORIES[name]} {f.bytes / _MB:.1f} MB"
                for name, f in freed.items()
            ),
        )
    return freed


def apply_retention(db: Database, storage_root: Path, plan: RetentionPlan) -> dict[str, Freed]:
    """Delete what ``plan`` lists, where it is still due; returns what was freed per category.

    Every deletion is logged with UIDs and job numbers only.
    """
    root = Path(storage_root)
    freed = {name: Freed() for name in CATEGORIES}
    with _exclusive(root) as acquired:
        if not acquired:
            log.warning(
                "retention: another run holds %s; nothing deleted this time", root / LOCK_FILE
            )
            return freed
        recover_interrupted_run(db, root)
        trash = _Trash(root, root / TRASH_FOLDER / uuid.uuid4().hex)
        try:
            for series in plan.spool:
                freed["spool"] += _purge_series(db, trash, series, plan)
            freed["other"] = _purge_other_objects(db, trash, plan.other)
        finally:
            # Normally empty by now; after an error, what is left is settled by its records.
            recover_interrupted_run(db, root)
        for folder in plan.results:
            shutil.rmtree(root / folder.folder, ignore_errors=True)
            if (root / folder.folder).exists():
                log.error("retention: %s could not be deleted completely", folder.folder)
                continue
            remove_empty_folders((root / folder.folder).parent, root / RESULTS)
            log.info(
                "retention: job %d (series %s): results folder deleted, %d file(s), %.1f MB (%s)",
                folder.job_id,
                folder.series_instance_uid,
                folder.files,
                folder.bytes / _MB,
                folder.reason,
            )
            freed["results"] += Freed(1, folder.files, folder.bytes)
        for item in plan.quarantine:
            (root / item.path).unlink(missing_ok=True)
            log.info("retention: %s deleted from quarantine (%s)", item.path, item.reason)
            freed["quarantine"] += Freed(1, 1, item.bytes)
        forget_quarantine_paths(
            db, [item.path for item in plan.quarantine] + list(plan.lost_quarantine_records)
        )
    return freed


def recover_interrupted_run(db: Database, root: Path) -> None:
    """Finish what an interrupted run left in the trash: a file still on record goes back to
    its place (unless a newer copy is there), the others are deleted."""
    folder = Path(root) / TRASH_FOLDER
    for run in sorted(p for p in folder.glob("*") if p.is_dir()):
        left = {path.relative_to(run).as_posix(): path for path, _ in files_below(run)}
        on_record = recorded_paths(db, left)
        for relative in sorted(on_record):
            _put_back(root, left[relative], relative)
        if left:
            log.warning(
                "retention: an interrupted run left %d file(s): %d still on record put back, "
                "the others deleted",
                len(left),
                len(on_record),
            )
        shutil.rmtree(run, ignore_errors=True)
    remove_empty_folders(folder, root)


def _purge_series(db: Database, trash: _Trash, item: SeriesSpool, plan: RetentionPlan) -> Freed:
    uid = item.series_instance_uid

    def still_due(record: SeriesRecord) -> bool:
        return spool_verdict(record, plan.policy, plan.now).due

    current = series_record(db, uid)
    if (
        current is None
        or current.last_received_at != item.last_received_at
        or not still_due(current)
    ):
        log.info("retention: series %s changed since the plan; its received files are kept", uid)
        return Freed()
    taken = trash.take_all(item.paths, written_before=item.last_received_at)
    if taken is None:
        return Freed()
    try:
        forgotten = forget_series_instances(
            db, uid, last_received_at=item.last_received_at, still_due=still_due, now=plan.now
        )
    except BaseException:
        trash.put_back(taken)
        raise
    if not forgotten:
        trash.put_back(taken)
        log.info("retention: series %s received instances while being purged; files kept", uid)
        return Freed()
    files, size = trash.discard(taken)
    remove_empty_folders(trash.root / SPOOL / item.study_instance_uid / uid, trash.root / SPOOL)
    log.info(
        "retention: series %s (study %s): %d received file(s), %.1f MB deleted and %d instance "
        "record(s) removed (%s)",
        uid,
        item.study_instance_uid,
        files,
        size / _MB,
        len(item.paths),
        item.reason,
    )
    return Freed(1, files, size)


def _purge_other_objects(db: Database, trash: _Trash, items: tuple[OtherFile, ...]) -> Freed:
    taken: dict[int, list[str]] = {}
    for item in items:
        paths = trash.take_all([item.record.path], written_before=item.record.received_at)
        if paths is not None:
            taken[item.record.id] = paths
    try:
        forgotten = forget_other_objects(db, [i.record for i in items if i.record.id in taken])
    except BaseException:
        trash.put_back([path for paths in taken.values() for path in paths])
        raise
    freed = Freed()
    for item in items:
        if item.record.id not in taken:
            continue
        if item.record.id not in forgotten:
            trash.put_back(taken[item.record.id])
            continue
        files, size = trash.discard(taken[item.record.id])
        record = item.record
        remove_empty_folders((trash.root / record.path).parent, trash.root / OTHER)
        log.info(
            "retention: non-CT object %s (series %s, study %s) deleted, %.1f MB (%s)",
            record.sop_instance_uid,
            record.series_instance_uid,
            record.study_instance_uid,
            size / _MB,
            item.reason,
        )
        freed += Freed(1, files, size)
    return freed


class _Trash:
    """Files taken out of place by atomic renames below ``folder``, to be deleted or put back."""

    def __init__(self, root: Path, folder: Path) -> None:
        self.root = root
        self.folder = folder

    def take_all(
        self, paths: tuple[str, ...] | list[str], written_before: dt.datetime
    ) -> list[str] | None:
        """Take every file of ``paths`` (relative to the root) that exists and was written
        before ``written_before``; a newer one is a copy that arrived meanwhile and stays.
        Returns the paths taken, or None (and nothing taken) when a file could not be moved."""
        # Half the time since, at most a minute: room for the file server's clock to differ
        # from the receiver's, while a file written now still counts as new.
        slack = min(CLOCK_SLACK, (utcnow() - written_before) / 2)
        taken: list[str] = []
        for relative in paths:
            if PurePosixPath(relative).is_absolute() or ".." in PurePosixPath(relative).parts:
                log.error("retention: %s is recorded outside storage.root; kept", relative)
                self.put_back(taken)
                return None
            source, target = self.root / relative, self.folder / relative
            try:
                make_folders(target.parent)
                os.rename(source, target)
            except FileNotFoundError:
                continue  # already gone (an interrupted run, or a person)
            except OSError as exc:
                log.error("retention: cannot move %s aside (%s); its series is kept", relative, exc)
                self.put_back(taken)
                return None
            if modified_at(target.stat()) > written_before + slack:
                log.warning(
                    "retention: %s was written again while being purged; it stays", relative
                )
                _put_back(self.root, target, relative)
                continue
            taken.append(relative)
        return taken

    def put_back(self, paths: list[str]) -> None:
        for relative in paths:
            _put_back(self.root, self.folder / relative, relative)

    def discard(self, paths: list[str]) -> tuple[int, int]:
        """Delete taken files; returns how many and their bytes."""
        files = size = 0
        for relative in paths:
            target = self.folder / relative
            try:
                size += target.stat().st_size
                target.unlink()
            except FileNotFoundError:
                continue
            files += 1
        return files, size


def _put_back(root: Path, taken: Path, relative: str) -> None:
    """Return a taken file to its place; if a newer copy is there already, that one stays."""
    place = root / relative
    make_folders(place.parent)
    try:
        os.link(taken, place)  # unlike rename, never replaces a file that arrived meanwhile
    except FileExistsError:
        pass
    except FileNotFoundError:
        if taken.exists():
            raise  # its folder went meanwhile; the file stays aside for the next run
        return  # settled by another run
    taken.unlink()


@contextmanager
def _exclusive(root: Path) -> Iterator[bool]:
    """Holds the storage root's retention lock while the block runs; yields False when
    another process holds it."""
    make_folders(root)
    with open(create_file(root / LOCK_FILE, os.O_WRONLY | os.O_APPEND), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
