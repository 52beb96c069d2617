"""The configuration: the reference file, loading, every error with its key path."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from ctp_node.config import (
    CONFIG_ENV_VAR,
    Config,
    ConfigError,
    ConfigProblem,
    DestinationConfig,
    check_config,
    default_config_path,
    load_config,
    resolve_sqlite_url,
)

REFERENCE = Path(__file__).resolve().parents[1] / "config" / "ctp-node.yaml"


def write(tmp_path: Path, text: str, name: str = "ctp-node.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return {problem.key_path: problem.message for problem in caught.value.problems}


# --- The reference file ------------------------------------------------------------------


def test_reference_file_loads() -> None:
    config = load_config(REFERENCE)

    assert config.source_path == REFERENCE
    assert config.node.ae_title == "CTPNODE"
    assert config.node.port == 11112
    assert [d.name for d in config.destinations] == ["pacs"]
    pacs = config.destination("pacs")
    assert (pacs.ae_title, pacs.host, pacs.port) == ("PACS", "127.0.0.1", 4242)
    assert pacs.output_kinds() == ("parametric_maps", "secondary_captures", "structured_report")
    assert config.storage.root == REFERENCE.parent / "var" / "ctp-node"
    assert config.database.url == f"sqlite:///{REFERENCE.parent}/var/ctp-node/ctp-node.db"


def test_reference_file_values_are_the_model_defaults() -> None:
    # The file documents the defaults; this keeps the file and the schema from drifting apart.
    raw = yaml.safe_load(REFERENCE.read_text(encoding="utf-8"))
    from_file = Config.model_validate(raw)
    defaults = Config()

    assert from_file.model_dump(exclude={"destinations"}) == defaults.model_dump(
        exclude={"destinations"}
    )
    example = DestinationConfig(name="pacs", ae_title="PACS", host="127.0.0.1", port=4242)
    assert from_file.destinations == [example]


def _schema_keys(model: type[pydantic.BaseModel], prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        keys.add(prefix + name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
            keys |= _schema_keys(annotation, f"{prefix}{name}.")
    return keys


def _file_keys(raw: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for name, value in raw.items():
        keys.add(prefix + name)
        if isinstance(value, dict) and name != "perfusion":
            keys |= _file_keys(value, f"{prefix}{name}.")
    return keys


def test_reference_file_lists_every_key_with_a_comment() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    raw = yaml.safe_load(text)

    assert _file_keys(raw) == _schema_keys(Config)
    destination_keys = set(raw["destinations"][0])
    assert destination_keys == _schema_keys(DestinationConfig)

    key_lines = [line for line in text.splitlines() if re.match(r"^\s*(- )?[a-z_]+:", line)]
    uncommented = [line for line in key_lines if "#" not in line]
    # Section headers carry their comment on the line above instead.
    assert all(line.rstrip().endswith(":") for line in uncommented), uncommented


# --- Loading -------------------------------------------------------------------------------


def test_empty_file_means_every_default(tmp_path: Path) -> None:
    for text in ("", "# only a comment\n", "node:\nstorage:\ndestinations:\nperfusion:\n"):
        config = load_config(write(tmp_path, text))
        assert config.node == Config().node
        assert config.destinations == []
        assert config.perfusion == {}
        assert config.storage.root == tmp_path / "var" / "ctp-node"


def test_relative_paths_are_relative_to_the_file_folder(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    path = write(folder, "storage: {root: spool}\ndatabase: {url: 'sqlite:///db/node.db'}\n")

    config = load_config(path)

    assert config.storage.root == folder / "spool"
    assert config.database.url == f"sqlite:///{folder}/db/node.db"


def test_absolute_paths_stay_absolute(tmp_path: Path) -> None:
    path = write(tmp_path, "storage: {root: /srv/ctp}\ndatabase: {url: 'sqlite:////srv/ctp.db'}\n")

    config = load_config(path)

    assert config.storage.root == Path("/srv/ctp")
    assert config.database.url == "sqlite:////srv/ctp.db"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///rel/x.db", "sqlite:////base/rel/x.db"),
        ("sqlite+pysqlite:///x.db?mode=ro", "sqlite+pysqlite:////base/x.db?mode=ro"),
        ("sqlite:////abs/x.db", "sqlite:////abs/x.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("sqlite://", "sqlite://"),
        ("postgresql+psycopg://ctp@db/ctp", "postgresql+psycopg://ctp@db/ctp"),
    ],
)
def test_resolve_sqlite_url(url: str, expected: str) -> None:
    assert resolve_sqlite_url(url, Path("/base")) == expected


def test_settings_are_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
node:
  ae_title: ' STROKE '
  allowed_callers: [{ae_title: CT1, host: 10.1.2.3}, {ae_title: CT2}]
destinations:
  - {name: pacs, ae_title: PACS, host: pacs.hospital.org, port: 104, send: [structured_report]}
  - {name: viewer, ae_title: VIEW, host: 10.0.0.9, port: 11112, calling_ae_title: CTP}
perfusion: {tmax_threshold_s: 6, venous_correction: false}
""",
    )

    config = load_config(path)

    assert config.node.ae_title == "STROKE"  # leading and trailing spaces are not significant
    assert [(c.ae_title, c.host) for c in config.node.allowed_callers] == [
        ("CT1", "10.1.2.3"),
        ("CT2", None),
    ]
    assert config.destination("pacs").output_kinds() == ("structured_report",)
    assert config.destination("viewer").calling_ae_title == "CTP"
    assert config.perfusion == {"tmax_threshold_s": 6, "venous_correction": False}


