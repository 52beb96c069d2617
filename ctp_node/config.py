"""The node's configuration: the YAML schema, its defaults, loading and validation errors.

``config/ctp-node.yaml`` is the reference: every key with its default and a comment. This
module turns such a file into a frozen :class:`Config` in one step — either every value is
valid and the whole configuration is returned, or :class:`ConfigError` lists every problem
with its key path (``destinations.0.port``) and nothing is applied.

Relative paths (``storage.root`` and the file inside a ``sqlite:///relative.db`` URL) are
relative to the configuration file's folder. Durations are seconds (``_s``), sizes bytes.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import InitErrorDetails, PydanticCustomError

CONFIG_ENV_VAR = "CTP_NODE_CONFIG"
DEFAULT_CONFIG_PATH = Path("config/ctp-node.yaml")

FILE_KEY_PATH = "(file)"
"""Key path of problems that concern the file as a whole (missing, not YAML, not a mapping)."""

OutputKind = Literal["parametric_maps", "secondary_captures", "structured_report"]
OUTPUT_KINDS: tuple[OutputKind, ...] = get_args(OutputKind)

PerfusionValue = bool | int | float | str


# --------------------------------------------------------------------------------------------
# Problems and the error that carries them


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a configuration.

    Attributes
    ----------
    key_path : dotted path of the offending key, list items by index
        (``destinations.0.port``); ``(file)`` for the file as a whole.
    message : what is wrong, in a sentence a user can act on.
    """

    key_path: str
    message: str

    def __str__(self) -> str:
        return f"{self.key_path}: {self.message}"


class ConfigError(Exception):
    """A configuration that cannot be used; ``problems`` lists every reason at once."""

    def __init__(self, problems: list[ConfigProblem], path: Path | None = None) -> None:
        self.problems = list(problems)
        self.path = path
        super().__init__(str(self))

    def __str__(self) -> str:
        where = str(self.path) if self.path is not None else "configuration"
        count = len(self.problems)
        header = f"{where}: {count} problem{'s' if count != 1 else ''} in the configuration"
        return "\n".join([header, *(f"  {problem}" for problem in self.problems)])


# --------------------------------------------------------------------------------------------
# Value types shared by several sections

_AE_TITLE_MAX_CHARS = 16
_HOSTNAME_LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_DESTINATION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DATABASE_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+]*://")
_SQLITE_URL = re.compile(r"^(sqlite(?:\+[A-Za-z0-9_]+)?):///(.*)$", re.DOTALL)
_LO_MAX_CHARS = 64


def _check_ae_title(value: str) -> str:
    # DICOM PS3.5 AE VR: default repertoire without backslash or control characters, at most
    # 16 characters; leading and trailing spaces are not significant, all spaces is not a title.
    title = value.strip(" ")
    if not title:
        raise PydanticCustomError("ae_title", "an AE title must not be empty or all spaces")
    if len(title) > _AE_TITLE_MAX_CHARS:
        raise PydanticCustomError(
            "ae_title",
            "an AE title has at most 16 characters; '{title}' has {length}",
            {"title": title, "length": len(title)},
        )
    bad = sorted({c for c in title if not (" " <= c <= "~") or c == "\\"})
    if bad:
        raise PydanticCustomError(
            "ae_title",
            "an AE title may hold only printable ASCII characters without backslash; "
            "'{title}' contains {bad}",
            {"title": title, "bad": ", ".join(repr(c) for c in bad)},
        )
    return title


def _check_ip_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise PydanticCustomError(
            "ip_address",
            "must be an IP address such as 0.0.0.0 (every interface) or 127.0.0.1; got '{value}'",
            {"value": value},
        ) from None
    return value


def _check_host(value: str) -> str:
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    name = value.removesuffix(".")
    if 0 < len(name) <= 253 and all(_HOSTNAME_LABEL.match(label) for label in name.split(".")):
        return value
    raise PydanticCustomError(
        "host", "must be an IP address or a host name; got '{value}'", {"value": value}
    )


def _check_long_string(value: str) -> str:
    # DICOM LO VR: at most 64 characters, no backslash.
    if not value.strip():
        raise PydanticCustomError("long_string", "must not be empty; use null to leave it out")
    if len(value) > _LO_MAX_CHARS or "\\" in value:
        raise PydanticCustomError(
            "long_string", "must have at most 64 characters and no backslash (DICOM LO)"
        )
    return value


