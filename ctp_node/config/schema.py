"""The configuration's schema: pydantic models with defaults, and the problems they report.

See :mod:`ctp_node.config` for loading; ``config/ctp-node.yaml`` is the reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    PlainValidator,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import InitErrorDetails, PydanticCustomError

from ctp_node.config.destinations import DestinationConfig, SendConfig
from ctp_node.config.http import HttpConfig
from ctp_node.config.node import NodeConfig
from ctp_node.config.notifications import NotificationsConfig
from ctp_node.config.profiles import ProfileRuleConfig, default_profile_rules
from ctp_node.config.values import (
    _DATABASE_URL,
    PerfusionValue,
    PositiveSeconds,
    Section,
    _check_environment_name,
    _check_long_string,
    _check_parameter_name,
    _check_perfusion_value,
    _check_retention_bytes,
    _check_retention_days,
    _raise_at,
    check_backoff,
    hide_url_password,
    url_password,
)

CONFIG_ENV_VAR = "CTP_NODE_CONFIG"
DEFAULT_CONFIG_PATH = Path("config/ctp-node.yaml")
"""The default ``--config`` in a checkout (relative to the current folder)."""
SYSTEM_CONFIG_PATH = Path("/etc/ctp-node/ctp-node.yaml")
"""The default ``--config`` of an installed node (deploy/ctp-node.service, README)."""

FILE_KEY_PATH = "(file)"
"""Key path of problems that concern the file as a whole (missing, not YAML, not a mapping)."""

# --------------------------------------------------------------------------------------------
# Sections


class LoggingConfig(Section):
    """The node's log (:mod:`ctp_node.logs`): its lines name studies, series, AE titles and
    addresses, never a patient's name, ID or birth date; times are UTC, ISO 8601 with the zone
    (``2026-12-04T00:01:12.433Z``), as ``status`` shows them.

    Attributes
    ----------
    level : the least severe level written: ``DEBUG``, ``INFO`` (the default: one line per
        association, per job start and end, per send), ``WARNING`` or ``ERROR``. Libraries
        (highdicom, pynetdicom, pydicom, uvicorn, matplotlib, PIL) write their INFO lines only
        at ``DEBUG``: at INFO they drowned the node's own (~50 highdicom lines per job).
        ``ctp-node --verbose`` is ``DEBUG`` whatever this says.
    file : also write the log to this file (standard error gets it in any case), relative to
        the configuration file's folder; created with its folder, readable by the node's user
        only. ``null`` (the default): standard error only, e.g. for journald or Docker.
    max_bytes : size in bytes at which the file is renamed ``<file>.1`` (``.1`` to ``.2``…)
        and a new one begun, so that the log cannot fill the disk; ``serve`` rotates it for
        its worker processes. 0: never rotated (for an external logrotate, which must then
        copy and truncate).
    backup_count : renamed files kept (``<file>.1`` … ``<file>.N``); the oldest is deleted.
        With the defaults the log takes at most 6 × 50 MB.
    format : ``text``: ``<time> <LEVEL> <logger>: <message>``, one line each (control
        characters shown as ``\\xNN``); ``json``: one JSON object per line with ``time``,
        ``level``, ``logger``, ``message`` (and ``traceback``), for a log collector.
    """

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    file: Path | None = Field(None, strict=False)
    max_bytes: int = Field(50_000_000, ge=0)
    backup_count: int = Field(5, ge=0)
    format: Literal["text", "json"] = "text"


RetentionDays = Annotated[float, AfterValidator(_check_retention_days)] | None
RetentionBytes = Annotated[int, AfterValidator(_check_retention_bytes)] | None


class RetentionConfig(Section):
    """How long files are kept below ``storage.root`` before the node deletes them.

    Nothing that is undelivered or unprocessed is ever deleted, whatever these say: a series'
    received instances only once its results reached every destination, a job's results only
    once none of its exports is pending or failed. A period is counted from the last
    delivery (or the decision, for a series that is not perfusion); days may be fractional.
    ``null`` keeps for ever; 0 is refused, since it could read as "delete at once" as well as
    "never".

    Attributes
    ----------
    spool_days : days the received instances of a series (and the study's kept non-CT
        objects) stay after its results were delivered: long enough to reprocess a study
        without asking the scanner to send it again.
    results_days : days a job's results folder (``results/<series>/job-<n>/``: the DICOM
        outputs, ``results.json``, ``summary.png``) stays after all its exports were sent or
        cancelled; PACS holds the delivered copy.
    quarantine_days : days a refused object's bytes stay in ``quarantine/`` for a person to
        look at.
    quarantine_max_bytes : bytes the quarantine may hold (the node's one quarantine bound,
        also called ``storage.quarantine_max_bytes``). It is held as refused objects are
        written, not only when retention runs: the oldest quarantined files are deleted
        first, however young, to make room (the refusals stay on record), and an object
        larger than the bound is recorded without its bytes. It holds evidence of refused
        objects, not results, and a misconfigured sender can fill it fast (200 refused
        objects put 200 MB there in 6 s). ``null``: no bound.
    interval_s : seconds between two applications of retention by ``ctp-node serve`` (it
        also applies it at start); at most one day.
    """

    spool_days: RetentionDays = 7.0
    results_days: RetentionDays = 30.0
    quarantine_days: RetentionDays = 30.0
    quarantine_max_bytes: RetentionBytes = 1_000_000_000
    interval_s: Annotated[float, Field(gt=0, le=86_400)] = 3600.0


class StorageConfig(Section):
    """Where files live.

    Attributes
    ----------
    root : folder holding the spool, results and quarantine; relative to the configuration
        file's folder once loaded by :func:`load_config`.
    min_free_bytes : free space in bytes below which C-STORE is refused with an
        out-of-resources status.
    retention : when files below ``root`` are deleted (see :class:`RetentionConfig`).
    """

    root: Path = Field(Path("var/ctp-node"), strict=False)
    min_free_bytes: int = Field(1_000_000_000, ge=0)
    retention: RetentionConfig = RetentionConfig()

    @model_validator(mode="before")
    @classmethod
    def _empty_retention_means_defaults(cls, data: Any) -> Any:
        # `retention:` with every key commented out reads as null; it means "all defaults".
        if isinstance(data, dict) and data.get("retention", {}) is None:
            return {key: value for key, value in data.items() if key != "retention"}
        return data


class DatabaseConfig(Section):
    """The database holding the index of instances, the job queue and the outbox.

    Attributes
    ----------
    url : SQLAlchemy URL; a relative SQLite file is relative to the configuration file's folder.
    password_file : file holding the PostgreSQL password (its final newline is not part of
        it), relative to the configuration file's folder; it is put into ``url``, which then
        has none of its own. Keeps the secret out of the YAML, which is often copied and
        shown; make it readable by the node's user only (``chmod 600``).
    password_env : name of an environment variable holding the PostgreSQL password, for
        the same purpose (a container's secret, a systemd ``Environment``); at most one of
        the two.
    """

    url: str = "sqlite:///var/ctp-node/ctp-node.db"
    password_file: Path | None = Field(None, strict=False)
    password_env: Annotated[str, AfterValidator(_check_environment_name)] | None = None

    @field_validator("url")
    @classmethod
    def _looks_like_a_url(cls, url: str) -> str:
        if not _DATABASE_URL.match(url):
            raise PydanticCustomError(
                "database_url",
                "must be a SQLAlchemy database URL such as sqlite:///var/ctp-node/ctp-node.db "
                "or postgresql+psycopg://user@host/db; got '{url}'",
                {"url": hide_url_password(url)},
            )
        return url

    @model_validator(mode="after")
    def _one_password(self) -> DatabaseConfig:
        given = [k for k in ("password_file", "password_env") if getattr(self, k) is not None]
        if len(given) == 2:
            _raise_at(
                ("password_env",),
                "give the password in one place: password_file or password_env, not both",
                {},
                self.password_env,
            )
        if given and self.url.startswith("sqlite"):
            _raise_at((given[0],), "a SQLite database has no password; leave it out", {}, None)
        if given and url_password(self.url) is not None:
            _raise_at(
                (given[0],),
                "url contains a password already; remove it from url (the secret belongs in "
                "the file or the variable only)",
                {},
                None,
            )
        return self


class IngestConfig(Section):
    """When a received series counts as a complete perfusion acquisition.

    Attributes
    ----------
    series_stable_after_s : quiet time in seconds after the last instance of a series.
    min_time_points : fewest time points for a series to count as dynamic perfusion.
    scan_interval_s : seconds between two looks for series that became complete.
    keep_other_objects : keep the objects that are not CT (dose reports, localiser captures,
        MR…) below ``storage.root/other/<study>/<series>/``. They are acknowledged so that a
        whole-study send completes, and always recorded (``ctp-node status`` lists them), but
        the node computes nothing from them, so by default their bytes are not kept: they would
        only fill the disk with copies of what PACS already holds.
    """

    series_stable_after_s: PositiveSeconds = 10.0
    min_time_points: int = Field(10, ge=3)
    scan_interval_s: PositiveSeconds = 1.0
    keep_other_objects: bool = False


class WorkerConfig(Section):
    """The processes that compute perfusion jobs.

    Attributes
    ----------
    count : worker processes started by ``ctp-node serve``; 0 leaves computing to
        separate ``ctp-node worker`` processes.
    lease_s : seconds a claimed job stays reserved without a heartbeat before another worker
        may take it over.
    max_attempts : attempts at a job that crash its worker or raise an unexpected error before
        it is marked failed (and PACS gets a failure notice).
    poll_interval_s : seconds an idle worker waits before looking for a job again. ``serve``'s
        own workers are woken at once when ``serve`` queues a job; the interval bounds the
        wait for jobs queued elsewhere (``reprocess``, a worker of another host).
    retry_backoff_s : seconds before a job is tried again after a transient failure (disk
        full, database locked or unreachable); the delay doubles at each further one. Such
        failures do not use up ``max_attempts``: time, not a retry, cures them.
    retry_backoff_max_s : longest delay in seconds between two tries after transient failures.
    retry_for_s : seconds after its creation during which a job is still tried again after
        transient failures; then it fails and PACS gets a failure notice (itself retried until
        it can be written). The default, 6 h, outlasts an administrator's night-time fix.
    resident_hu_max_mb : the largest whole-resolution HU array, in MiB, a worker keeps in
        memory while it computes. A larger one (a wide-detector study: 512² × 320 slices ×
        20 time points is 3 200 MiB) is held in an unlinked file below
        ``storage.root/tmp/`` and its pages are released while the engine works on its
        binned copy, so that such a study fits in about half the memory; reading it from
        the file costs a few seconds. The default keeps every usual study (512² × 16 × 40
        is 320 MiB) in memory.
    """

    count: int = Field(1, ge=0)
    lease_s: PositiveSeconds = 120.0
    max_attempts: int = Field(3, ge=1)
    poll_interval_s: PositiveSeconds = 1.0
    retry_backoff_s: PositiveSeconds = 15.0
    retry_backoff_max_s: PositiveSeconds = 600.0
    retry_for_s: PositiveSeconds = 21600.0
    resident_hu_max_mb: float = Field(1024.0, gt=0)

    @model_validator(mode="after")
    def _backoff_cap_above_first_delay(self) -> WorkerConfig:
        check_backoff(self.retry_backoff_s, self.retry_backoff_max_s)
        return self


class ReportConfig(Section):
    """The DICOM objects the node writes.

    Attributes
    ----------
    series_number_start : SeriesNumber of the first output series; the others follow it.
    institution_name : InstitutionName written into the outputs; ``None`` copies the source's.
    series_description_suffix : appended to each output's SeriesDescription after its name
        (``CBF (ctp-node)``, ``CTP summary (ctp-node)``); "" for the name alone.
    """

    series_number_start: int = Field(900, ge=1, le=2**31 - 1)
    institution_name: Annotated[str, AfterValidator(_check_long_string)] | None = None
    series_description_suffix: Annotated[str, Field(max_length=40)] = "(ctp-node)"


NonNegative = Annotated[float, Field(ge=0)]


class QualityConfig(Section):
    """Limits of the acquisition quality checks (ACR–ASNR–SPR CT perfusion practice
    parameter); the same names, units and defaults as
    :class:`ctp_node.qc.QualityLimits`.

    Attributes
    ----------
    duration_min_s, duration_max_s : acquisition length, s.
    permeability_duration_min_s, permeability_duration_max_s : the acquisition length the
        ``tumour`` profile expects instead, s (Patlak analysis needs the late images).
    baseline_images_min : images before contrast reaches the tissue.
    sampling_interval_max_s : longest interval between images during the first pass, s.
    venous_end_max_percent : percentage of its peak the venous curve must fall back to.
    kvp_min, kvp_max : tube voltage, kV.
    mas_min, mas_max : tube current-time product, mAs.
    ctdivol_alert_mgy : CTDIvol alert level, mGy (an alert, not a limit).
    contrast_volume_min_ml : contrast volume, mL.
    injection_rate_min_ml_s : injection rate, mL/s.
    adult_age_years : age from which a patient is an adult, years.
    motion_limit_mm : largest head displacement accepted, mm.
    aif_peak_min_hu : smallest plausible arterial peak enhancement, HU.
    aif_fwhm_min_s, aif_fwhm_max_s : plausible width of the arterial first pass, s.
    aif_end_max_percent : percentage of its peak the arterial curve must fall back to.
    coverage_min_mm : craniocaudal coverage below which a warning is given, mm (0 = none).
    """

    duration_min_s: NonNegative = 50.0
    duration_max_s: PositiveSeconds = 70.0
    permeability_duration_min_s: NonNegative = 90.0
    permeability_duration_max_s: PositiveSeconds = 150.0
    baseline_images_min: int = Field(2, ge=0)
    sampling_interval_max_s: PositiveSeconds = 2.0
    venous_end_max_percent: Annotated[float, Field(ge=0, le=100)] = 30.0
    kvp_min: NonNegative = 70.0
    kvp_max: NonNegative = 90.0
    mas_min: NonNegative = 100.0
    mas_max: NonNegative = 200.0
    ctdivol_alert_mgy: NonNegative = 1000.0
    contrast_volume_min_ml: NonNegative = 40.0
    injection_rate_min_ml_s: NonNegative = 4.0
    adult_age_years: NonNegative = 18.0
    motion_limit_mm: NonNegative = 3.0
    aif_peak_min_hu: NonNegative = 100.0
    aif_fwhm_min_s: NonNegative = 2.0
    aif_fwhm_max_s: PositiveSeconds = 20.0
    aif_end_max_percent: Annotated[float, Field(ge=0, le=100)] = 50.0
    coverage_min_mm: NonNegative = 0.0

    @model_validator(mode="after")
    def _ranges_in_order(self) -> QualityConfig:
        for lower, upper in (
            ("duration_min_s", "duration_max_s"),
            ("permeability_duration_min_s", "permeability_duration_max_s"),
            ("kvp_min", "kvp_max"),
            ("mas_min", "mas_max"),
            ("aif_fwhm_min_s", "aif_fwhm_max_s"),
        ):
            if getattr(self, upper) < getattr(self, lower):
                _raise_at(
                    (upper,),
                    "must be at least {lower} ({low}); got {high}",
                    {"lower": lower, "low": getattr(self, lower), "high": getattr(self, upper)},
                    getattr(self, upper),
                )
        return self


PerfusionConfig = dict[
    Annotated[str, AfterValidator(_check_parameter_name)],
    Annotated[PerfusionValue, PlainValidator(_check_perfusion_value)],
]
"""Overrides of the perfusion engine's parameters, by parameter name; empty keeps its defaults.

Names are checked against the engine's parameters where the engine is built, since this
module may not import it.
"""


class Config(Section):
    """The whole configuration of a node.

    Attributes
    ----------
    profiles : the ordered rules that choose each series' protocol profile
        (:class:`~ctp_node.config.profiles.ProfileRuleConfig`); left out:
        :data:`ctp_node.profiles.DEFAULT_RULES` (vasospasm and tumour by the words of
        ProtocolName or SeriesDescription); ``[]``: every series is ``stroke``.
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
    quality: QualityConfig = QualityConfig()
    perfusion: PerfusionConfig = {}
    profiles: list[ProfileRuleConfig] = Field(default_factory=default_profile_rules)
    http: HttpConfig = HttpConfig()
    notifications: NotificationsConfig = NotificationsConfig()
    logging: LoggingConfig = LoggingConfig()
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
