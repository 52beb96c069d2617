"""The durable spool: received bytes are on disk (fsynced, renamed into place) before the node
answers Success.

Layout below ``storage.root``::

    spool/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm
    spool/.incoming/          partial writes; never read
    other/<Study…>/<Series…>/<SOP…>.dcm   objects that are not CT, when they are kept
    quarantine/<date>/        refused objects, kept for a person to look at

A file is never overwritten: when ``<SOPInstanceUID>.dcm`` is taken (by an earlier object with
the same UID, or by one arriving at the same moment on another association), the new one is
written beside it as ``<SOPInstanceUID>-<random>.dcm``. Each writer thus owns the file it
wrote, and the database record (the insert decides which object an UID names) says which file
is the instance; a writer whose object was not recorded removes its own file.

Files are written 0600 and folders created 0700 (owner only, whatever the umask): they hold
patient data (:mod:`ctp_node.file_modes`). The quarantine is held within
``storage.retention.quarantine_max_bytes`` as it is written
(:mod:`ctp_node.receive.quarantine`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ctp_node.file_modes import create_file, make_folders
from ctp_node.receive.quarantine import QuarantineBound, Quarantined
from ctp_node.store.models import utcnow

log = logging.getLogger(__name__)

SPOOL = "spool"

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class SpoolFullError(OSError):
    """Free space below the configured minimum."""


def content_digest(data: bytes) -> str:
    """SHA-256 of ``data`` as 64 hexadecimal digits: tells a harmless resend from a collision."""
    return hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    """SHA-256 of the file at ``path`` as 64 hexadecimal digits (read in blocks)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class DigestingFile:
    """A file being received below ``spool/.incoming`` (pynetdicom's temporary file, written
    in order and never read back while it arrives) whose SHA-256 is computed from the bytes
    as they are written, so that the received file is not read again for its digest.

    Parameters
    ----------
    handle : the open temporary file (``tempfile.NamedTemporaryFile``, binary).
    """

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self._sha256 = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._sha256.update(data)
        return self._handle.write(data)

    @property
    def digest(self) -> str:
        """SHA-256 of the bytes written so far, as 64 hexadecimal digits."""
        return self._sha256.hexdigest()

    def __getattr__(self, name: str) -> object:
        # name, file (flushed after each fragment), close: those of the temporary file
        return getattr(self._handle, name)


def is_valid_uid(value: str) -> bool:
    """A DICOM UID: digits and dots, at most 64 characters (also keeps paths safe)."""
    return 0 < len(value) <= 64 and _UID.match(value) is not None


