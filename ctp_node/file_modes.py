"""Owner-only files and folders: what the node writes below ``storage.root`` (received images,
quarantined objects, results) and its SQLite database hold patient data, so no other user of
the machine may read them, whatever the umask of the shell or service that started the node.

Modes are set explicitly (``chmod`` after creating), since ``mkdir`` and ``open`` only apply
the mode they are given through the umask. Only what the node itself creates is changed, and,
at start-up, ``storage.root`` and the folders directly below it (:func:`restrict_storage_root`).
Standard library only, so that every stage may use it.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

FILE_MODE = 0o600
"""Mode of every file the node writes: read and write for its own user only."""
FOLDER_MODE = 0o700
"""Mode of every folder the node creates: its own user only."""


def make_folders(folder: Path) -> None:
    """Create ``folder`` and its missing parents, each with :data:`FOLDER_MODE`. Folders that
    exist already are left as they are (they may be the administrator's, e.g. ``/var/lib``)."""
    folder = Path(folder)
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=FOLDER_MODE)
        except FileExistsError:
            continue  # another thread or process created it (with this mode, if the node)
        os.chmod(path, FOLDER_MODE)


def create_file(path: Path, flags: int) -> int:
    """``os.open(path, flags | O_CREAT)`` with :data:`FILE_MODE`; returns the descriptor.

    Pass ``os.O_EXCL`` in ``flags`` to fail if the file exists."""
    fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def restrict_tree(folder: Path) -> None:
    """:data:`FILE_MODE` for every file below ``folder`` and :data:`FOLDER_MODE` for it and
    every folder below it (files written by libraries: pydicom, matplotlib). Links are not
    followed."""
    folder = Path(folder)
    os.chmod(folder, FOLDER_MODE)
    for parent, folders, files in os.walk(folder):
        for name in folders:
            _chmod(Path(parent) / name, FOLDER_MODE)
        for name in files:
            _chmod(Path(parent) / name, FILE_MODE)


def restrict_storage_root(root: Path) -> None:
    """At start-up: create ``root`` owner-only, or make it and the folders directly below it
    owner-only if they are not (an older release, or a folder made by hand); logged once.

    With ``root`` at 0700, nothing below it is reachable by another user, even a file an
    earlier release wrote 0644; deeper files keep their modes, so that start-up does not walk
    the whole spool."""
    root = Path(root)
    make_folders(root)
    changed = []
    for folder in [root, *(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())]:
        mode = stat.S_IMODE(folder.stat().st_mode)
        if mode == FOLDER_MODE:
            continue
        try:
            os.chmod(folder, FOLDER_MODE)
        except PermissionError as exc:  # another user's folder: say so, keep serving
            log.error("cannot make %s owner-only (%04o): %s", folder, mode, exc.strerror)
            continue
        changed.append(f"{'.' if folder == root else folder.name} {mode:04o}")
    if changed:
        log.warning(
            "storage.root %s: folder modes set to %04o (owner only), they were: %s",
            root,
            FOLDER_MODE,
            ", ".join(changed),
        )


def restrict_file(path: Path) -> int | None:
    """Set :data:`FILE_MODE` on an existing file; returns its former mode if it was another,
    None if it had this mode or does not exist."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return None
    if mode == FILE_MODE:
        return None
    os.chmod(path, FILE_MODE)
    return mode


def _chmod(path: Path, mode: int) -> None:
    try:
        if not path.is_symlink():
            os.chmod(path, mode)
    except FileNotFoundError:
        pass  # removed meanwhile
