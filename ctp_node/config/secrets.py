"""Secrets — the database password, a DICOMweb destination's or a webhook's bearer token, the
SMTP password — read from where the configuration says (a ``*_file`` or a ``*_env`` key) rather
than from the YAML. A secret is never put into the configuration itself, logged or printed: it
is handed to the code that uses it, and every problem names the key, not the secret."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ctp_node.config.destinations import DestinationConfig
from ctp_node.config.notifications import NotificationsConfig
from ctp_node.config.problems import ConfigError, ConfigProblem
from ctp_node.config.schema import Config, DatabaseConfig


def database_password(database: DatabaseConfig) -> str | None:
    """The password to put into ``database.url``, or None when the configuration gives none
    apart from the URL's own.

    Raises
    ------
    ConfigError : the file cannot be read or is empty, or the variable is not set or empty.
    """
    return secret_value(
        "database",
        ("password_file", database.password_file),
        ("password_env", database.password_env),
    )


def bearer_token(destination: DestinationConfig, key_path: str) -> str | None:
    """The bearer token of a DICOMweb destination (``key_path``: ``destinations.N``), or
    None when it has none.

    Raises
    ------
    ConfigError : the file cannot be read or is empty, or the variable is not set or empty.
    """
    return secret_value(
        key_path,
        ("bearer_token_file", destination.bearer_token_file),
        ("bearer_token_env", destination.bearer_token_env),
    )


def notification_secrets(notifications: NotificationsConfig) -> dict[str, str]:
    """The notification channels' secrets by channel (``webhook:<name>``: its bearer token,
    ``email``: the SMTP password); a channel without one is left out.

    Raises
    ------
    ConfigError : a file cannot be read or is empty, or a variable is not set or empty.
    """
    secrets = {}
    for index, hook in enumerate(notifications.webhooks):
        token = secret_value(
            f"notifications.webhooks.{index}",
            ("bearer_token_file", hook.bearer_token_file),
            ("bearer_token_env", hook.bearer_token_env),
        )
        if token is not None:
            secrets[f"webhook:{hook.name}"] = token
    email = notifications.email
    if email is not None:
        password = secret_value(
            "notifications.email",
            ("password_file", email.password_file),
            ("password_env", email.password_env),
        )
        if password is not None:
            secrets["email"] = password
    return secrets


def secret_value(
    section: str, file: tuple[str, Path | None], env: tuple[str, str | None]
) -> str | None:
    """A secret read from a file (its final newline is not part of it) or else from an
    environment variable, each given as (key, value) of the configuration ``section``; None
    when neither is given. Problems name the key, never the secret."""
    (file_key, path), (env_key, variable) = file, env
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise _problem(section, file_key, f"no file at {path}") from None
        except IsADirectoryError:
            raise _problem(section, file_key, f"{path} is a folder, not a file") from None
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
            raise _problem(section, file_key, f"cannot read {path}: {why}") from None
        secret = text.removesuffix("\n").removesuffix("\r")
        if not secret:
            raise _problem(section, file_key, f"{path} is empty")
        return secret
    if variable is not None:
        secret = os.environ.get(variable)
        if secret is None:
            raise _problem(section, env_key, f"the environment variable {variable} is not set")
        if not secret:
            raise _problem(section, env_key, f"the environment variable {variable} is empty")
        return secret
    return None


def password_file_warnings(config: Config) -> list[ConfigProblem]:
    """A warning for each secret file (the database password, a destination's or a webhook's
    token, the SMTP password) that other users than its owner can read."""
    files = [("database.password_file", config.database.password_file)]
    files += [
        (f"destinations.{index}.bearer_token_file", d.bearer_token_file)
        for index, d in enumerate(config.destinations)
    ]
    notifications = config.notifications
    files += [
        (f"notifications.webhooks.{index}.bearer_token_file", hook.bearer_token_file)
        for index, hook in enumerate(notifications.webhooks)
    ]
    if notifications.email is not None:
        files.append(("notifications.email.password_file", notifications.email.password_file))
    return [
        warning
        for key_path, path in files
        if path is not None and (warning := _open_file_warning(key_path, path)) is not None
    ]


def _open_file_warning(key_path: str, path: Path) -> ConfigProblem | None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None  # reported as a problem when the secret is read
    if not mode & 0o077:
        return None
    return ConfigProblem(
        key_path,
        f"{path} is open to other users than its owner ({mode:04o}); "
        "chmod 600 it so that only the node's user can read it",
    )


def _problem(section: str, key: str, message: str) -> ConfigError:
    return ConfigError([ConfigProblem(f"{section}.{key}", message)])
