"""Loading a configuration file: YAML, validation, relative paths, every problem at once."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from ctp_node.config.http import is_loopback
from ctp_node.config.problems import ConfigError, ConfigProblem
from ctp_node.config.schema import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_PATH,
    FILE_KEY_PATH,
    SYSTEM_CONFIG_PATH,
    Config,
)
from ctp_node.config.secrets import (
    bearer_token,
    database_password,
    notification_secrets,
    password_file_warnings,
)
from ctp_node.config.values import _SQLITE_URL

# --------------------------------------------------------------------------------------------
# Loading


def default_config_path() -> Path:
    """``$CTP_NODE_CONFIG`` if set and not empty; else ``config/ctp-node.yaml`` when the
    current folder has one (a checkout); else ``/etc/ctp-node/ctp-node.yaml`` (an installed
    node: ``ctp-node status`` without ``--config`` reads the service's configuration)."""
    from_environment = os.environ.get(CONFIG_ENV_VAR, "").strip()
    if from_environment:
        return Path(from_environment)
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else SYSTEM_CONFIG_PATH


def load_config(path: Path | str) -> Config:
    """Read, validate and resolve the configuration file at ``path``.

    An empty file gives every default. Relative ``storage.root``, relative SQLite files in
    ``database.url``, a relative ``database.password_file``, the PEM files of ``node.tls``
    and ``destinations[].tls``, the secret files of ``notifications``, ``http.auth.users_file``,
    the PEM files of ``http.tls`` and a relative
    ``logging.file`` are resolved against the file's folder; ``source_path`` is set to the
    file's absolute path. The secrets (files or variables) are checked to be readable, not
    kept.

    Raises
    ------
    ConfigError
        listing every problem (missing file, YAML syntax, unknown keys, invalid values) with
        its key path; nothing is returned half-valid.
    """
    file_path = Path(path).absolute()
    raw = _read_yaml(file_path)
    problems: list[ConfigProblem] = []
    if isinstance(raw, dict) and "source_path" in raw:
        problems.append(ConfigProblem("source_path", _unknown_key_message((), "source_path")))
        raw = {key: value for key, value in raw.items() if key != "source_path"}
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_problems_from(exc))
    if problems:
        raise ConfigError(problems, file_path)
    config = _resolve_relative_paths(config, file_path)
    problems = []
    secrets = [
        lambda: database_password(config.database),
        lambda: notification_secrets(config.notifications),
    ] + [
        lambda d=d, i=i: bearer_token(d, f"destinations.{i}")
        for i, d in enumerate(config.destinations)
    ]
    for read in secrets:  # each secret can be read (it is not kept)
        try:
            read()
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems, file_path)
    return config


def check_config(path: Path | str) -> list[ConfigProblem]:
    """Every problem of the configuration file at ``path``; an empty list means it is valid."""
    try:
        load_config(path)
    except ConfigError as exc:
        return exc.problems
    return []


def config_warnings(config: Config) -> list[ConfigProblem]:
    """What is valid but probably not meant, with its key path: an allowed caller without a
    host (anyone presenting its AE title gets in), a secret file other users can read, a
    bearer token sent over plain http to another machine.
    Host names that do not resolve are the listener's to check
    (:func:`ctp_node.receive.allow_list.unresolvable_hosts`)."""
    warnings = [
        ConfigProblem(
            f"node.allowed_callers.{index}",
            f"no host: any machine that presents the AE title {caller.ae_title!r} is "
            "accepted; give its IP address, network (10.1.2.0/24) or host name",
        )
        for index, caller in enumerate(config.node.allowed_callers)
        if caller.host is None
    ]
    warnings += [
        ConfigProblem(
            f"destinations.{index}.url",
            "the bearer token would cross the network unencrypted over http://; give the "
            "destination's https:// url",
        )
        for index, d in enumerate(config.destinations)
        if (d.bearer_token_file or d.bearer_token_env) and not _loopback_or_https(str(d.url))
    ]
    return warnings + password_file_warnings(config) + _console_warnings(config)


def _console_warnings(config: Config) -> list[ConfigProblem]:
    """A console with users but none in its file yet; passwords over plain HTTP."""
    http, warnings = config.http, []
    if not http.enabled or http.auth.mode != "users" or http.auth.users_file is None:
        return []
    if not http.auth.users_file.is_file():
        why = f"{http.auth.users_file} does not exist yet: nobody can sign in to the console"
        warnings.append(ConfigProblem("http.auth.users_file", f"{why}; `ctp-node user add NAME`"))
    if http.tls is None and not is_loopback(http.bind):
        warnings.append(
            ConfigProblem(
                "http.tls",
                "passwords and session cookies would cross the network unencrypted; give "
                "http.tls a certificate (or let a reverse proxy serve HTTPS)",
            )
        )
    return warnings


