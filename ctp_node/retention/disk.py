"""What the node's files take on disk, folder by folder below ``storage.root``."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

#: The folders below storage.root that hold the node's files (see receive/spool.py).
SPOOL, RESULTS, QUARANTINE, OTHER = "spool", "results", "quarantine", "other"


@dataclass(frozen=True)
class DiskUsage:
    """Bytes of the files in each folder below storage.root, and the file system's free bytes."""

    spool_bytes: int
    results_bytes: int
    quarantine_bytes: int
    other_bytes: int
    free_bytes: int


def measure_disk(root: Path) -> DiskUsage:
    """Sizes of ``spool/``, ``results/``, ``quarantine/`` and ``other/`` below ``root`` (0 for a
    folder that does not exist) and the free bytes of the file system holding ``root``."""
    existing = Path(root)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return DiskUsage(
        *(
            sum(stat.st_size for _, stat in files_below(root / f))
            for f in (SPOOL, RESULTS, QUARANTINE, OTHER)
        ),
        free_bytes=shutil.disk_usage(existing).free,
    )


def files_below(folder: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Every regular file below ``folder`` with its ``stat``; links are not followed, and a
    file that vanishes meanwhile is passed over."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                yield from files_below(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                yield Path(entry.path), entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue


def quarantined_files(root: Path) -> list[tuple[dt.datetime, str, int]]:
    """``(modified, path relative to root, bytes)`` of every file below ``quarantine/``,
    oldest first: the order in which a size limit removes them."""
    return sorted(
        (modified_at(stat), path.relative_to(root).as_posix(), stat.st_size)
        for path, stat in files_below(Path(root) / QUARANTINE)
    )


def oldest_beyond_limit(sizes_oldest_first: Iterable[int], total: int, limit: int | None) -> int:
    """How many of the oldest files (their sizes, oldest first, making up ``total`` bytes
    with whatever else is counted) must go for what remains to be at most ``limit`` bytes;
    0 when ``limit`` is None (no limit). All of them when that is not enough."""
    count = 0
    for size in sizes_oldest_first:
        if limit is None or total <= limit:
            break
        total -= size
        count += 1
    return count


def file_size(path: Path) -> int | None:
    """Bytes of a regular file, None when there is none at ``path``."""
    try:
        return path.stat().st_size
    except (FileNotFoundError, NotADirectoryError):
        return None


def modified_at(stat: os.stat_result) -> dt.datetime:
    """A file's modification time as naive UTC, the form of the database's times."""
    return dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC).replace(tzinfo=None)


def remove_empty_folders(folder: Path, stop: Path) -> None:
    """Remove ``folder`` and then its parents while they are empty, up to (not including)
    ``stop``. A folder that is not empty (something arrived meanwhile) stays."""
    folder, stop = Path(folder), Path(stop)
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except FileNotFoundError:
            pass
        except OSError:  # not empty
            return
        folder = folder.parent