def _check_parameter_name(value: str) -> str:
    if not _PARAMETER_NAME.match(value):
        raise PydanticCustomError(
            "parameter_name",
            "'{value}' is not a parameter name (letters, digits and underscores)",
            {"value": value},
        )
    return value


def _check_perfusion_value(value: Any) -> PerfusionValue:
    if isinstance(value, bool | int | float | str):
        return value
    raise PydanticCustomError(
        "perfusion_value",
        "must be a number, true/false or text; got {kind}",
        {"kind": type(value).__name__ if value is not None else "null"},
    )


AETitle = Annotated[str, AfterValidator(_check_ae_title)]
Host = Annotated[str, AfterValidator(_check_host)]
PositiveSeconds = Annotated[float, Field(gt=0)]
PortNumber = Annotated[int, Field(ge=1, le=65535)]


class _Section(BaseModel):
    # strict: YAML's `yes`, `on` and `1.5` are not silently turned into integers or strings.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# --------------------------------------------------------------------------------------------
# Sections


class AllowedCaller(_Section):
    """A scanner or workstation allowed to send to the node.

    Attributes
    ----------
    ae_title : the caller's (calling) AE title.
    host : the caller's IP address or host name; ``None`` accepts the title from any host.
    """

    ae_title: AETitle
    host: Host | None = None


class NodeConfig(_Section):
    """The DICOM face of the node (the C-STORE SCP).

    Attributes
    ----------
    ae_title : called AE title the node answers to.
    port : TCP port it listens on.
    bind : IP address it listens on (``0.0.0.0``: every interface).
    allowed_callers : callers accepted; empty accepts any caller.
    max_associations : associations served at the same time.
    acse_timeout_s, dimse_timeout_s, network_timeout_s : pynetdicom timeouts in seconds.
    """

    ae_title: AETitle = "CTPNODE"
    port: PortNumber = 11112
    bind: Annotated[str, AfterValidator(_check_ip_address)] = "0.0.0.0"
    allowed_callers: list[AllowedCaller] = []
    max_associations: int = Field(10, ge=1)
    acse_timeout_s: PositiveSeconds = 30.0
    dimse_timeout_s: PositiveSeconds = 60.0
    network_timeout_s: PositiveSeconds = 60.0


class StorageConfig(_Section):
    """Where files live.

    Attributes
    ----------
    root : folder holding the spool, results and quarantine; relative to the configuration
        file's folder once loaded by :func:`load_config`.
    min_free_bytes : free space in bytes below which C-STORE is refused with an
        out-of-resources status.
    """

    root: Path = Field(Path("var/ctp-node"), strict=False)
    min_free_bytes: int = Field(1_000_000_000, ge=0)


class DatabaseConfig(_Section):
    """The database holding the index of instances, the job queue and the outbox.

    Attributes
    ----------
    url : SQLAlchemy URL; a relative SQLite file is relative to the configuration file's folder.
    """

    url: str = "sqlite:///var/ctp-node/ctp-node.db"

    @field_validator("url")
    @classmethod
    def _looks_like_a_url(cls, url: str) -> str:
        if not _DATABASE_URL.match(url):
            raise PydanticCustomError(
                "database_url",
                "must be a SQLAlchemy database URL such as sqlite:///var/ctp-node/ctp-node.db "
                "or postgresql+psycopg://user@host/db; got '{url}'",
                {"url": url},
            )
        return url


class IngestConfig(_Section):
    """When a received series counts as a complete perfusion acquisition.

    Attributes
    ----------
    series_stable_after_s : quiet time in seconds after the last instance of a series.
    min_time_points : fewest time points for a series to count as dynamic perfusion.
    scan_interval_s : seconds between two looks for series that became complete.
    """

    series_stable_after_s: PositiveSeconds = 10.0
    min_time_points: int = Field(10, ge=3)
    scan_interval_s: PositiveSeconds = 1.0


