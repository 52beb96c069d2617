"""The quarantine's size bound, held when refused bytes are written, not only when retention
runs: a misconfigured sender refusing object after object would otherwise fill the disk
within seconds (200 refused objects put 200 MB there in 6 s), long before retention's next
run (``storage.retention.interval_s``).

:class:`QuarantineBound` keeps a running total of the bytes in ``quarantine/`` and its files
oldest first, from one scan at start-up, and makes room for each new file by deleting the
oldest ones, the same choice retention makes
(:func:`~ctp_node.retention.disk.oldest_beyond_limit`). The refusals' records stay; the
paths of deleted files are cleared in them by the caller.

Files deleted by someone else (retention by age, a person) stay counted until their turn to
go comes; as retention deletes the oldest first too, that turn is usually the next one.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from ctp_node.retention.disk import oldest_beyond_limit, quarantined_files


@dataclass(frozen=True)
class Quarantined:
    """What keeping refused bytes did.

    Attributes
    ----------
    path : the file written, relative to storage.root; "" when the bytes were not kept.
    evicted : older quarantined files deleted to make room (relative to storage.root); the
        records that point at them should forget them.
    not_kept : why the bytes were not kept, when they were not ("" otherwise).
    """

    path: str = ""
    evicted: tuple[str, ...] = ()
    not_kept: str = ""


class QuarantineBound:
    """The bytes in ``root/quarantine/``, held at or under ``max_bytes`` (None: no bound).

    Thread-safe: associations refuse objects at the same time. A size is counted from the
    moment room is made for it (:meth:`make_room`) until the write is settled
    (:meth:`written` or :meth:`abandoned`), so that concurrent writes cannot pass the bound
    together.
    """

    def __init__(self, root: Path, max_bytes: int | None) -> None:
        self.max_bytes = max_bytes
        files = quarantined_files(Path(root))
        self._files: deque[tuple[str, int]] = deque((path, size) for _, path, size in files)
        self._bytes = sum(size for _, size in self._files)
        self._lock = threading.Lock()

    @property
    def total_bytes(self) -> int:
        """Bytes counted now: the files in quarantine and the writes in progress."""
        with self._lock:
            return self._bytes

    def make_room(self, size: int) -> tuple[list[str], str]:
        """Count ``size`` bytes about to be written, taking the oldest files off the count
        until the total is within the bound. Returns ``(paths to delete, "")``, or
        ``([], why)`` when these bytes cannot be kept at all (nothing is counted then)."""
        with self._lock:
            limit = self.max_bytes
            if limit is None:
                self._bytes += size
                return [], ""
            if size > limit:
                return [], (
                    f"{size} bytes, more than storage.retention.quarantine_max_bytes ({limit})"
                )
            total = self._bytes + size
            over = oldest_beyond_limit((s for _, s in self._files), total, limit)
            freed = sum(self._files[i][1] for i in range(over))
            if total - freed > limit:  # writes in progress hold the rest of the bound
                return [], (
                    f"{size} bytes; other refused objects being written fill "
                    f"storage.retention.quarantine_max_bytes ({limit})"
                )
            evicted = [self._files.popleft()[0] for _ in range(over)]
            self._bytes = total - freed
            return evicted, ""

    def written(self, path: str, size: int) -> None:
        """The bytes counted by :meth:`make_room` are now the newest file, ``path``."""
        with self._lock:
            self._files.append((path, size))

    def abandoned(self, size: int) -> None:
        """The bytes counted by :meth:`make_room` were not written after all."""
        with self._lock:
            self._bytes -= size

    def moved_in(self, path: str, size: int) -> None:
        """A file was moved into quarantine (no new bytes on disk): counted as the newest.
        The bound is restored by the next write, or by retention at start-up."""
        with self._lock:
            self._bytes += size
            self._files.append((path, size))
