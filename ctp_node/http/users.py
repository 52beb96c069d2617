"""The console's users (``http.auth.mode: users``): a YAML file of ``name: <argon2id hash>``
lines (``http.auth.users_file``), written by ``ctp-node user add|remove`` and read by the
console when it changes.

Passwords are hashed with argon2id (argon2-cffi's :class:`~argon2.PasswordHasher`, its
default parameters: salted, memory-hard); the file never holds a password. It is owner-only
(0600): a hash can still be guessed at offline.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path

import yaml
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ctp_node.file_modes import create_file, make_folders, restrict_file

log = logging.getLogger(__name__)

#: A user's name: what ``requested_by`` and the audit trail record (``jobs.requested_by`` keeps
#: 32 characters, ``console `` included).
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,23}$")
#: Fewest characters of a password ``user add`` accepts.
PASSWORD_MIN_CHARS = 8

_HASHER = PasswordHasher()
#: Verified against when the name is unknown, so that an unknown name takes as long to refuse
#: as a wrong password (the time must not tell which names exist).
_DUMMY_HASH = _HASHER.hash("not a password of anyone")


class UsersFileError(Exception):
    """The users file cannot be read or a request about it is refused; a sentence."""


def check_name(name: str) -> str:
    """``name`` if it is a valid user name, else :class:`UsersFileError` with a sentence."""
    if not NAME.match(name):
        raise UsersFileError(
            f"{name!r} is not a user name: 1 to 24 letters, digits, '.', '_', '@' or '-', "
            "beginning with a letter or digit"
        )
    return name


def read_users(path: Path) -> dict[str, str]:
    """The users in ``path`` by name, with their hashes; ``{}`` when the file does not exist.
    A file other users may read is made owner-only (logged)."""
    was = restrict_file(path)
    if was is not None:
        log.warning("users file %s made owner-only (0600), it was %04o", path, was)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsersFileError(f"cannot read the users file {path}: {exc.strerror}") from None
    try:
        users = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        raise UsersFileError(f"the users file {path} is not YAML") from None
    if not isinstance(users, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in users.items()
    ):
        raise UsersFileError(f"the users file {path} is not a list of `name: hash` lines")
    return users


def write_users(path: Path, users: dict[str, str]) -> None:
    """Replace ``path`` with ``users`` (owner-only; renamed into place, so that a console
    reading it meanwhile sees the old or the new file, never half of one)."""
    make_folders(path.parent)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    text = "# ctp-node console users: name: argon2 hash (ctp-node user add|remove)\n"
    text += yaml.safe_dump(dict(sorted(users.items())), default_flow_style=False)
    fd = create_file(temporary, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(temporary, path)


def add_user(path: Path, name: str, password: str) -> bool:
    """Add ``name`` with ``password`` (hashed), or give it a new password; True when it was
    there already."""
    check_name(name)
    if len(password) < PASSWORD_MIN_CHARS:
        raise UsersFileError(f"a password needs at least {PASSWORD_MIN_CHARS} characters")
    users = read_users(path)
    existed = name in users
    users[name] = _HASHER.hash(password)
    write_users(path, users)
    return existed


def remove_user(path: Path, name: str) -> None:
    """Remove ``name``; :class:`UsersFileError` when there is no such user."""
    users = read_users(path)
    if name not in users:
        raise UsersFileError(f"there is no user {name!r} in {path}")
    del users[name]
    write_users(path, users)


class Users:
    """The users file as the console reads it: again whenever it changed, so that ``user add``
    and ``user remove`` need no restart."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seen: tuple[int, int] | None = None
        self._users: dict[str, str] = {}

    def _current(self) -> dict[str, str]:
        """The users, read again when the file changed.

        Raises
        ------
        UsersFileError : it cannot be read, or is not a users file.
        """
        try:
            stat = self.path.stat()
            key = (stat.st_mtime_ns, stat.st_ino)
        except FileNotFoundError:
            key = (0, 0)
        with self._lock:
            if key != self._seen:
                self._users, self._seen = read_users(self.path), key
            return self._users

    def exists(self, name: str) -> bool:
        return name in self._current()

    def verify(self, name: str, password: str) -> bool:
        """``password`` is ``name``'s (the same time is taken for an unknown name)."""
        hashed = self._current().get(name)
        try:
            return _HASHER.verify(hashed or _DUMMY_HASH, password) and hashed is not None
        except (VerificationError, InvalidHashError):
            return False