class WorkerConfig(_Section):
    """The processes that compute perfusion jobs.

    Attributes
    ----------
    count : worker processes started by ``ctp-node serve``; 0 leaves computing to
        separate ``ctp-node worker`` processes.
    lease_s : seconds a claimed job stays reserved without a heartbeat before another worker
        may take it over.
    max_attempts : attempts at a job before it is marked failed.
    poll_interval_s : seconds an idle worker waits before looking for a job again.
    """

    count: int = Field(1, ge=0)
    lease_s: PositiveSeconds = 600.0
    max_attempts: int = Field(3, ge=1)
    poll_interval_s: PositiveSeconds = 1.0


class DestinationConfig(_Section):
    """A DICOM peer (usually a PACS) that receives the results by C-STORE.

    Attributes
    ----------
    name : short unique name used in logs, the outbox and ``ctp-node status``.
    ae_title : the destination's (called) AE title.
    host, port : where it listens.
    send : output kinds it receives; ``None`` means every output.
    calling_ae_title : AE title the node presents; ``None`` uses ``node.ae_title``.
    timeout_s : network timeout in seconds for one association.
    """

    name: str
    ae_title: AETitle
    host: Host
    port: PortNumber
    send: list[OutputKind] | None = None
    calling_ae_title: AETitle | None = None
    timeout_s: PositiveSeconds = 30.0

    @field_validator("name")
    @classmethod
    def _short_name(cls, name: str) -> str:
        if not _DESTINATION_NAME.match(name):
            raise PydanticCustomError(
                "destination_name",
                "a destination name is 1 to 64 letters, digits, '-', '_' or '.', "
                "starting with a letter or digit; got '{name}'",
                {"name": name},
            )
        return name

    @field_validator("send")
    @classmethod
    def _some_outputs(cls, send: list[OutputKind] | None) -> list[OutputKind] | None:
        if send is not None and not send:
            raise PydanticCustomError(
                "send_empty",
                "an empty list would send nothing; leave `send` out (or null) to send "
                "every output, or remove the destination",
            )
        if send is not None and len(set(send)) != len(send):
            raise PydanticCustomError("send_repeated", "lists an output kind more than once")
        return send

    def output_kinds(self) -> tuple[OutputKind, ...]:
        """The output kinds this destination receives, in the order of :data:`OUTPUT_KINDS`."""
        return tuple(kind for kind in OUTPUT_KINDS if self.send is None or kind in self.send)


class SendConfig(_Section):
    """Retries of the outbox.

    Attributes
    ----------
    max_attempts : attempts at sending one object to one destination before giving up.
    retry_backoff_s : seconds before the first retry; the delay doubles at each retry.
    retry_backoff_max_s : longest delay in seconds between two retries.
    """

    max_attempts: int = Field(10, ge=1)
    retry_backoff_s: PositiveSeconds = 30.0
    retry_backoff_max_s: PositiveSeconds = 600.0

    @model_validator(mode="after")
    def _backoff_cap_above_first_delay(self) -> SendConfig:
        if self.retry_backoff_max_s < self.retry_backoff_s:
            _raise_at(
                ("retry_backoff_max_s",),
                "must be at least retry_backoff_s ({first} s); got {cap} s",
                {"first": self.retry_backoff_s, "cap": self.retry_backoff_max_s},
                self.retry_backoff_max_s,
            )
        return self


class ReportConfig(_Section):
    """The DICOM objects the node writes.

    Attributes
    ----------
    series_number_start : SeriesNumber of the first output series; the others follow it.
    institution_name : InstitutionName written into the outputs; ``None`` copies the source's.
    """

    series_number_start: int = Field(900, ge=1, le=2**31 - 1)
    institution_name: Annotated[str, AfterValidator(_check_long_string)] | None = None


PerfusionConfig = dict[
    Annotated[str, AfterValidator(_check_parameter_name)],
    Annotated[PerfusionValue, PlainValidator(_check_perfusion_value)],
]
"""Overrides of the perfusion engine's parameters, by parameter name; empty keeps its defaults.

Names are checked against the engine's parameters where the engine is built, since this
module may not import it.
"""


