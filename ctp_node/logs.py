"""The node's log: where it goes (standard error, a rotated file), how a line looks (text or
JSON lines, UTC times with their zone), and which libraries may speak at INFO.

Every handler carries :class:`ctp_node.log_filter.WithheldValues`, which withholds the element
values (possibly a patient's) that libraries quote. The settings are the configuration's
``logging:`` section (:class:`ctp_node.config.schema.LoggingConfig`).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
from datetime import UTC, datetime
from pathlib import Path

from ctp_node.config.problems import ConfigError, ConfigProblem
from ctp_node.config.schema import LoggingConfig
from ctp_node.file_modes import create_file, make_folders
from ctp_node.log_filter import withhold_values_in_logs

#: Libraries whose INFO lines drown the node's own (highdicom names each module it copies, ~50
#: lines per job; uvicorn one line per health check; httpx one per STOW-RS request): WARNING
#: and above unless ``DEBUG``.
CHATTY_LIBRARIES = (
    "highdicom",
    "pynetdicom",
    "pydicom",
    "uvicorn",
    "uvicorn.access",
    "uvicorn.error",
    "matplotlib",
    "PIL",
    "httpx",
    "httpcore",
)

#: Marks the handlers :func:`configure_logging` installed, which it replaces when called again.
_OURS = "_ctp_node_handler"

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def utc_timestamp(record: logging.LogRecord) -> str:
    """The record's time in UTC, ISO 8601 with milliseconds and zone: ``2026-12-04T00:01:12.433Z``
    (the times ``status`` shows are UTC too)."""
    moment = datetime.fromtimestamp(record.created, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class OneLineFormatter(logging.Formatter):
    """``<UTC time> <LEVEL> <logger>: <message>``, each message on one line: control
    characters in it (a newline in an AE title or a UID a peer sent, an escape sequence) are
    shown as ``\\xNN``, so nothing a peer controls can forge a log line or drive a terminal. A
    traceback, when there is one, follows as Python formats it."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_timestamp(record)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", record.message)
        return super().formatMessage(record)


class JsonLineFormatter(logging.Formatter):
    """One JSON object per line, for a log collector: ``time`` (as in the text format),
    ``level``, ``logger``, ``message``, and ``traceback`` when there is one. JSON escapes
    newlines and control characters, so a line stays one line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": utc_timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["traceback"] = record.exc_text
        return json.dumps(line, ensure_ascii=False)


def configure_logging(
    settings: LoggingConfig | None = None,
    *,
    level: int | None = None,
    rotate: bool = True,
    source: Path | None = None,
) -> None:
    """Log as ``settings`` say (the defaults without them): standard error and, with
    ``settings.file``, that file; replaces the handlers set up before (the defaults used
    until the configuration is loaded). ``level`` overrides ``settings.level`` (``--verbose``).

    ``rotate``: this process rotates the file at ``max_bytes``. Only one process may (the
    standard library's handler is not safe for several): ``serve``'s worker processes pass
    False and reopen the file once ``serve`` has renamed it (``WatchedFileHandler``), so that
    no line is lost.

    Raises :class:`ConfigError` (``logging.file``, in the configuration file ``source``)
    when the file cannot be created or written; the handlers are then as they were."""
    settings = settings or LoggingConfig()
    if level is None:
        level = logging.getLevelName(settings.level)
    formatter = JsonLineFormatter() if settings.format == "json" else OneLineFormatter()
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if settings.file is not None:
        try:
            handlers.append(_file_handler(settings, rotate))
        except OSError as exc:
            problem = f"cannot write the log file {settings.file}: {exc.strerror or exc}"
            raise ConfigError([ConfigProblem("logging.file", problem)], source) from exc
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)  # (others', e.g. pytest's capture, stay)
        old.close()
    for handler in handlers:
        handler.setFormatter(formatter)
        setattr(handler, _OURS, True)
        root.addHandler(handler)
    root.setLevel(level)
    withhold_values_in_logs()  # on every handler: patient data is never written
    chatty = logging.DEBUG if level <= logging.DEBUG else logging.WARNING
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(chatty)


def _file_handler(settings: LoggingConfig, rotate: bool) -> logging.Handler:
    """The log file, created owner-only (:mod:`ctp_node.file_modes`) with its folder."""
    path = Path(settings.file)  # type: ignore[arg-type]
    make_folders(path.parent)
    _OwnerOnly.prepare(path)
    if not rotate:
        return _OwnerOnlyWatched(path, encoding="utf-8")
    return _OwnerOnlyRotating(
        path,
        maxBytes=settings.max_bytes,
        backupCount=settings.backup_count,
        encoding="utf-8",
    )


class _OwnerOnly:
    """Opens the log file (a new one after a rotation too) with owner-only mode: log lines
    name studies, series and callers."""

    @staticmethod
    def prepare(path: Path) -> None:
        os.close(create_file(path, os.O_WRONLY | os.O_APPEND))

    def _open(self):  # type: ignore[no-untyped-def]
        self.prepare(Path(self.baseFilename))  # type: ignore[attr-defined]
        return super()._open()  # type: ignore[misc]


class _OwnerOnlyRotating(_OwnerOnly, logging.handlers.RotatingFileHandler):
    pass


class _OwnerOnlyWatched(_OwnerOnly, logging.handlers.WatchedFileHandler):
    pass
