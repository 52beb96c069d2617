"""Secrets read from where the configuration says rather than from the YAML: the database
password (``database.password_file`` or ``database.password_env``) and a DICOMweb
destination's bearer token (``bearer_token_file`` or ``bearer_token_env``). They are never put
into the configuration itself, logged or printed: :func:`database_password` and
:func:`bearer_token` hand them to the code that uses them, and every problem names the key,
not the secret."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ctp_node.config.problems import ConfigError, ConfigProblem
from ctp_node.config.schema import DatabaseConfig, DestinationConfig


def database_password(database: DatabaseConfig) -> str | None:
    """The password to put into ``database.url``, or None when the configuration gives none
    apart from the URL's own.

    Raises
    ------
    ConfigError : the file cannot be read or is empty, or the variable is not set or empty.
    """
    return _secret(database.password_file, database.password_env, "database.password")


def bearer_token(destination: DestinationConfig, key_path: str) -> str | None:
    """The bearer token of a DICOMweb destination (``key_path``: ``destinations.N``), or
    None when it has none.

    Raises
    ------
    ConfigError : the file cannot be read or is empty, or the variable is not set or empty.
    """
    return _secret(
        destination.bearer_token_file, destination.bearer_token_env, f"{key_path}.bearer_token"
    )


def _secret(path: Path | None, variable: str | None, key_stem: str) -> str | None:
    """The secret in file ``path`` or environment variable ``variable`` (at most one is
    given), problems reported at ``{key_stem}_file`` or ``{key_stem}_env``."""
    if path is not None:
        key = f"{key_stem}_file"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise _problem(key, f"no file at {path}") from None
        except IsADirectoryError:
            raise _problem(key, f"{path} is a folder, not a file") from None
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
            raise _problem(key, f"cannot read {path}: {why}") from None
        secret = text.removesuffix("\n").removesuffix("\r")
        if not secret:
            raise _problem(key, f"{path} is empty")
        return secret
    if variable is not None:
        secret = os.environ.get(variable)
        if secret is None:
            raise _problem(f"{key_stem}_env", f"the environment variable {variable} is not set")
        if not secret:
            raise _problem(f"{key_stem}_env", f"the environment variable {variable} is empty")
        return secret
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


def _problem(key_path: str, message: str) -> ConfigError:
    return ConfigError([ConfigProblem(key_path, message)])