class Config(_Section):
    """The whole configuration of a node.

    Attributes
    ----------
    source_path : the file it was loaded from (absolute), ``None`` when built in code; not a
        key of the YAML file.
    """

    node: NodeConfig = NodeConfig()
    storage: StorageConfig = StorageConfig()
    database: DatabaseConfig = DatabaseConfig()
    ingest: IngestConfig = IngestConfig()
    worker: WorkerConfig = WorkerConfig()
    destinations: list[DestinationConfig] = []
    send: SendConfig = SendConfig()
    report: ReportConfig = ReportConfig()
    perfusion: PerfusionConfig = {}
    source_path: SkipJsonSchema[Path | None] = Field(None, strict=False, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections_mean_defaults(cls, data: Any) -> Any:
        # `node:` with every key commented out reads as null; it means "all defaults".
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data

    @field_validator("destinations", mode="wrap")
    @classmethod
    def _unique_destination_names(
        cls, destinations: Any, handler: ValidatorFunctionWrapHandler
    ) -> list[DestinationConfig]:
        # Looks at the raw names too, so that a duplicated name is reported together with
        # any other problem of the list rather than only once the rest is fixed.
        errors = _duplicate_name_errors(destinations)
        try:
            validated = handler(destinations)
        except ValidationError as exc:
            errors = _error_details(exc) + errors
        if errors:
            raise ValidationError.from_exception_data("destinations", errors)
        return validated

    def destination(self, name: str) -> DestinationConfig:
        """The destination called ``name``; ``KeyError`` if there is none."""
        for destination in self.destinations:
            if destination.name == name:
                return destination
        raise KeyError(name)


def _duplicate_name_errors(destinations: Any) -> list[InitErrorDetails]:
    errors: list[InitErrorDetails] = []
    first_index: dict[str, int] = {}
    for index, item in enumerate(destinations if isinstance(destinations, list) else []):
        name = item.get("name") if isinstance(item, dict) else getattr(item, "name", None)
        if not isinstance(name, str):
            continue
        if name not in first_index:
            first_index[name] = index
            continue
        duplicate = PydanticCustomError(
            "duplicate_destination",
            "name '{name}' is already used by destinations.{first}; names must be unique",
            {"name": name, "first": first_index[name]},
        )
        errors.append(InitErrorDetails(type=duplicate, loc=(index, "name"), input=name))
    return errors


def _error_details(exc: ValidationError) -> list[InitErrorDetails]:
    # Carries already-formatted errors over into a new ValidationError, keeping each type name.
    return [
        InitErrorDetails(
            type=PydanticCustomError(error["type"], error["msg"]),
            loc=error["loc"],
            input=error["input"],
        )
        for error in exc.errors()
    ]


def _raise_at(loc: tuple[str | int, ...], template: str, ctx: dict[str, Any], value: Any) -> None:
    raise ValidationError.from_exception_data(
        "config",
        [InitErrorDetails(type=PydanticCustomError("config", template, ctx), loc=loc, input=value)],
    )


# --------------------------------------------------------------------------------------------
# Loading


def default_config_path() -> Path:
    """``$CTP_NODE_CONFIG`` if set and not empty, else ``config/ctp-node.yaml`` (relative to
    the current directory)."""
    from_environment = os.environ.get(CONFIG_ENV_VAR, "").strip()
    return Path(from_environment) if from_environment else DEFAULT_CONFIG_PATH


def load_config(path: Path | str) -> Config:
    """Read, validate and resolve the configuration file at ``path``.

    An empty file gives every default. Relative ``storage.root`` and relative SQLite files in
    ``database.url`` are resolved against the file's folder; ``source_path`` is set to the
    file's absolute path.

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
    return _resolve_relative_paths(config, file_path)


def check_config(path: Path | str) -> list[ConfigProblem]:
    """Every problem of the configuration file at ``path``; an empty list means it is valid."""
    try:
        load_config(path)
    except ConfigError as exc:
        return exc.problems
    return []


def _read_yaml(file_path: Path) -> dict[str, Any]:
    def fail(message: str) -> ConfigError:
        return ConfigError([ConfigProblem(FILE_KEY_PATH, message)], file_path)

    try:
        text = file_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise fail(
            f"no configuration file at {file_path}; pass --config PATH or set "
            f"{CONFIG_ENV_VAR} (config/ctp-node.yaml in the repository is the reference)"
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
    database = config.database.model_copy(
        update={"url": resolve_sqlite_url(config.database.url, folder)}
    )
    return config.model_copy(
        update={"storage": storage, "database": database, "source_path": file_path}
    )


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
