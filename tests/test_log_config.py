"""The ``logging:`` section: UTC times with their zone, text or JSON lines, a rotated
owner-only file, libraries quiet at INFO, patient data withheld in every format."""

from __future__ import annotations

import json
import logging
import re
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from highdicom.valuerep import check_person_name

from ctp_node.config import ConfigError, load_config
from ctp_node.config.schema import LoggingConfig
from ctp_node.log_filter import WITHHELD
from ctp_node.logs import CHATTY_LIBRARIES, configure_logging
from tests.conftest import wait_until

UTC_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
NAME = "DOE JOHN"  # a patient's name in one component: highdicom quotes it in a warning


@pytest.fixture(autouse=True)
def _restore_logging():  # type: ignore[no-untyped-def]
    """Each test configures the root logger; the next one (and pytest) gets it back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in CHATTY_LIBRARIES}
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, library_level in levels.items():
        logging.getLogger(name).setLevel(library_level)


def _lines(capsys) -> list[str]:  # type: ignore[no-untyped-def]
    return [line for line in capsys.readouterr().err.splitlines() if line]


def test_text_lines_begin_with_a_utc_time_with_its_zone(capsys) -> None:  # type: ignore[no-untyped-def]
    configure_logging(LoggingConfig())
    logging.getLogger("ctp_node.test").info("series 1.2.3 queued as job 4")
    (line,) = _lines(capsys)
    time, level, logger, message = line.split(" ", 3)
    assert UTC_TIME.match(time), line
    assert (level, logger, message) == ("INFO", "ctp_node.test:", "series 1.2.3 queued as job 4")


def test_json_lines_parse_and_carry_time_level_logger_message(capsys) -> None:  # type: ignore[no-untyped-def]
    configure_logging(LoggingConfig(format="json"))
    log = logging.getLogger("ctp_node.test")
    log.warning("association from %s\nforged line", "CT1")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("job %d failed", 7)
    first, second = (json.loads(line) for line in _lines(capsys))  # one object per line
    assert UTC_TIME.match(first["time"]), first
    assert first["level"] == "WARNING" and first["logger"] == "ctp_node.test"
    assert first["message"] == "association from CT1\nforged line"
    assert second["message"] == "job 7 failed" and "ValueError: boom" in second["traceback"]


@pytest.mark.parametrize("form", ["text", "json"])
def test_a_patients_name_that_highdicom_quotes_is_withheld(capsys, tmp_path, form) -> None:  # type: ignore[no-untyped-def]
    log_file = tmp_path / "node.log"
    configure_logging(LoggingConfig(format=form, file=log_file))
    with warnings.catch_warnings(record=True) as caught:  # (pytest takes warnings over)
        warnings.simplefilter("always")
        check_person_name(NAME)  # highdicom warns, quoting the name, for every output
    # as logging.captureWarnings logs a warning
    logging.getLogger("py.warnings").warning("%s", caught[0].message)
    written = capsys.readouterr().err + log_file.read_text()
    assert "unlikely to represent the intended person name" in written
    assert NAME not in written and WITHHELD in written


def test_the_file_is_owner_only_and_rotates_at_max_bytes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    log_file = tmp_path / "logs" / "node.log"  # its folder is created too
    configure_logging(LoggingConfig(file=log_file, max_bytes=1000, backup_count=2))
    log = logging.getLogger("ctp_node.test")
    for n in range(100):
        log.info("line %03d of a log that outgrows its file", n)
    files = sorted(p.name for p in log_file.parent.iterdir())
    assert files == ["node.log", "node.log.1", "node.log.2"]  # the oldest were deleted
    for path in log_file.parent.iterdir():
        assert path.stat().st_size <= 1000
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert "line 099" in log_file.read_text()


def test_library_info_is_off_at_info_and_on_at_debug(capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # An in-process HTTP face of another test turned uvicorn's access log off for the whole
    # process (access_log=False: propagate off); this test starts from the default state.
    for name in CHATTY_LIBRARIES:
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)
    configure_logging(LoggingConfig())
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).info("%s chatter", name)
    logging.getLogger("highdicom").warning("highdicom warns")
    assert [line.split(": ", 1)[1] for line in _lines(capsys)] == ["highdicom warns"]
    configure_logging(LoggingConfig(level="DEBUG"))
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).info("%s chatter", name)
    shown = [line.split(": ", 1)[1] for line in _lines(capsys)]
    assert shown == [f"{name} chatter" for name in CHATTY_LIBRARIES]


def test_the_level_is_the_least_severe_written(capsys) -> None:  # type: ignore[no-untyped-def]
    configure_logging(LoggingConfig(level="WARNING"))
    log = logging.getLogger("ctp_node.test")
    log.info("not written")
    log.warning("written")
    assert [line.split(": ", 1)[1] for line in _lines(capsys)] == ["written"]


def test_a_relative_file_is_the_configuration_folders(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "ctp-node.yaml"
    path.write_text("logging:\n  file: log/node.log\n  format: json\n")
    assert load_config(path).logging.file == tmp_path / "log" / "node.log"


@pytest.mark.parametrize(
    ("section", "key_path", "words"),
    [
        ("format: xml", "logging.format", "'text' or 'json'"),
        ("level: VERBOSE", "logging.level", "'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
        ("max_bytes: -1", "logging.max_bytes", "greater than or equal to 0"),
    ],
)
def test_a_wrong_value_is_a_config_error_with_its_key_path(
    tmp_path, section, key_path, words
) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "ctp-node.yaml"
    path.write_text(f"logging:\n  {section}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = {p.key_path: p.message for p in caught.value.problems}
    assert set(problems) == {key_path} and words in problems[key_path], problems


@pytest.mark.slow
def test_serve_and_its_worker_processes_write_json_to_the_file(serve_node, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The worker processes (forked from serve's fork server) log as serve does, into the
    same file."""
    log_file = tmp_path / "node.log"
    serve_node([], logging={"file": str(log_file), "format": "json"})

    def worker_ready() -> list[dict] | None:
        lines = [json.loads(line) for line in log_file.read_text().splitlines()]
        return lines if any(" ready" in line["message"] for line in lines) else None

    lines = wait_until(worker_ready, 60, "the worker's line in the log file")
    loggers = {line["logger"] for line in lines}
    assert {"ctp_node.service", "ctp_node.receive.scp"} <= loggers, loggers
    assert all(UTC_TIME.match(line["time"]) for line in lines)
    assert stat.S_IMODE(Path(log_file).stat().st_mode) == 0o600