def _loopback_or_https(url: str) -> bool:
    """``url`` is https, or http to this machine's loopback (where nothing crosses a wire)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return parts.scheme == "https" or host in ("localhost", "::1") or host.startswith("127.")


def _read_yaml(file_path: Path) -> dict[str, Any]:
    def fail(message: str) -> ConfigError:
        return ConfigError([ConfigProblem(FILE_KEY_PATH, message)], file_path)

    try:
        text = file_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise fail(
            f"no configuration file at {file_path}; pass --config PATH or set "
            f"{CONFIG_ENV_VAR}; `ctp-node config example --root /var/lib/ctp-node > FILE` writes "
            "the reference"
        ) from None
    except IsADirectoryError:
        raise fail(f"{file_path} is a folder; expected a YAML configuration file") from None
    except UnicodeDecodeError as exc:
        raise fail(f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise fail(f"cannot read the file: {exc.strerror or exc}") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        raise fail(_yaml_error_message(exc)) from None
    except yaml.YAMLError as exc:
        raise fail(f"the file is not valid YAML: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise fail(
            "the file must be a mapping of sections (node:, storage:, database:, ...); "
            f"it holds a {type(raw).__name__}"
        )
    return raw


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping instead of keeping the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                seen_on = first_line.get(key)
            except TypeError:  # an unhashable key; the base class reports it
                continue
            if seen_on is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} is given twice (first on line {seen_on + 1}); keep one",
                    key_node.start_mark,
                )
            first_line[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _yaml_error_message(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "an unknown place"
    what = exc.problem or "invalid YAML"
    context = f" ({exc.context})" if exc.context else ""
    return f"YAML syntax error at {where}: {what}{context}"


# --------------------------------------------------------------------------------------------
# Turning pydantic's errors into problems a user can act on


def _problems_from(exc: ValidationError) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    for error in exc.errors():
        loc = tuple(part for part in error["loc"] if part != "[key]")
        key_path = ".".join(str(part) for part in loc) or FILE_KEY_PATH
        problem = ConfigProblem(key_path, _message(error, loc))
        if problem not in problems:
            problems.append(problem)
    return problems


def _message(error: Any, loc: tuple[str | int, ...]) -> str:
    kind = error["type"]
    value = error.get("input")
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return _unknown_key_message(loc[:-1], loc[-1])
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"must be a mapping of keys; got {_describe(value)}"
    if kind == "list_type":
        return f"must be a list; got {_describe(value)}"
    message = error["msg"].removeprefix("Value error, ")
    message = message.replace("Input should be", "must be")
    if kind.endswith(("_type", "_parsing", "_error")) or kind.startswith(("greater", "less")):
        message = f"{message}; got {_describe(value)}"
        if isinstance(value, bool) and kind == "string_type":
            message += " (YAML reads yes/no/on/off/true/false as booleans; quote the text)"
    return message


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{value!r} ({type(value).__name__})"


def _unknown_key_message(parent: tuple[str | int, ...], key: str | int) -> str:
    allowed = _allowed_keys(parent)
    if not allowed:
        return "unknown key"
    close = difflib.get_close_matches(str(key), allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key; {hint}allowed here: {', '.join(allowed)}"


def _allowed_keys(loc: tuple[str | int, ...]) -> list[str]:
    annotation: Any = Config
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(part, str) and _is_model(annotation):
            field = annotation.model_fields.get(part)
            annotation = field.annotation if field else None
        elif isinstance(part, int) and get_origin(annotation) is list:
            annotation = get_args(annotation)[0]
        else:
            return []
    annotation = _unwrap(annotation)
    if not _is_model(annotation):
        return []
    return [name for name in annotation.model_fields if name != "source_path"]


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, type(int | None)):
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


# --------------------------------------------------------------------------------------------
# Relative paths


def _resolve_relative_paths(config: Config, file_path: Path) -> Config:
    folder = file_path.parent
    root = config.storage.root
    storage = config.storage.model_copy(
        update={"root": root if root.is_absolute() else folder / root}
    )
    password_file = config.database.password_file
    database = config.database.model_copy(
        update={
            "url": resolve_sqlite_url(config.database.url, folder),
            "password_file": folder / password_file if password_file is not None else None,
        }
    )
    log_file = config.logging.file
    log_settings = config.logging.model_copy(
        update={"file": folder / log_file if log_file is not None else None}
    )
    node = config.node
    if node.tls is not None:
        node = node.model_copy(update={"tls": _resolve_files(node.tls, folder)})
    destinations = [_resolve_files(d, folder) for d in config.destinations]
    http = _resolve_files(config.http, folder)
    notifications = config.notifications
    notifications = notifications.model_copy(
        update={
            "webhooks": [_resolve_files(w, folder) for w in notifications.webhooks],
            "email": None
            if notifications.email is None
            else _resolve_files(notifications.email, folder),
        }
    )
    return config.model_copy(
        update={
            "node": node,
            "http": http,
            "storage": storage,
            "database": database,
            "destinations": destinations,
            "notifications": notifications,
            "logging": log_settings,
            "source_path": file_path,
        }
    )


def _resolve_files(section: BaseModel, folder: Path) -> BaseModel:
    """``section`` with its relative file paths (every ``Path`` value, also in its
    subsections, such as a destination's ``tls``) made relative to ``folder``."""
    files: dict[str, Any] = {
        name: folder / value
        for name, value in section
        if isinstance(value, Path) and not value.is_absolute()
    }
    files |= {
        name: _resolve_files(value, folder)
        for name, value in section
        if isinstance(value, BaseModel)
    }
    return section.model_copy(update=files)


def resolve_sqlite_url(url: str, folder: Path) -> str:
    """``url`` with a relative SQLite file made relative to ``folder``; any other URL as given.

    ``sqlite:///relative/x.db`` becomes ``sqlite:////<folder>/relative/x.db``;
    ``sqlite:////absolute/x.db``, ``sqlite://`` and ``sqlite:///:memory:`` are unchanged.
    """
    match = _SQLITE_URL.match(url)
    if not match:
        return url
    scheme, rest = match.groups()
    database, separator, query = rest.partition("?")
    if not database or database == ":memory:" or database.startswith(("/", "file:")):
        return url
    return f"{scheme}:///{folder.absolute() / database}{separator}{query}"
