"""The database password, read from where the configuration says (``database.password_file``
or ``database.password_env``) rather than from the YAML. It is never put into the
configuration itself, logged or printed: :func:`database_password` hands it to the code that
opens the database, and every problem names the key, not the secret."""

from __future__ import annotations

import os
import stat

from ctp_node.config.problems import ConfigError, ConfigProblem
from ctp_node.config.schema import DatabaseConfig


def database_password(database: DatabaseConfig) -> str | None:
    """The password to put into ``database.url``, or None when the configuration gives none
    apart from the URL's own.

    Raises
    ------
    ConfigError : the file cannot be read or is empty, or the variable is not set or empty.
    """
    if database.password_file is not None:
        path = database.password_file
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise _problem("password_file", f"no file at {path}") from None
        except IsADirectoryError:
            raise _problem("password_file", f"{path} is a folder, not a file") from None
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
            raise _problem("password_file", f"cannot read {path}: {why}") from None
        password = text.removesuffix("\n").removesuffix("\r")
        if not password:
            raise _problem("password_file", f"{path} is empty")
        return password
    if database.password_env is not None:
        password = os.environ.get(database.password_env)
        if password is None:
            raise _problem(
                "password_env", f"the environment variable {database.password_env} is not set"
            )
        if not password:
            raise _problem(
                "password_env", f"the environment variable {database.password_env} is empty"
            )
        return password
    return None


def password_file_warnings(database: DatabaseConfig) -> list[ConfigProblem]:
    """A warning when the password file can be read by other users than its owner."""
    if database.password_file is None:
        return []
    try:
        mode = stat.S_IMODE(database.password_file.stat().st_mode)
    except OSError:
        return []  # reported as a problem by database_password
    if not mode & 0o077:
        return []
    return [
        ConfigProblem(
            "database.password_file",
            f"{database.password_file} is open to other users than its owner ({mode:04o}); "
            "chmod 600 it so that only the node's user can read it",
        )
    ]


def _problem(key: str, message: str) -> ConfigError:
    return ConfigError([ConfigProblem(f"database.{key}", message)])