def test_default_config_path_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)
    monkeypatch.chdir(REFERENCE.parents[1])  # a checkout: its reference
    assert default_config_path() == Path("config/ctp-node.yaml")

    monkeypatch.setenv(CONFIG_ENV_VAR, str(tmp_path / "site.yaml"))
    assert default_config_path() == tmp_path / "site.yaml"

    monkeypatch.setenv(CONFIG_ENV_VAR, "")
    assert default_config_path() == Path("config/ctp-node.yaml")

    monkeypatch.chdir(tmp_path)  # elsewhere: the installed node's
    assert default_config_path() == Path("/etc/ctp-node/ctp-node.yaml")


# --- Errors --------------------------------------------------------------------------------


def test_every_error_is_reported_at_once_with_its_key_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
node:
  ae_title: THIS TITLE IS TOO LONG
  port: 70000
destinations:
  - {name: pacs, ae_title: PACS, host: 127.0.0.1, port: 0}
  - {name: pacs, ae_title: PACS2, host: 127.0.0.2, port: 104}
""",
    )

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    problems = {p.key_path: p.message for p in caught.value.problems}
    assert set(problems) == {
        "node.ae_title",
        "node.port",
        "destinations.0.port",
        "destinations.1.name",
    }
    assert "16 characters" in problems["node.ae_title"]
    assert "65535" in problems["node.port"] and "70000" in problems["node.port"]
    assert "'pacs'" in problems["destinations.1.name"]
    assert "unique" in problems["destinations.1.name"]

    report = str(caught.value).splitlines()
    assert str(path) in report[0] and "4 problems" in report[0]
    assert "  node.port: must be less than or equal to 65535; got 70000 (int)" in report


def test_duplicate_names_found_when_entries_are_valid(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "destinations:\n"
        "  - {name: a, ae_title: A, host: h1, port: 104}\n"
        "  - {name: b, ae_title: B, host: h2, port: 104}\n"
        "  - {name: a, ae_title: C, host: h3, port: 104}\n",
    )

    assert check_config(path) == [
        ConfigProblem(
            "destinations.2.name",
            "name 'a' is already used by destinations.0; names must be unique",
        )
    ]


def test_unknown_keys_are_refused_with_their_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
node: {ae_titel: X}
ingest: {series_stable_after: 5}
destinations: [{name: p, ae_title: P, host: h, port: 1, sned: [structured_report]}]
monitoring: {}
source_path: /elsewhere.yaml
""",
    )

    problems = problems_of(path)

    assert set(problems) == {
        "node.ae_titel",
        "ingest.series_stable_after",
        "destinations.0.sned",
        "monitoring",
        "source_path",
    }
    assert "unknown key" in problems["node.ae_titel"]
    assert "did you mean 'ae_title'" in problems["node.ae_titel"]
    assert "did you mean 'series_stable_after_s'" in problems["ingest.series_stable_after"]
    assert "did you mean 'send'" in problems["destinations.0.sned"]
    assert "allowed here: node, storage" in problems["monitoring"]