class Spool:
    """Durable writer of received objects below ``root``.

    Parameters
    ----------
    root : the storage root (``storage.root``).
    min_free_bytes : refuse to write when the file system has less free space than this.
    quarantine_max_bytes : most bytes ``quarantine/`` may hold (None: no bound); the oldest
        quarantined files are deleted to make room (``storage.retention.quarantine_max_bytes``).
    """

    def __init__(
        self, root: Path, min_free_bytes: int = 0, quarantine_max_bytes: int | None = None
    ) -> None:
        self.root = Path(root)
        self.min_free_bytes = min_free_bytes
        self.incoming = self.root / SPOOL / ".incoming"
        make_folders(self.incoming)
        make_folders(self.root / "quarantine")
        self.quarantine_bound = QuarantineBound(self.root, quarantine_max_bytes)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def store(self, data: bytes, study_uid: str, series_uid: str, sop_uid: str) -> str:
        """Write ``data`` durably into the spool as a new file; returns its path relative to
        the root. Never overwrites a file (see the module's docstring).

        Raises
        ------
        SpoolFullError : when free space is below the minimum (nothing written).
        ValueError : when a UID is not a valid DICOM UID.
        OSError : when the write itself fails (the partial file is removed).
        """
        return self._write_new(data, self._below(SPOOL, study_uid, series_uid, sop_uid))

    def keep_other(self, data: bytes, study_uid: str, series_uid: str, sop_uid: str) -> str:
        """Write an object that is not CT durably below ``other/`` as a new file; returns its
        path relative to the root. Raises the same errors as :meth:`store`."""
        return self._write_new(data, self._below("other", study_uid, series_uid, sop_uid))

    def kept_other(self, digest: str, study_uid: str, series_uid: str, sop_uid: str) -> str | None:
        """The path of the file :meth:`keep_other` or :meth:`adopt_other` wrote before with
        the SHA-256 ``digest`` (a resend), or None."""
        relative = self._below("other", study_uid, series_uid, sop_uid)
        first = self.root / relative
        if first.is_file() and file_digest(first) == digest:
            return relative.as_posix()
        return None

    def adopt(
        self,
        source: Path,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        *,
        sync_folder: bool = True,
    ) -> str:
        """Move a received file (written below ``spool/.incoming`` as it arrived) durably
        into the spool as a new file; returns its path relative to the root. The same
        errors as :meth:`store`; on any of them ``source`` stays where it was.

        Its bytes are on disk before it takes its name in the spool, so that a name in the
        spool never holds a partial file. With ``sync_folder`` False, the new name itself is
        durable only after :meth:`sync_folder` (which the caller may overlap with its record's
        commit)."""
        relative = self._below(SPOOL, study_uid, series_uid, sop_uid)
        return self._adopt(source, relative, sync_folder)

    def adopt_other(self, source: Path, study_uid: str, series_uid: str, sop_uid: str) -> str:
        """:meth:`adopt` below ``other/`` (an object that is not CT, kept)."""
        return self._adopt(source, self._below("other", study_uid, series_uid, sop_uid))

    def spooled_files(self) -> Iterator[tuple[str, str]]:
        """``(series folder name, path relative to the root)`` of every file in the spool
        (``spool/<study>/<series>/*.dcm``; partial writes are not among them)."""
        for path in sorted((self.root / SPOOL).glob("*/*/*.dcm")):
            yield path.parent.name, path.relative_to(self.root).as_posix()

    def remove_partial_writes(self) -> int:
        """Remove what writes interrupted by a crash left in ``spool/.incoming``; returns how
        many files. Only at start-up: a partial write is never a received object."""
        # *.part: the node's own writes; receiving-*.dcm: data sets pynetdicom was receiving.
        partial = [*self.incoming.glob("*.part"), *self.incoming.glob("receiving-*")]
        for path in partial:
            path.unlink(missing_ok=True)
        return len(partial)

    def read(self, relative: str) -> bytes:
        return (self.root / relative).read_bytes()

    def exists(self, relative: str) -> bool:
        return (self.root / relative).is_file()

    def remove(self, relative: str) -> bool:
        """Remove a file this node wrote and did not record (its object was not accepted);
        False when it cannot be removed."""
        try:
            (self.root / relative).unlink(missing_ok=True)
        except OSError:
            return False
        return True

    def quarantine(self, source: bytes | Path, label: str) -> Quarantined:
        """Keep refused bytes for inspection, within the quarantine's bound: the oldest
        quarantined files are deleted to make room, and bytes larger than the bound are not
        kept (one log line says so). ``source`` is the bytes, or a received file (below
        ``spool/.incoming``) that is moved in. Returns the path written (relative to the root;
        "" when the bytes are not kept, also when the disk is full) and the files deleted."""
        size = len(source) if isinstance(source, bytes) else os.path.getsize(source)
        evicted, not_kept = self.quarantine_bound.make_room(size)
        if not_kept:
            log.warning("refused object %s not quarantined: %s", label, not_kept)
            return Quarantined(not_kept=not_kept)
        deleted = self._delete_quarantined(evicted)
        target = self._quarantine_path(label)
        try:
            if isinstance(source, bytes):
                path = self._write_new(source, target)
            else:
                make_folders((self.root / target).parent)
                os.replace(source, self.root / target)
                path = target.as_posix()
        except OSError as exc:
            self.quarantine_bound.abandoned(size)
            return Quarantined("", deleted, f"it could not be written: {exc}")
        self.quarantine_bound.written(path, size)
        return Quarantined(path, deleted)

    def quarantine_file(self, relative: str, label: str) -> str:
        """Move a file of the spool into quarantine; returns its new path relative to the root."""
        target = self._quarantine_path(label)
        make_folders((self.root / target).parent)
        os.replace(self.root / relative, self.root / target)
        _fsync_dir((self.root / target).parent)
        self.quarantine_bound.moved_in(target.as_posix(), (self.root / target).stat().st_size)
        return target.as_posix()

    def _delete_quarantined(self, paths: list[str]) -> tuple[str, ...]:
        """Delete the oldest quarantined files to make room; returns those now gone."""
        if not paths:
            return ()
        gone = []
        for relative in paths:
            try:
                (self.root / relative).unlink(missing_ok=True)
                gone.append(relative)
            except OSError as exc:
                log.error("could not delete %s from quarantine: %s", relative, exc)
        log.info(
            "quarantine at storage.retention.quarantine_max_bytes (%d): %d oldest file(s) "
            "deleted to make room, e.g. %s",
            self.quarantine_bound.max_bytes,
            len(gone),
            paths[0],
        )
        return tuple(gone)

    def _quarantine_path(self, label: str) -> Path:
        safe = re.sub(r"[^0-9A-Za-z.]", "_", label)[:64] or "object"
        return Path("quarantine") / utcnow().strftime("%Y%m%d") / f"{safe}-{uuid.uuid4().hex}.dcm"

    @staticmethod
    def _below(folder: str, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        for uid in (study_uid, series_uid, sop_uid):
            if not is_valid_uid(uid):
                raise ValueError(f"not a valid DICOM UID: {uid[:80]!r}")
        return Path(folder) / study_uid / series_uid / f"{sop_uid}.dcm"

    def _check_space(self, size: int) -> None:
        free = self.free_bytes()
        if free - size < self.min_free_bytes:
            raise SpoolFullError(
                f"only {free // 1_000_000} MB free below {self.root}; "
                f"storage.min_free_bytes is {self.min_free_bytes // 1_000_000} MB"
            )

    def _write_new(self, data: bytes, relative: Path) -> str:
        """Write ``data`` to ``relative``, or beside it when that name is taken; never replaces
        another writer's file. Returns the path written, relative to the root."""
        self._check_space(len(data))
        partial = self._write_partial(data)
        final = None
        try:
            final = _reserve(self.root / relative)
            os.replace(partial, final)  # replaces only our own empty placeholder
        except BaseException:
            partial.unlink(missing_ok=True)
            if final is not None:
                final.unlink(missing_ok=True)
            raise
        _fsync_dir(final.parent)
        return final.relative_to(self.root).as_posix()

    def sync_folder(self, relative: str) -> None:
        """Make the name of the file at ``relative`` (its folder's entry) durable."""
        _fsync_dir((self.root / relative).parent)

    def _adopt(self, source: Path, relative: Path, sync_folder: bool = True) -> str:
        # The bytes are already on this file system: only the minimum free space is checked.
        self._check_space(0)
        with open(source, "rb+") as handle:
            _fdatasync(handle.fileno())
        final = _reserve(self.root / relative)
        try:
            os.replace(source, final)  # replaces only our own empty placeholder
        except BaseException:
            final.unlink(missing_ok=True)
            raise
        if sync_folder:
            _fsync_dir(final.parent)
        return final.relative_to(self.root).as_posix()

    def _write_partial(self, data: bytes) -> Path:
        partial = self.incoming / f"{uuid.uuid4().hex}.part"
        try:
            with open(create_file(partial, os.O_WRONLY | os.O_EXCL), "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return partial


def _reserve(final: Path) -> Path:
    """Create ``final`` empty and exclusively, or a new name beside it when it exists."""
    make_folders(final.parent)
    candidate = final
    while True:
        try:
            os.close(create_file(candidate, os.O_EXCL | os.O_WRONLY))
            return candidate
        except FileExistsError:
            candidate = final.with_name(f"{final.stem}-{uuid.uuid4().hex[:12]}{final.suffix}")


def _fdatasync(fd: int) -> None:
    # The data and what reading it needs (its size), not its times: one flush less where the
    # system has fdatasync (Linux); fsync elsewhere.
    getattr(os, "fdatasync", os.fsync)(fd)


def _fsync_dir(folder: Path) -> None:
    # Make the rename itself durable.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
