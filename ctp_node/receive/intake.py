"""What becomes of a received object once its header has been read: a CT image is written
durably and recorded, another object is acknowledged and recorded (and kept if configured),
anything refused is quarantined and recorded. Each path returns the C-STORE status (the
table is in :mod:`ctp_node.receive.scp`).

Every refusal carries an ErrorComment, is logged on one line, recorded with its reason, and its
bytes are quarantined (when there is room).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from pydicom.dataset import Dataset

from ctp_node.receive.admission import Requestor
from ctp_node.receive.header import ReceivedHeader, not_ct_reason
from ctp_node.receive.quarantine import Quarantined
from ctp_node.receive.spool import Spool, SpoolFullError, file_digest
from ctp_node.store import Database
from ctp_node.store.index_writer import IndexWriter
from ctp_node.store.ingest import (
    InstanceRecord,
    ReceivedInstance,
    forget_instances,
    record_rejection,
)
from ctp_node.store.others import record_other_object
from ctp_node.store.retention import forget_quarantine_paths

log = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_DUPLICATE_SOP_INSTANCE = 0x0111
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DOES_NOT_MATCH_SOP_CLASS = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_PROCESSING_FAILURE = 0x0110

#: The ErrorComment (at most 64 characters, its VR's length) sent with each refusal.
ERROR_COMMENTS = {
    STATUS_DUPLICATE_SOP_INSTANCE: "SOP Instance UID already received with other content",
    STATUS_OUT_OF_RESOURCES: "disk nearly full (storage.min_free_bytes); send again later",
    STATUS_DOES_NOT_MATCH_SOP_CLASS: "SOP class does not match, or a UID is missing or invalid",
    STATUS_CANNOT_UNDERSTAND: "the data set cannot be decoded",
    STATUS_PROCESSING_FAILURE: "could not write or record the object; send again",
}

Status = int | Dataset


@dataclass
class Received:
    """A received data set, written below ``spool/.incoming`` as it arrived (file meta
    included); ``path`` None when nothing usable arrived."""

    path: Path | None
    size: int = 0
    _digest: str = ""

    @property
    def digest(self) -> str:
        """SHA-256 of the file: tells a harmless resend from a collision."""
        if not self._digest and self.path is not None:
            self._digest = file_digest(self.path)
        return self._digest


@dataclass(frozen=True)
class Intake:
    """The receiver's side of the spool and the database.

    Parameters
    ----------
    spool : where objects are written.
    db : where they are recorded.
    keep_other_objects : keep objects that are not CT below ``other/`` (else only recorded).

    Attributes
    ----------
    index : records CT instances, those of concurrent associations in one commit.
    folder_syncs : flush the folder entries of new spool files while their records commit.
    """

    spool: Spool
    db: Database
    keep_other_objects: bool = False
    index: IndexWriter = field(init=False)
    folder_syncs: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", IndexWriter(self.db))
        # (threads made as concurrent C-STOREs need them, at most one each)
        syncs = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ctp-node folder sync")
        object.__setattr__(self, "folder_syncs", syncs)

    def store_ct(
        self, received: Received, header: ReceivedHeader, sender: Requestor, transfer_syntax: str
    ) -> Status:
        """Move a CT object durably into the spool, record it, and return Success; or refuse it.

        The record's insert decides which object a SOP Instance UID names: an object whose UID
        was recorded first (before, or by another arrival) removes the file it wrote, and is a
        harmless resend (identical bytes) or a collision (refused, its bytes quarantined). The
        insert waits for its group commit (:class:`~ctp_node.store.index_writer.IndexWriter`):
        Success only once the file, its folder entry and its record are durable.
        """
        uid = header.sop_instance_uid
        digest = received.digest
        adopt = partial(self.spool.adopt, sync_folder=False)
        path, refusal = self._write(adopt, received, header, sender)
        if refusal is not None:
            return refusal
        # The file's bytes are durable (and a crash leaves a whole file or none under its
        # name); its folder entry is flushed while the record commits: a record whose file
        # a crash took back is forgotten at start-up (reconcile.py), and neither was answered.
        folder_synced = self.folder_syncs.submit(self.spool.sync_folder, path)
        try:
            earlier = self.index.record(
                received_instance(
                    header,
                    calling_ae_title=sender.ae_title,
                    transfer_syntax=transfer_syntax,
                    path=path,
                    size_bytes=received.size,
                    sha256=digest,
                ),
            )
        except Exception as exc:
            wait([folder_synced])
            self._discard(path)  # no file is left that the index does not know
            reason = f"recording in the database failed: {exc}"
            return self._fail(sender, uid, reason, received.size, exc)
        try:
            folder_synced.result()
        except OSError as exc:
            return self._unrecord(path, earlier, sender, uid, exc, received.size)
        if earlier is None or earlier.path == path:
            # (the same path: another front end's start-up reconciliation indexed our file)
            return STATUS_SUCCESS
        moved = Received(self.spool.root / path, received.size, digest)
        status = self._received_before(earlier, moved, header, sender)
        self._discard(path)  # (a collision has moved it into quarantine already)
        return status

    def acknowledge_other(
        self, received: Received, header: ReceivedHeader, sender: Requestor
    ) -> Status:
        """Record an object that is not CT (keep it if configured) and return Success."""
        reason = not_ct_reason(header.sop_class_uid) or ""
        uid = header.sop_instance_uid
        path, written = "", False
        if self.keep_other_objects:
            ids = (header.study_instance_uid, header.series_instance_uid, uid)
            path = self.spool.kept_other(received.digest, *ids) or ""  # a resend: no 2nd copy
            if not path:
                path, refusal = self._write(self.spool.adopt_other, received, header, sender)
                if refusal is not None:
                    return refusal
                written = True
        try:
            record_other_object(
                self.db,
                calling_ae_title=sender.ae_title,
                sop_class_uid=header.sop_class_uid,
                sop_instance_uid=uid,
                series_instance_uid=header.series_instance_uid,
                study_instance_uid=header.study_instance_uid,
                modality=header.modality,
                reason=reason,
                size_bytes=received.size,
                path=path,
            )
        except Exception as exc:
            if written:
                self._discard(path)
            reason = f"recording in the database failed: {exc}"
            return self._fail(sender, uid, reason, received.size)
        log.info(
            "C-STORE %s (series %s, %s) from %s at %s acknowledged, %s: %s",
            uid,
            header.series_instance_uid,
            header.modality or "no modality",
            sender.ae_title,
            sender.address,
            f"kept as {path}" if path else "not kept",
            reason,
        )
        return STATUS_SUCCESS

    def refuse(
        self, received: Received, sender: Requestor, uid: str, status: int, reason: str
    ) -> Status:
        """Refuse with ``status``: log one line, quarantine the bytes, record the reason."""
        log.warning(
            "C-STORE %s from %s at %s refused (0x%04X): %s",
            uid or "?",
            sender.ae_title,
            sender.address,
            status,
            reason,
        )
        usable = received.path is not None and received.path.exists()
        kept = self.spool.quarantine(received.path, uid or "unknown") if usable else Quarantined()
        if kept.not_kept:
            reason = f"{reason} (bytes not quarantined: {kept.not_kept})"
        self._record(sender, uid, status, reason, received.size, kept.path)
        # The refusals stay on record without the paths of files deleted to make room; ours
        # too, if another refusal deleted it before it was recorded.
        gone = [
            *kept.evicted,
            *([kept.path] if kept.path and not self.spool.exists(kept.path) else []),
        ]
        if gone:
            try:
                forget_quarantine_paths(self.db, gone)
            except Exception as exc:
                log.error("could not clear the records of deleted quarantine files: %s", exc)
        return _status(status)

    def _write(
        self,
        adopt: Callable[[Path, str, str, str], str],
        received: Received,
        header: ReceivedHeader,
        sender: Requestor,
    ) -> tuple[str, Status | None]:
        """``(path, None)`` once ``adopt`` (a :class:`Spool` method) has moved the received
        file durably into place, or ``("", refusal)``."""
        uid = header.sop_instance_uid
        ids = (header.study_instance_uid, header.series_instance_uid, uid)
        try:
            return adopt(received.path, *ids), None
        except SpoolFullError as exc:
            log.error("C-STORE %s from %s refused: %s", uid, sender.ae_title, exc)
            reason = f"disk full: {exc}"
            self._record(sender, uid, STATUS_OUT_OF_RESOURCES, reason, received.size)
            return "", _status(STATUS_OUT_OF_RESOURCES)
        except OSError as exc:
            reason = f"writing the file failed: {exc}"
            return "", self._fail(sender, uid, reason, received.size, exc)

    def _received_before(
        self,
        earlier: InstanceRecord,
        received: Received,
        header: ReceivedHeader,
        sender: Requestor,
    ) -> Status:
        if self._same_content(earlier, received.digest):
            log.debug("C-STORE %s: the same bytes as received before", header.sop_instance_uid)
            try:  # the earlier arrival may be a moment old: its name durable before Success
                self.spool.sync_folder(earlier.path)
            except OSError as exc:
                uid = header.sop_instance_uid
                return self._fail(sender, uid, str(exc), received.size, exc)
            return STATUS_SUCCESS
        reason = (
            f"SOP Instance UID received before with other content: {earlier.size_bytes} bytes "
            f"in series {earlier.series_instance_uid} first, now {received.size} bytes in series "
            f"{header.series_instance_uid}; the first is kept"
        )
        return self.refuse(
            received, sender, header.sop_instance_uid, STATUS_DUPLICATE_SOP_INSTANCE, reason
        )

    def _same_content(self, earlier: InstanceRecord, digest: str) -> bool:
        if earlier.sha256:
            return earlier.sha256 == digest
        # Recorded before the node kept digests: compare with its file, if it can be read.
        try:
            return file_digest(self.spool.root / earlier.path) == digest
        except OSError:
            return False

    def _unrecord(
        self,
        path: str,
        earlier: InstanceRecord | None,
        sender: Requestor,
        uid: str,
        exc: OSError,
        size: int,
    ) -> Status:
        """The file's name could not be made durable: its record (if it was recorded now) and
        the file go, and the caller is told to send again."""
        if earlier is None:
            try:
                forget_instances(self.db, [uid])
            except Exception as forget_exc:
                log.error("could not remove the record of %s: %s", uid, forget_exc)
                # a record of a whole file; the sender's next attempt is a harmless resend
        if earlier is None or earlier.path != path:
            self._discard(path)
        return self._fail(sender, uid, f"writing the file failed: {exc}", size, exc)

    def _discard(self, path: str) -> None:
        if not self.spool.remove(path):
            log.error("could not remove %s, which is not recorded; remove it by hand", path)

    def _fail(
        self, sender: Requestor, uid: str, reason: str, size: int, cause: Exception | None = None
    ) -> Status:
        """Answer 0x0110 (processing failure), or 0xA700 (out of resources) when ``cause``
        is a full disk: the sender is told to send again later, not that the object is bad."""
        status = STATUS_OUT_OF_RESOURCES if out_of_space(cause) else STATUS_PROCESSING_FAILURE
        if status == STATUS_OUT_OF_RESOURCES:
            reason = f"disk full: {reason}"
        log.error("C-STORE %s from %s: %s", uid, sender.ae_title, reason)
        self._record(sender, uid, status, reason, size)
        return _status(status)

    def _record(
        self, sender: Requestor, uid: str, status: int, reason: str, size: int, path: str = ""
    ) -> None:
        try:
            record_rejection(
                self.db,
                calling_ae_title=sender.ae_title,
                peer_address=sender.address,
                status=status,
                reason=reason,
                sop_instance_uid=uid,
                quarantine_path=path,
                size_bytes=size,
            )
        except Exception as exc:
            log.error("could not record the refusal of %s: %s", uid or "?", exc)


def received_instance(
    header: ReceivedHeader,
    *,
    calling_ae_title: str,
    transfer_syntax: str,
    path: str,
    size_bytes: int,
    sha256: str,
) -> ReceivedInstance:
    """The record of a CT object written to ``path`` (also used for files found at start-up)."""
    return ReceivedInstance(
        sop_instance_uid=header.sop_instance_uid,
        sop_class_uid=header.sop_class_uid,
        series_instance_uid=header.series_instance_uid,
        study_instance_uid=header.study_instance_uid,
        transfer_syntax_uid=transfer_syntax,
        modality=header.modality,
        accession_number=header.accession_number,
        series_number=header.series_number,
        path=path,
        size_bytes=size_bytes,
        calling_ae_title=calling_ae_title,
        sha256=sha256,
        temporal_positions=header.temporal_positions,
        images_in_acquisition=header.images_in_acquisition,
        frames=header.frames,
        slice_position_mm=header.slice_position_mm,
    )


#: PostgreSQL's SQLSTATE for a full disk (class 53, insufficient resources).
_PG_DISK_FULL = "53100"


def out_of_space(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what it wraps: SQLAlchemy's ``orig``, a ``__cause__``) says the
    file system is full: ENOSPC or EDQUOT, SQLite's "database or disk is full", PostgreSQL's
    disk_full."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "database or disk is full" in str(exc):
            return True
        if getattr(exc, "sqlstate", None) == _PG_DISK_FULL:
            return True
        if getattr(exc, "pgcode", None) == _PG_DISK_FULL:
            return True
        exc = getattr(exc, "orig", None) or exc.__cause__
    return False


def _status(status: int) -> Dataset:
    reply = Dataset()
    reply.Status = status
    reply.ErrorComment = ERROR_COMMENTS[status]
    return reply
