"""Start-up reconciliation of the spool with the database, before the listener starts.

A crash (or a power loss) can leave the spool and the index out of step:

- a write interrupted before its rename leaves ``spool/.incoming/*.part``: removed;
- an object written (fsynced, renamed) but not yet recorded leaves a file without a record: it
  is indexed from its header as received (the sender got no Success for it, but the bytes are
  whole), or moved to quarantine when it cannot be read as a CT object, or when its UID was
  recorded with other bytes meanwhile; a copy identical to its recorded instance is removed;
- a record whose file is gone (a disk replaced, a file removed by hand) is logged and removed,
  so that its series is examined with what exists. Series purged on purpose by retention
  (``purged_at`` set) are left alone.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import pydicom

from ctp_node.receive.header import identity_problem, read_header
from ctp_node.receive.intake import received_instance
from ctp_node.receive.spool import Spool, content_digest
from ctp_node.store import Database
from ctp_node.store.ingest import (
    forget_instances,
    instance_files,
    record_instance,
    series_purge_states,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reconciliation:
    """What the start-up reconciliation did (counts of files or records)."""

    partial_writes_removed: int = 0
    files_indexed: int = 0
    files_quarantined: int = 0
    copies_removed: int = 0
    missing_records_removed: int = 0


def reconcile_spool(spool: Spool, db: Database) -> Reconciliation:
    """Bring the spool and the index back in step; log one line; return the counts."""
    partial = spool.remove_partial_writes()
    missing = _forget_missing_files(spool, db)
    outcomes = {"indexed": 0, "quarantined": 0, "copy removed": 0}
    recorded: dict[str, set[str]] = {}
    for series_uid, path in spool.spooled_files():
        if series_uid not in recorded:
            recorded[series_uid] = set(instance_files(db, series_uid))
        if path not in recorded[series_uid]:
            outcomes[_index_unrecorded_file(spool, db, path)] += 1
    result = Reconciliation(
        partial_writes_removed=partial,
        files_indexed=outcomes["indexed"],
        files_quarantined=outcomes["quarantined"],
        copies_removed=outcomes["copy removed"],
        missing_records_removed=missing,
    )
    log.info(
        "spool reconciled with the database: %d partial write(s) removed, %d unrecorded "
        "file(s) indexed, %d quarantined, %d identical copies removed, %d record(s) of missing "
        "files removed",
        result.partial_writes_removed,
        result.files_indexed,
        result.files_quarantined,
        result.copies_removed,
        result.missing_records_removed,
    )
    return result


def _forget_missing_files(spool: Spool, db: Database) -> int:
    removed = 0
    for series_uid, purged in series_purge_states(db).items():
        if purged:
            continue
        gone = [
            uid for path, uid in instance_files(db, series_uid).items() if not spool.exists(path)
        ]
        if gone:
            log.warning(
                "series %s: %d recorded instance(s) have no file in the spool (e.g. %s); their "
                "records are removed so that the series is examined with what exists",
                series_uid,
                len(gone),
                gone[0],
            )
            removed += forget_instances(db, gone)
    return removed


def _index_unrecorded_file(spool: Spool, db: Database, path: str) -> str:
    """Record a spool file found without a record; returns what became of it."""
    try:
        data = spool.read(path)
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        header = read_header(ds)
        problem = (
            "not a CT object"
            if not header.is_ct
            else identity_problem(header, header.sop_class_uid)
        )
        if problem:
            raise ValueError(problem)
        transfer_syntax = str(ds.file_meta.TransferSyntaxUID)
    except Exception as exc:
        target = spool.quarantine_file(path, path.rsplit("/", 1)[-1])
        log.warning("unrecorded spool file %s cannot be read (%s): moved to %s", path, exc, target)
        return "quarantined"
    digest = content_digest(data)
    earlier = record_instance(
        db,
        received_instance(
            header,
            calling_ae_title="",
            transfer_syntax=transfer_syntax,
            path=path,
            size_bytes=len(data),
            sha256=digest,
        ),
    )
    if earlier is None:
        log.info("unrecorded spool file %s indexed as instance %s", path, header.sop_instance_uid)
        return "indexed"
    if earlier.sha256 == digest:
        spool.remove(path)
        return "copy removed"
    target = spool.quarantine_file(path, header.sop_instance_uid)
    log.warning(
        "unrecorded spool file %s has the UID of instance %s with other content: moved to %s",
        path,
        header.sop_instance_uid,
        target,
    )
    return "quarantined"