def test_a_log_file_that_cannot_be_written_is_a_configuration_problem(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``serve`` says which key and why, exit 2, instead of a traceback."""
    (tmp_path / "taken").write_text("a file, not a folder")
    path = tmp_path / "ctp-node.yaml"
    path.write_text(
        f"storage:\n  root: {tmp_path / 'root'}\nlogging:\n  file: taken/node.log\n"
        "worker:\n  count: 0\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "ctp_node", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "logging.file" in result.stderr and "cannot write the log file" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_worker_process_follows_the_file_that_serve_rotates(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """serve's handler rotates; a worker's (``rotate=False``) reopens the new file after the
    rename instead of writing on into ``.1`` for ever, and never rotates itself."""
    from ctp_node.logs import _file_handler

    log_file = tmp_path / "node.log"
    settings = LoggingConfig(file=log_file, max_bytes=200, backup_count=3)
    serve, worker = _file_handler(settings, rotate=True), _file_handler(settings, rotate=False)
    try:
        for handler, text in [(worker, "worker one"), (serve, "serve " + "x" * 250)]:
            handler.emit(logging.makeLogRecord({"msg": text}))
        worker.emit(logging.makeLogRecord({"msg": "worker two"}))
    finally:
        serve.close()
        worker.close()
    # serve rotated before its long line; the worker's next line follows it into the new file
    assert log_file.read_text().splitlines() == ["serve " + "x" * 250, "worker two"]
    assert (tmp_path / "node.log.1").read_text().splitlines() == ["worker one"]
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