def test_values_are_checked(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
node: {bind: localhost, allowed_callers: [{ae_title: 'CT\\1'}], acse_timeout_s: 0}
storage: {min_free_bytes: -1}
database: {url: var/ctp-node.db}
ingest: {min_time_points: 2}
worker: {count: yes}
destinations: [{name: p, ae_title: P, host: 'no such host', port: 1, send: [maps]}]
send: {retry_backoff_s: 60, retry_backoff_max_s: 30}
report: {institution_name: no}
perfusion: {tmax_threshold_s: [6]}
""",
    )

    problems = problems_of(path)

    assert "IP address" in problems["node.bind"]
    assert "backslash" in problems["node.allowed_callers.0.ae_title"]
    assert "greater than 0" in problems["node.acse_timeout_s"]
    assert "greater than or equal to 0" in problems["storage.min_free_bytes"]
    assert "SQLAlchemy database URL" in problems["database.url"]
    assert "greater than or equal to 3" in problems["ingest.min_time_points"]
    assert "integer" in problems["worker.count"]  # YAML `yes` is not silently 1
    assert "host name" in problems["destinations.0.host"]
    assert "'structured_report'" in problems["destinations.0.send.0"]
    assert "at least retry_backoff_s" in problems["send.retry_backoff_max_s"]
    assert "quote the text" in problems["report.institution_name"]
    assert "number, true/false or text" in problems["perfusion.tmax_threshold_s"]
    assert len(problems) == 12


def test_missing_required_destination_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "destinations:\n  - name: pacs\n")

    problems = problems_of(path)

    assert problems == {
        "destinations.0.ae_title": "a destination of kind dimse needs ae_title",
        "destinations.0.host": "a destination of kind dimse needs host",
        "destinations.0.port": "a destination of kind dimse needs port",
    }


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "node:\n  port: 11112\n  ae_title: [CTPNODE\nstorage: {}\n")

    problems = problems_of(path)

    assert list(problems) == ["(file)"]
    assert re.search(r"YAML syntax error at line \d+, column \d+", problems["(file)"])


def test_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "node:\n  port: 104\n  port: 11112\n")

    problems = problems_of(path)

    assert "'port' is given twice (first on line 2)" in problems["(file)"]
    assert "line 3" in problems["(file)"]


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, "- node\n- storage\n"))

    assert "must be a mapping of sections" in problems["(file)"]


def test_a_section_must_be_a_mapping(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, "node: 11112\ndestinations: {name: pacs}\n"))

    assert problems == {
        "node": "must be a mapping of keys; got 11112 (int)",
        "destinations": "must be a list; got a mapping",
    }


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"

    problems = check_config(path)

    assert len(problems) == 1
    assert problems[0].key_path == "(file)"
    assert "no configuration file at" in problems[0].message
    assert str(path) in problems[0].message
    with pytest.raises(ConfigError):
        load_config(path)


def test_check_config_of_a_valid_file_is_empty() -> None:
    assert check_config(REFERENCE) == []


def test_config_is_immutable() -> None:
    config = Config()

    with pytest.raises(pydantic.ValidationError):
        config.node.port = 104  # type: ignore[misc]


def test_quality_section_matches_the_engine_limits() -> None:
    # Same names, units and defaults as the QC limits, so the service can pass them across.
    from dataclasses import asdict

    from ctp_node.qc import QualityLimits

    assert Config().quality.model_dump() == asdict(QualityLimits())


def test_quality_limits_are_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "quality: {motion_limit_mm: -1, ctdivol_alert_gy: 1}\n")

    problems = problems_of(path)

    assert set(problems) == {"quality.motion_limit_mm", "quality.ctdivol_alert_gy"}
    assert "did you mean 'ctdivol_alert_mgy'" in problems["quality.ctdivol_alert_gy"]
    # Once every value is valid, the ranges must be in order.
    assert problems_of(write(tmp_path, "quality: {kvp_min: 90, kvp_max: 70}\n")) == {
        "quality.kvp_max": "must be at least kvp_min (90.0); got 70.0"
    }


def test_retention_periods_refuse_zero_and_take_null_for_ever(tmp_path: Path) -> None:
    problems = problems_of(
        write(
            tmp_path,
            "storage:\n  retention:\n    spool_days: 0\n    results_days: -1\n"
            "    quarantine_max_bytes: 0\n    interval_s: 86401\n",
        )
    )

    assert set(problems) == {
        "storage.retention.spool_days",
        "storage.retention.results_days",
        "storage.retention.quarantine_max_bytes",
        "storage.retention.interval_s",
    }
    assert "use null to keep for ever" in problems["storage.retention.spool_days"]
    assert "0 is refused" in problems["storage.retention.spool_days"]
    assert "got 0" in problems["storage.retention.spool_days"]
    assert "use null for no size limit" in problems["storage.retention.quarantine_max_bytes"]
    assert "86400" in problems["storage.retention.interval_s"]

    config = load_config(
        write(
            tmp_path,
            "storage:\n  retention:\n    spool_days: 0.5\n    results_days: null\n"
            "    quarantine_max_bytes: null\n",
        )
    )
    retention = config.storage.retention
    assert (retention.spool_days, retention.results_days) == (0.5, None)
    assert retention.quarantine_max_bytes is None
    assert retention.quarantine_days == 30.0  # the default
    # A section with every key commented out means the defaults, as at the top level.
    assert load_config(write(tmp_path, "storage:\n  retention:\n")).storage.retention == (
        Config().storage.retention
    )


def test_an_engine_value_the_engine_refuses_is_a_configuration_problem(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("perfusion: {svd_threshold_min: -1}\n")
    result = subprocess.run(
        [sys.executable, "-m", "ctp_node", "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "perfusion.svd_threshold_min" in result.stdout and "must be positive" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_notification_channels_and_their_problems(tmp_path: Path) -> None:
    good = load_config(
        write(
            tmp_path,
            "notifications:\n"
            "  webhooks:\n"
            "    - {name: chat, url: 'https://chat.example/h', when: [notable_result, failure]}\n"
            "  email: {host: smtp.example, port: 465, security: ssl,\n"
            "          from: 'CTP node <ctp@hospital.example>', to: [a@hospital.example]}\n"
            "  large_core_ml: 50\n",
        )
    ).notifications
    assert good.webhooks[0].when == ["notable_result", "failure"]
    assert good.email.from_address == "CTP node <ctp@hospital.example>"
    assert good.email.when == ["result", "failure"] and good.large_core_ml == 50.0
    problems = problems_of(
        write(
            tmp_path,
            "notifications:\n"
            "  webhooks:\n"
            "    - {name: chat, url: 'ftp://x/h', when: []}\n"
            "    - {name: chat, url: 'http://x/h', when: [result, notable_result]}\n"
            "  email: {host: smtp.example, from: a@b.example, to: [a@b.example], on: [result]}\n",
        )
    )
    assert set(problems) == {
        "notifications.webhooks.0.url",
        "notifications.webhooks.0.when",
        "notifications.webhooks.1.when",
        "notifications.email.on",  # YAML 1.1 reads `on` as true: the key is `when`
    }, problems
    assert "the key is `when`" in problems["notifications.email.on"]
    bad_sender = "notifications:\n  email: {host: smtp.example, from: nobody, to: [a@b.example]}\n"
    assert (
        "must be an e-mail address"
        in problems_of(write(tmp_path, bad_sender))["notifications.email.from"]
    )
