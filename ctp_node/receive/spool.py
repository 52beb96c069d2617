"""The durable spool: received bytes are on disk (fsynced, renamed into place) before the node
answers Success.

Layout below ``storage.root``::

    spool/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm
    spool/.incoming/          partial writes; never read
    quarantine/<date>/        refused objects, kept for a person to look at
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

from ctp_node.store.models import utcnow

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class SpoolFullError(OSError):
    """Free space below the configured minimum."""


def is_valid_uid(value: str) -> bool:
    """A DICOM UID: digits and dots, at most 64 characters (also keeps paths safe)."""
    return 0 < len(value) <= 64 and _UID.match(value) is not None


class Spool:
    """Durable writer of received objects below ``root``.

    Parameters
    ----------
    root : the storage root (``storage.root``).
    min_free_bytes : refuse to write when the file system has less free space than this.
    """

    def __init__(self, root: Path, min_free_bytes: int = 0) -> None:
        self.root = Path(root)
        self.min_free_bytes = min_free_bytes
        self.incoming = self.root / "spool" / ".incoming"
        self.incoming.mkdir(parents=True, exist_ok=True)
        (self.root / "quarantine").mkdir(parents=True, exist_ok=True)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def store(self, data: bytes, study_uid: str, series_uid: str, sop_uid: str) -> str:
        """Write ``data`` durably into the spool; returns its path relative to the root.

        Raises
        ------
        SpoolFullError : when free space is below the minimum (nothing written).
        ValueError : when a UID is not a valid DICOM UID.
        OSError : when the write itself fails (the partial file is removed).
        """
        for uid in (study_uid, series_uid, sop_uid):
            if not is_valid_uid(uid):
                raise ValueError(f"not a valid DICOM UID: {uid[:80]!r}")
        self._check_space(len(data))
        relative = Path("spool") / study_uid / series_uid / f"{sop_uid}.dcm"
        self._write_then_rename(data, self.root / relative)
        return relative.as_posix()

    def quarantine(self, data: bytes, label: str) -> str:
        """Keep refused bytes for inspection; returns the path relative to the root, or "" when
        even that is impossible (e.g. the disk is full)."""
        safe = re.sub(r"[^0-9A-Za-z.]", "_", label)[:64] or "object"
        relative = (
            Path("quarantine") / utcnow().strftime("%Y%m%d") / f"{safe}-{uuid.uuid4().hex}.dcm"
        )
        try:
            self._check_space(len(data))
            self._write_then_rename(data, self.root / relative)
        except OSError:
            return ""
        return relative.as_posix()

    def _check_space(self, size: int) -> None:
        free = self.free_bytes()
        if free - size < self.min_free_bytes:
            raise SpoolFullError(
                f"only {free // 1_000_000} MB free below {self.root}; "
                f"storage.min_free_bytes is {self.min_free_bytes // 1_000_000} MB"
            )

    def _write_then_rename(self, data: bytes, final: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = self.incoming / f"{uuid.uuid4().hex}.part"
        try:
            with open(partial, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, final)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        _fsync_dir(final.parent)


def _fsync_dir(folder: Path) -> None:
    # Make the rename itself durable.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
